"""Model weights: fp16 safetensors files that carry their own config, named by a model id.

A weight file alone rebuilds its model: the architecture's name (`rgbatch.architectures`;
Residual-GRU when absent, as in every file written before the registry) and its config, as
JSON, are stored in the file's metadata. The model id is a hash of the config and of every
stored tensor (and of the architecture's name, for any but Residual-GRU, so that the shipped
file keeps its id), so two files with the same id decode each other's codes; bitstreams and
manifests record it.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib.resources import files
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from .architectures import DEFAULT_ARCHITECTURE, build_model, get_architecture

FORMAT = "rgbatch-weights-1"
# The shipped model is package data (rgbatch/models/), so an installed wheel finds it without
# the repository; pip unpacks wheels, so it is a real file that safetensors can map.
DEFAULT_WEIGHTS = Path(str(files("rgbatch") / "models" / "default.safetensors"))
# the default files shipped before the current one, kept as <model id>.safetensors beside it so
# that archives and streams they coded still decode without naming them (shipped_weights)
EARLIER_MODELS = ("89626a567b299efc", "96b4d338f4b84447", "ef78a35a81cc7fa3", "9a50ea054365ccb0")
MODEL_ID_BYTES = 8


class WeightsError(ValueError):
    """A weight file that cannot be used, with the reason."""


def model_id(config, tensors: dict[str, torch.Tensor], architecture: str = DEFAULT_ARCHITECTURE) -> str:
    """Hex id of a model: sha256 of its config and tensors (names sorted), first 8 bytes."""
    h = hashlib.sha256(config.to_json().encode())
    if architecture != DEFAULT_ARCHITECTURE:
        h.update(architecture.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[: 2 * MODEL_ID_BYTES]


def stored_tensors(model: torch.nn.Module, extra: dict[str, torch.Tensor] | None = None):
    """The tensors as a weight file stores them: floats in fp16, `extra` (entropy model) as is."""
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    tensors.update({k: v.contiguous() for k, v in (extra or {}).items()})
    return tensors


def save_weights(path, model: torch.nn.Module, extra: dict[str, torch.Tensor] | None = None,
                 info: dict | None = None) -> str:
    """Write a weight file atomically; returns its model id."""
    path = Path(path)
    tensors = stored_tensors(model, extra)
    mid = model_id(model.cfg, tensors, model.architecture)
    metadata = {"format": FORMAT, "architecture": model.architecture, "config": model.cfg.to_json(), "model_id": mid,
                "info": json.dumps(info or {}, sort_keys=True)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    # safetensors creates the file readable by its owner only; give it the usual permissions
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp.replace(path)
    return mid


def trained_iterations(config, info: dict) -> int:
    """The deepest depth a model was trained to: beyond it, quality is not what training made.
    Encoders default to it (recorded by `rgbatch export`; the model's maximum if unknown)."""
    return min(int(info.get("iterations_trained") or config.max_iterations), config.max_iterations)


def read_weight_file(path=None) -> tuple[object, str, dict[str, torch.Tensor], dict]:
    """(config, model id, every stored tensor, info) from a checked weight file, without
    building the model (what needs only its extra tensors, such as the context tables)."""
    return _read(path)[1:]


def _read(path=None):
    """(architecture, config, model id, tensors, info) of a checked weight file."""
    path = Path(path or DEFAULT_WEIGHTS)
    if not path.is_file():
        raise WeightsError(f"no weight file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file: {e}") from None
    if metadata.get("format") != FORMAT:
        raise WeightsError(f"{path} is not an rgbatch weight file (format {metadata.get('format')!r})")
    architecture = metadata.get("architecture", DEFAULT_ARCHITECTURE)
    try:
        config = get_architecture(architecture).Config.from_json(metadata["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{path} holds no usable model config: {e}") from None
    mid = model_id(config, tensors, architecture)
    if metadata.get("model_id") not in (None, mid):
        raise WeightsError(f"{path} is damaged: its tensors hash to {mid}, not {metadata['model_id']}")
    return architecture, config, mid, tensors, json.loads(metadata.get("info", "{}"))


def shipped_weights(mid: str) -> Path | None:
    """The packaged file of an earlier default model (EARLIER_MODELS), or None."""
    return DEFAULT_WEIGHTS.with_name(f"{mid}.safetensors") if mid in EARLIER_MODELS else None


def load_weights(path=None) -> tuple[torch.nn.Module, str, dict[str, torch.Tensor], dict]:
    """(model in eval mode with fp32 weights, model id, extra tensors, info) from a weight file."""
    architecture, config, mid, tensors, info = _read(path)
    model = build_model(architecture, config)
    own = set(model.state_dict())
    try:
        model.load_state_dict({k: v.float() for k, v in tensors.items() if k in own})
    except RuntimeError as e:
        raise WeightsError(f"{path or DEFAULT_WEIGHTS} does not fit its own config: {e}") from None
    extra = {k: v for k, v in tensors.items() if k not in own}
    return model.eval(), mid, extra, info
