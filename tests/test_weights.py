import os

import numpy as np
import pytest
import torch

from rgbatch import weights
from rgbatch.model import CodecConfig, ResidualGRUCodec
from rgbatch.weights import (WeightsError, delta_tensors, load_weights, save_weights, undelta_tensors, weights_beside,
                             write_delta, xor_tensors)


def test_a_weight_file_rebuilds_its_model_and_names_it(tmp_path):
    torch.manual_seed(0)
    model = ResidualGRUCodec(CodecConfig(width=0.125, reconstruction="additive"))
    path = tmp_path / "m.safetensors"
    mid = save_weights(path, model, extra={"entropy.table": torch.arange(4, dtype=torch.int32)}, info={"steps": 7})
    loaded, loaded_id, extra, info = load_weights(path)
    assert loaded.cfg == model.cfg and loaded_id == mid and info == {"steps": 7}
    assert torch.equal(extra["entropy.table"], torch.arange(4, dtype=torch.int32))
    x = torch.rand(1, 3, 32, 32) - 0.5
    # fp16 storage: close to the fp32 original
    assert torch.allclose(loaded.eval().decode(model.eval().encode(x, 2)), model.decode(model.encode(x, 2)), atol=0.02)
    # loading leaves the caller's random numbers as they were (until session 61 the model's random start drew them)
    state = torch.random.get_rng_state()
    load_weights(path)
    assert torch.equal(torch.random.get_rng_state(), state)
    # the id changes with any tensor, entropy tables included
    other = save_weights(tmp_path / "o.safetensors", model, extra={"entropy.table": torch.arange(1, 5, dtype=torch.int32)})
    assert other != mid
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as any file the user writes (not owner-only)


def test_bad_weight_files(tmp_path):
    with pytest.raises(WeightsError, match="no weight file"):
        load_weights(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="not a readable"):
        load_weights(junk)


def _trained_on(model, seed, scale=1e-3):
    """`model` with its decoder's weights moved a little: a run trained on from it."""
    torch.manual_seed(seed)
    moved = ResidualGRUCodec(model.cfg)
    moved.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, p in moved.named_parameters():
            if name.startswith("decoder"):
                p.add_(scale * torch.randn_like(p))
    return moved


def test_a_delta_file_rebuilds_its_model_from_a_chain_of_bases_beside_it(tmp_path):
    # how the earlier defaults are packaged: each as its difference from the next, compressed
    torch.manual_seed(0)
    first = ResidualGRUCodec(CodecConfig(width=0.25))
    second = _trained_on(first, 1)
    third = _trained_on(second, 2)
    table = {"entropy.table": torch.arange(8, dtype=torch.int16)}
    ids = [save_weights(tmp_path / f"{i}.safetensors", m, extra=table, info={"n": i})
           for i, m in enumerate((first, second, third))]
    (tmp_path / "2.safetensors").rename(tmp_path / "default.safetensors")  # the shipped file, by its id
    assert write_delta(tmp_path / "1.safetensors", tmp_path / "default.safetensors",
                       tmp_path / f"{ids[1]}.delta")[0] == ids[1]
    assert write_delta(tmp_path / "0.safetensors", tmp_path / f"{ids[1]}.delta", tmp_path / f"{ids[0]}.delta")[0] == ids[0]
    for i, m in ((0, first), (1, second)):
        plain = tmp_path / f"{i}.safetensors"
        delta = tmp_path / f"{ids[i]}.delta"
        assert delta.stat().st_size < plain.stat().st_size / 2  # the encoders are the same: zeros
        plain.unlink()
        loaded, mid, extra, info = load_weights(delta)
        assert mid == ids[i] and info == {"n": i} and torch.equal(extra["entropy.table"], table["entropy.table"])
        assert all(torch.equal(a, b.half().float()) for a, b in zip(loaded.state_dict().values(),
                                                                     m.state_dict().values()))
        assert weights_beside(delta, ids[i]) == delta
    assert weights_beside(tmp_path / "x", ids[2]) == tmp_path / "default.safetensors"
    assert weights_beside(tmp_path / "x", "0123456789abcdef") is None
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_delta_gives_back_every_16_bit_float_pattern(dtype):
    # every pattern (both zeros, subnormals, infinities, NaNs) against a shuffled base, and other dtypes XORed
    every = torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    base = {"w": every[torch.randperm(2**16, generator=torch.Generator().manual_seed(0))],
            "table": torch.arange(6, dtype=torch.int32), "bias": torch.ones(3)}
    tensors = {"w": every, "table": torch.arange(6, dtype=torch.int32) * 5, "bias": torch.zeros(3), "new": every[:4]}
    stored, kinds = delta_tensors(tensors, base)
    assert kinds == {"sub": ["w"], "xor": ["bias", "table"]}
    assert stored["w"].dtype == torch.uint8 and stored["w"].shape == (2, 2**16)
    back = undelta_tensors(stored, base, kinds, "x")
    assert back.keys() == tensors.keys()
    assert all(torch.equal(back[k].view(torch.uint8), tensors[k].view(torch.uint8)) for k in tensors)
    # a step of one float either way is a small number (zigzag: up 2, down 1), -0 to +0 a step too
    one = torch.tensor([1.0, 1.0], dtype=dtype)
    moved = torch.cat([one.nextafter(torch.tensor([2.0, 0.0], dtype=dtype)), torch.tensor([0.0, -0.0], dtype=dtype)])
    step = delta_tensors({"w": moved}, {"w": torch.tensor([1.0, 1.0, -0.0, 0.0], dtype=dtype)})[0]["w"]
    assert step[0].tolist() == [0, 0, 0, 0] and step[1].tolist() == [2, 1, 2, 1]
    with pytest.raises(WeightsError, match="does not fit its base model: tensor w"):
        undelta_tensors({**stored, "w": stored["w"][:, 1:]}, base, kinds, "x")


def test_a_delta_file_of_sessions_24_to_42_still_reads(tmp_path):
    # those stored every tensor as its XOR against the base (metadata delta_xor alone)
    import json
    import lzma

    from safetensors.torch import load_file, save

    torch.manual_seed(0)
    model = ResidualGRUCodec(CodecConfig(width=0.125))
    save_weights(tmp_path / "default.safetensors", model)
    moved = tmp_path / "m.safetensors"
    mid = save_weights(moved, _trained_on(model, 1), info={"n": 1})
    base = load_file(str(tmp_path / "default.safetensors"))
    stored, names = xor_tensors(load_file(str(moved)), base)
    metadata = {"format": weights.FORMAT, "config": model.cfg.to_json(), "model_id": mid,
                "info": json.dumps({"n": 1}), "delta_base": load_weights(tmp_path / "default.safetensors")[1],
                "delta_xor": json.dumps(names)}
    old = tmp_path / f"{mid}.delta"
    old.write_bytes(lzma.compress(save(stored, metadata=metadata)))
    assert load_weights(old)[1] == mid
    new = tmp_path / "new" / f"{mid}.delta"
    new.parent.mkdir()
    (new.parent / "default.safetensors").write_bytes((tmp_path / "default.safetensors").read_bytes())
    write_delta(moved, tmp_path / "default.safetensors", new)
    assert load_weights(new)[1] == mid and new.stat().st_size < old.stat().st_size


def test_bad_delta_files_are_worded_errors(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = ResidualGRUCodec(CodecConfig(width=0.125))
    save_weights(tmp_path / "base.safetensors", model)
    base_id = save_weights(tmp_path / "default.safetensors", model)
    mid = save_weights(tmp_path / "m.safetensors", _trained_on(model, 1))
    delta = tmp_path / f"{mid}.delta"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(WeightsError, match=f"base model {base_id} must lie in"):
        write_delta(tmp_path / "m.safetensors", tmp_path / "base.safetensors", elsewhere / "m.delta")
    write_delta(tmp_path / "m.safetensors", tmp_path / "base.safetensors", delta)
    moved = elsewhere / delta.name  # without its base beside it
    moved.write_bytes(delta.read_bytes())
    with pytest.raises(WeightsError, match=f"base model {base_id} is not beside it"):
        load_weights(moved)
    save_weights(tmp_path / "default.safetensors", _trained_on(model, 2))  # the default is another model now
    with pytest.raises(WeightsError, match=f"base model {base_id} is not beside it"):
        load_weights(delta)
    save_weights(tmp_path / "default.safetensors", model)
    assert load_weights(delta)[1] == mid
    monkeypatch.setattr(weights, "MAX_XZ_BYTES", 1000)  # what decompression may take is bounded
    with pytest.raises(WeightsError, match="decompresses to more than 1000 bytes"):
        load_weights(delta)
    monkeypatch.undo()
    damaged = bytearray(delta.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    delta.write_bytes(bytes(damaged))  # xz's own check finds it
    with pytest.raises(WeightsError, match="not a readable"):
        load_weights(delta)


def test_the_delta_command_writes_one_and_words_its_errors(tmp_path):
    from typer.testing import CliRunner

    from rgbatch.cli import app

    torch.manual_seed(0)
    model = ResidualGRUCodec(CodecConfig(width=0.125))
    save_weights(tmp_path / "default.safetensors", model)
    mid = save_weights(tmp_path / "m.safetensors", _trained_on(model, 1))
    done = CliRunner().invoke(app, ["delta", str(tmp_path / "m.safetensors"), "--base",
                                    str(tmp_path / "default.safetensors"), "--out", str(tmp_path / f"{mid}.delta")])
    assert done.exit_code == 0 and f"model {mid}" in done.output, done.output
    assert load_weights(tmp_path / f"{mid}.delta")[1] == mid
    (tmp_path / "other").mkdir()
    refused = CliRunner().invoke(app, ["delta", str(tmp_path / "m.safetensors"), "--base", str(tmp_path / "m.safetensors"),
                                       "--out", str(tmp_path / "other" / "x.delta")])
    assert refused.exit_code == 2 and "must lie in" in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "other" / "x.delta").exists()


def test_a_delta_is_never_written_over_its_base_nor_over_a_file_without_overwrite(tmp_path):
    """`delta --out` naming its base replaced it with a delta on itself, exit 0: the model lost
    (session 60, a helper's finding); an existing file was replaced without a word."""
    from typer.testing import CliRunner

    from rgbatch.cli import app

    torch.manual_seed(0)
    model = ResidualGRUCodec(CodecConfig(width=0.125))
    base_mid = save_weights(tmp_path / "default.safetensors", model)
    mid = save_weights(tmp_path / "m.safetensors", _trained_on(model, 1))
    before = (tmp_path / "default.safetensors").read_bytes()

    def delta(out, *extra):
        return CliRunner().invoke(app, ["delta", str(tmp_path / "m.safetensors"), "--base",
                                        str(tmp_path / "default.safetensors"), "--out", str(out), *extra])

    for extra in ((), ("--overwrite",)):
        refused = delta(tmp_path / "default.safetensors", *extra)
        assert refused.exit_code == 2 and "Traceback" not in refused.output, refused.output
        assert (tmp_path / "default.safetensors").read_bytes() == before
    assert "destroy its base" in " ".join(delta(tmp_path / "default.safetensors", "--overwrite").output.split())
    assert delta(tmp_path / f"{mid}.delta").exit_code == 0
    again = delta(tmp_path / f"{mid}.delta")
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert delta(tmp_path / f"{mid}.delta", "--overwrite").exit_code == 0
    (tmp_path / "junk.delta").write_bytes(b"garbage")  # a file no weight file: what --overwrite is for
    assert delta(tmp_path / "junk.delta", "--overwrite").exit_code == 0
    assert load_weights(tmp_path / "junk.delta")[1] == mid
    # a file another delta beside it is stored against (T.delta on M.delta): replacing it would orphan that delta
    third = save_weights(tmp_path / "third.safetensors", _trained_on(model, 2))
    done = CliRunner().invoke(app, ["delta", str(tmp_path / "third.safetensors"), "--base", str(tmp_path / f"{mid}.delta"),
                                    "--out", str(tmp_path / f"{third}.delta")])
    assert done.exit_code == 0, done.output
    save_weights(tmp_path / "fourth.safetensors", _trained_on(model, 3))
    leaning = CliRunner().invoke(app, ["delta", str(tmp_path / "fourth.safetensors"), "--base",
                                       str(tmp_path / "default.safetensors"), "--out", str(tmp_path / f"{mid}.delta"),
                                       "--overwrite"])
    assert leaning.exit_code == 2 and f"{third}.delta" in leaning.output, leaning.output
    assert load_weights(tmp_path / f"{third}.delta")[1] == third and load_weights(tmp_path / f"{mid}.delta")[1] == mid
    assert base_mid != mid


@pytest.mark.parametrize("header", [b"[1, 2]", b'{"__metadata__": [1, 2]}',
                                    b'{"__metadata__": {"format": "x", "delta_sub": "5"}}', b'{"__metadata__": {"a": 1}}'])
def test_a_delta_file_of_a_malformed_header_is_refused_in_words(tmp_path, header):
    """Each gave a traceback (AttributeError, TypeError) in every command reading weights (session 60)."""
    import lzma

    path = tmp_path / "x.delta"
    path.write_bytes(lzma.compress(len(header).to_bytes(8, "little") + header))
    with pytest.raises(WeightsError, match="not a readable"):
        load_weights(path)


def test_a_refusal_says_where_the_model_of_a_stream_is(tmp_path):
    """An early default's archives were refused with "decode it with the weights that made it",
    no word of where they are; `decode` named library calls (session 60)."""
    import zlib

    from typer.testing import CliRunner

    from rgbatch import bitstream
    from rgbatch.cli import app
    from rgbatch.codec import Codec
    from rgbatch.weights import EARLIER_MODELS, UNPACKAGED_MODELS, where_model_is

    assert "leave out --weights" in where_model_is(EARLIER_MODELS[0], named=True)
    assert where_model_is("0123456789abcdef", named=False) == "decode it with the weights that made it (--weights)"
    assert not set(UNPACKAGED_MODELS) & set(EARLIER_MODELS)
    blob = bytearray(Codec.load().encode(np.zeros((16, 16, 3), np.uint8), 1, measure=False).blob)
    blob[8:16] = bytes.fromhex("2059edebe5c08983")  # the first shipped default's id, its checksum made again
    size = bitstream.header_size(1)
    blob[size - 4:size] = zlib.crc32(bytes(blob[:size - 4])).to_bytes(4, "little")
    (tmp_path / "old.rgb").write_bytes(bytes(blob))
    done = CliRunner().invoke(app, ["decode", str(tmp_path / "old.rgb"), "--out", str(tmp_path / "old.png")])
    said = " ".join(done.output.split())
    assert done.exit_code == 1 and "git show 2fd9647:weights/default.safetensors > 2059edebe5c08983.safetensors" in said
    assert "Codec.for_model" not in said and not (tmp_path / "old.png").exists()
