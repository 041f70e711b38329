"""The architecture registry: a second architecture trains, ships and decodes through the
same pipeline code as the Residual-GRU, with nothing but its registration."""

from dataclasses import asdict, dataclass

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from rgbatch.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE, build_model, get_architecture, register_architecture
from rgbatch.codec import Codec
from rgbatch.config import JsonConfig
from rgbatch.model import ResidualGRUCodec
from rgbatch.options import OptionError
from rgbatch.train import TrainConfig, export_weights, train
from rgbatch.weights import load_weights, model_id, read_weight_file, stored_tensors

from conftest import DATA, smooth_image


@dataclass(frozen=True)
class ToyConfig(JsonConfig):
    bits: int = 4
    max_iterations: int = 3
    block: int = 8
    align: int = 8


class ToyCodec(nn.Module):
    """One strided convolution each way, residual coding with signs: a codec in 30 lines."""

    architecture = "toy"
    Config = ToyConfig

    def __init__(self, cfg: ToyConfig = ToyConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = nn.Conv2d(3, cfg.bits, cfg.block, cfg.block)
        self.decoder = nn.ConvTranspose2d(cfg.bits, 3, cfg.block, cfg.block)
        self.net_dtype = torch.float32

    def set_precision(self, dtype):
        self.net_dtype = dtype
        return self.to(dtype)

    def gain(self, t):
        return 1.0

    def _iterations(self, x, iterations):
        x_hat = torch.zeros_like(x)
        for _ in range(iterations):
            soft = torch.tanh(self.encoder((x - x_hat).to(self.net_dtype)))
            bits = soft + (torch.where(soft >= 0, 1.0, -1.0).to(soft.dtype) - soft).detach()
            x_hat = x_hat + self.decoder(bits).float()
            yield bits, x_hat

    def forward(self, x, iterations=None, stop=None, with_codes=False):
        codes, x_hats = zip(*self._iterations(x, iterations or self.cfg.max_iterations))
        return (torch.stack(x_hats), torch.stack(codes)) if with_codes else torch.stack(x_hats)

    def iterate(self, x, iterations, search_steps=0, search_loss=None):
        return self._iterations(x, iterations)

    def decode(self, codes):
        x_hat = sum(self.decoder(c.to(self.net_dtype)).float() for c in codes)
        return x_hat.clamp(-0.5, 0.5)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, ToyCodec.architecture, ToyCodec)
    return ToyCodec


def test_a_second_architecture_trains_ships_and_decodes_without_touching_the_pipeline(toy, tmp_path, rng):
    cfg = TrainConfig(data_dir=str(DATA), out=str(tmp_path / "toy.pt"), steps=2, batch_size=2, iterations=2,
                      checkpoint_every=1, warmup=1, architecture="toy", codec=asdict(ToyConfig()))
    state = train(cfg, log=lambda *_: None)
    assert state["train_config"]["architecture"] == "toy"
    train(TrainConfig(**{**vars(cfg), "steps": 3}), resume=True, log=lambda *_: None)  # resumes as a toy
    with pytest.raises(OptionError, match="binarize sign needs a Residual-GRU binarizer, which 'toy' has not"):
        train(TrainConfig(**{**vars(cfg), "steps": 4, "binarize": "sign"}), resume=True, log=lambda *_: None)
    mid = export_weights(tmp_path / "toy.pt", tmp_path / "toy.safetensors")
    with safe_open(str(tmp_path / "toy.safetensors"), framework="pt") as f:
        assert f.metadata()["architecture"] == "toy"
    model, loaded_id, _, _ = load_weights(tmp_path / "toy.safetensors")
    assert isinstance(model, ToyCodec) and loaded_id == mid
    # the architecture's name is part of the id: the same tensors as another architecture are another model
    assert mid != model_id(model.cfg, stored_tensors(model))

    codec = Codec.load(tmp_path / "toy.safetensors", device="cpu", tile_size=32, precision="fp32")
    image = smooth_image(rng, 20, 45)  # tiles of 32 px, padded to multiples of the toy's 8
    encoded = codec.encode(image, iterations=3, keep_reconstructions=True)
    assert [t.shape for t in codec.read_codes(encoded.blob).tiles] == [(3, 4, 3, 4), (3, 4, 3, 2)]  # 4 bits per 8x8
    for depth in (1, 3):
        assert np.array_equal(codec.decode(encoded.blob, depth), encoded.reconstructions[depth - 1])


def test_weight_files_without_an_architecture_are_residual_gru(default_weights, tmp_path):
    # files written before the registry (the shipped one until session 14) name no architecture
    with safe_open(str(default_weights), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        metadata = {key: value for key, value in f.metadata().items() if key != "architecture"}
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=metadata)
    config, _, _, _ = read_weight_file(old)
    assert get_architecture(None) is ResidualGRUCodec and DEFAULT_ARCHITECTURE == "residual-gru"
    assert isinstance(build_model(None, config), ResidualGRUCodec)


def test_unknown_and_taken_architecture_names_are_refused(toy):
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        get_architecture("nope")

    class Impostor(ToyCodec):
        pass

    with pytest.raises(ValueError, match="taken by ToyCodec"):
        register_architecture(Impostor)
