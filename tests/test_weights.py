import os

import pytest
import torch

from rgbatch.model import CodecConfig, ResidualGRUCodec
from rgbatch.weights import WeightsError, load_weights, save_weights


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
