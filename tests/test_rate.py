import numpy as np
import pytest
import torch

from rgbatch.context import CONTEXT_PROBABILITIES, Canvas, context_index
from rgbatch.entropy import ContextCoder
from rgbatch.model import CodecConfig, ResidualGRUCodec
from rgbatch.rate import ContextRate
from rgbatch.train import TrainConfig, rate_prices, train
from rgbatch.weights import save_weights

from conftest import DATA
from test_entropy import hand_made_model, sticky_codes

ITERATIONS, BITS = 5, 4


@pytest.fixture
def tables():
    return hand_made_model(BITS, ITERATIONS)


@pytest.fixture
def tile(rng):
    """One tile of bool codes (T, bits, rows, cols) whose bits mostly repeat."""
    return sticky_codes(rng, ITERATIONS, [(BITS, 7, 9)])[0]


def as_codes(tile: np.ndarray) -> torch.Tensor:
    """The model's layout: +-1, (T, N=1, bits, rows, cols)."""
    return torch.from_numpy(tile).float()[:, None] * 2 - 1


def test_contexts_are_the_coders_own(tables, tile):
    rate = ContextRate.from_state_dict(ContextRate(*tables.values()).state_dict())
    index = rate._table_index(torch.from_numpy(tile).float()[:, None])  # (T, bits, rows, cols, 1)
    coder = ContextCoder(tables)
    layout = Canvas((tile.shape[1:],))
    canvas = layout.paint([tile])
    k = rate.features.shape[3]
    for t in range(ITERATIONS):
        for s, positions in enumerate(layout.positions):
            rows, cols = positions // layout.width - 1, positions % layout.width - 1
            for c in range(BITS):
                expected = context_index(canvas, layout.width, t, coder.features[t, s, c], positions)
                found = index[t, c, rows, cols, 0] - ((t * 2 + s) * BITS + c) * 2 ** k
                np.testing.assert_array_equal(found.numpy(), expected)


def test_code_length_is_what_the_coder_writes(tables, rng):
    # probabilities the rate term does not clip (it stops at 2**-10, the coder at 2**-15)
    tables = {**tables, CONTEXT_PROBABILITIES: tables[CONTEXT_PROBABILITIES].clamp(32, 2 ** 15 - 32)}
    tile = sticky_codes(rng, ITERATIONS, [(BITS, 40, 40)])[0]
    estimate = ContextRate(*tables.values())(as_codes(tile)).sum().item() * tile[0].size
    written = 8 * sum(len(chunk) for chunk in ContextCoder(tables).encode([tile]))
    # the range coder adds up to a 32-bit word per iteration
    assert estimate <= written <= estimate * 1.01 + 32 * ITERATIONS


def test_gradient_moves_each_bit_towards_its_prediction(tables, tile):
    rate = ContextRate(*tables.values())
    codes = as_codes(tile).requires_grad_()
    rate(codes).sum().backward()
    index = rate._table_index(torch.from_numpy(tile).float()[:, None]).permute(0, 4, 1, 2, 3)
    likely_one = rate.probabilities.flatten()[index] > 0.5
    # lowering the loss means raising a bit predicted 1 and lowering one predicted 0
    assert (codes.grad[likely_one] < 0).all() and (codes.grad[~likely_one] > 0).all()


def test_counting_moves_the_probabilities_to_the_codes(tables, tile):
    rate = ContextRate(*tables.values(), decay=0.9)
    ones = torch.ones_like(as_codes(tile))
    before = rate(ones).mean().item()
    for _ in range(30):
        rate.update(ones)
    assert rate(ones).mean().item() < min(before, 0.05)
    restored = ContextRate.from_state_dict(rate.state_dict())  # float32 counts on disk
    assert torch.allclose(restored.probabilities, rate.probabilities, rtol=0, atol=1e-6)


def test_too_many_iterations_are_refused(tables):
    with pytest.raises(ValueError, match="cover 5 iterations of 4 bits"):
        ContextRate(*tables.values())(torch.ones(ITERATIONS + 1, 1, BITS, 2, 2))


def test_prices_sum_the_slopes_of_every_depth_a_bit_belongs_to():
    losses = torch.tensor([0.4, 0.2, 0.1, 0.06])
    slopes = torch.tensor([0.2, 0.15, 0.07, 0.04])  # central differences, one-sided at the ends
    torch.testing.assert_close(rate_prices(losses), slopes.flip(0).cumsum(0).flip(0))
    assert rate_prices(torch.tensor([0.3])).tolist() == [0.0]


def test_training_with_the_rate_term_records_it_and_resumes_exactly(tmp_path):
    cfg = CodecConfig(width=0.125, max_iterations=4)
    tables = tmp_path / "tables.safetensors"
    save_weights(tables, ResidualGRUCodec(cfg), extra=hand_made_model(cfg.bits, cfg.max_iterations))

    def config(out, steps):
        return TrainConfig(data_dir=str(DATA), out=str(out), steps=steps, batch_size=2, iterations=3,
                           checkpoint_every=1, warmup=1, codec=dict(width=0.125, max_iterations=4),
                           rate_weight=1.0, rate_tables=str(tables))

    straight = train(config(tmp_path / "a.pt", 2), log=lambda *_: None)
    assert [len(h["bits_per_bit"]) for h in straight["history"]] == [3, 3]
    assert straight["rate"]["seen"].sum() > 0
    train(config(tmp_path / "b.pt", 1), log=lambda *_: None)
    resumed = train(config(tmp_path / "b.pt", 2), resume=True, log=lambda *_: None)
    assert torch.equal(resumed["rate"]["ones"], straight["rate"]["ones"])
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    plain = train(TrainConfig(**{**vars(config(tmp_path / "c.pt", 1)), "rate_weight": 0.0}), log=lambda *_: None)
    assert plain["rate"] is None and "bits_per_bit" not in plain["history"][0]
    assert all(0 < b <= 10 for h in straight["history"] for b in h["bits_per_bit"])  # clipped at 2**-10


def test_counting_in_the_same_call_equals_measuring_then_updating(tables, tile):
    codes = as_codes(tile)
    apart, together = ContextRate(*tables.values()), ContextRate(*tables.values())
    expected = apart(codes)
    apart.update(codes)
    torch.testing.assert_close(together(codes, count=True), expected, rtol=0, atol=0)
    assert torch.equal(together.ones, apart.ones) and torch.equal(together.seen, apart.seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a lent machine)")
def test_a_gpu_rate_term_equals_the_cpu_one(tables, tile):
    """Training on a GPU keeps the tables and counts there (`ContextRate.to`)."""
    on_cpu, on_gpu = ContextRate(*tables.values()), ContextRate(*tables.values()).to("cuda")
    codes = as_codes(tile)
    expected = on_cpu(codes, count=True)
    found = on_gpu(codes.cuda(), count=True)
    assert found.device.type == "cuda"
    torch.testing.assert_close(found.cpu(), expected)
    torch.testing.assert_close(on_gpu.probabilities.cpu(), on_cpu.probabilities)


def test_tables_are_read_without_building_a_model(tmp_path, tables):
    path = tmp_path / "tables.safetensors"
    save_weights(path, ResidualGRUCodec(CodecConfig(width=0.125, max_iterations=ITERATIONS, bits=BITS)), extra=tables)
    torch.manual_seed(0)
    rate = ContextRate.from_weights(path)
    # a run with the rate term draws the same batches and bits as one without
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())
    torch.testing.assert_close(rate.initial, ContextRate(*tables.values()).initial)
    with pytest.raises(ValueError, match="no context model"):
        save_weights(tmp_path / "bare.safetensors", ResidualGRUCodec(CodecConfig(width=0.125)))
        ContextRate.from_weights(tmp_path / "bare.safetensors")
