"""Model weights: fp16 safetensors files that carry their own config, named by a model id.

A weight file alone rebuilds its model: the architecture's name (`rgbatch.architectures`;
Residual-GRU when absent, as in every file written before the registry) and its config, as
JSON, are stored in the file's metadata. The model id is a hash of the config and of every
stored tensor (and of the architecture's name, for any but Residual-GRU, so that the shipped
file keeps its id), so two files with the same id decode each other's codes; bitstreams and
manifests record it.

A *delta file* (`<model id>.delta`, how earlier defaults are packaged since session 24) stores a
weight file against a base model, as a safetensors file compressed with xz: each tensor the base
has in the same name, shape and dtype is stored as its difference from the base's
(`delta_tensors`; a tensor left as it was is all zeros), the others as they are. A 16-bit float
tensor is stored as the difference of the two in float order (the 16-bit patterns mapped to
integers that sort as the floats do, subtracted modulo 2^16, zigzagged so that a small step
either way is a small number, and split into a plane of high bytes and one of low bytes: since
session 43); any other tensor as the bitwise XOR of the two (sessions 24-42 stored every tensor
so; such files still read). The metadata names the base's model id (`delta_base`) and the
tensors stored each way (`delta_sub`, `delta_xor`). The base is found beside the delta
(`<id>.delta`, `<id>.safetensors`, or `default.safetensors` when it has that id), so a chain of
deltas ends at the shipped file; reading checks the rebuilt tensors against the model id as for
any file. A model trained a little further than its base differs by a few steps of float in each
weight: session 39's 11.7 MB file is 2.4 MB as a delta against session 42's (2.8 MB as XOR).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save
from safetensors import safe_open

from .architectures import DEFAULT_ARCHITECTURE, build_model, get_architecture
from .storage import NewFile, NotWritten

FORMAT = "rgbatch-weights-1"
# The shipped model is package data (rgbatch/models/), so an installed wheel finds it without
# the repository; pip unpacks wheels, so it is a real file that safetensors can map.
DEFAULT_WEIGHTS = Path(str(files("rgbatch") / "models" / "default.safetensors"))
# the default files shipped before the current one, kept beside it as <model id>.delta (each against
# its successor) so that archives and streams they coded still decode without naming them (shipped_weights)
EARLIER_MODELS = ("89626a567b299efc", "96b4d338f4b84447", "ef78a35a81cc7fa3", "9a50ea054365ccb0",
                  "eda0b20c4529a293", "023aa50247198e29", "3463638676cb6169", "3262af5edaeb715a",
                  "d5d2f6edcbb8a36e", "07675362c6391602")  # the last: session 14's first hours, packaged in session 60
# The defaults of sessions 1-13 before 89626a567b299efc, not packaged (as deltas 25 MB, room that the
# repository's copy to a lent GPU needs for training crops): where rgbatch's repository keeps each
# (a commit and the file's path there), which a refusal of their archives and streams names
UNPACKAGED_MODELS = {
    "2059edebe5c08983": ("2fd9647", "weights/default.safetensors"),
    "bcafeac153069e2f": ("9a8bfc6", "weights/default.safetensors"),
    "530b142be04b8c5e": ("c198998", "weights/default.safetensors"),
    "5bae00047c005858": ("9e56f8c", "weights/default.safetensors"),
    "87901b1867236fd0": ("4666a08", "weights/default.safetensors"),
    "1dfa5b155c426dc9": ("907466d", "weights/default.safetensors"),
    "ceec502bf4de4dfe": ("2481dea", "weights/default.safetensors"),
    "448a0bd08000893c": ("a20a33b", "weights/default.safetensors"),
}
MODEL_ID_BYTES = 8
XZ_MAGIC = b"\xfd7zXZ\x00"  # how an xz stream (a delta file, a compressed training state) begins
MAX_XZ_BYTES = 2**30  # what one may decompress to: a width-1.0 model is 40 MB; a forged file stops here
FLOAT16 = (torch.float16, torch.bfloat16)  # stored as differences in float order by a delta
MAX_DELTA_CHAIN = 32  # deltas read through before a base is called missing (a cycle stops there too)


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
    with NewFile.replacing(path) as f:  # no name until whole
        f.write(save(tensors, metadata=metadata))
    return mid


def trained_iterations(config, info: dict) -> int:
    """The deepest depth a model was trained to: beyond it, quality is not what training made.
    Encoders default to it (recorded by `rgbatch export`; the model's maximum if unknown)."""
    return min(int(info.get("iterations_trained") or config.max_iterations), config.max_iterations)


def read_weight_file(path=None) -> tuple[object, str, dict[str, torch.Tensor], dict]:
    """(config, model id, every stored tensor, info) from a checked weight file, without
    building the model (what needs only its extra tensors, such as the context tables)."""
    return _read(path)[1:]


def _read(path=None, chain: int = 0):
    """(architecture, config, model id, tensors, info) of a checked weight file or delta file."""
    path = Path(path or DEFAULT_WEIGHTS)
    if not path.is_file():
        raise WeightsError(f"no weight file at {path}")
    try:
        blob = xz_file_bytes(path)
        if blob is not None:
            metadata, tensors = _read_delta(path, blob, chain)
        else:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            tensors = load_file(str(path))
    except WeightsError:
        raise
    except (SafetensorError, OSError, ValueError, lzma.LZMAError) as e:
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
    try:
        info = json.loads(metadata.get("info", "{}"))
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise WeightsError(f"{path} is damaged: its info is not a JSON object")
    return architecture, config, mid, tensors, info


def shipped_weights(mid: str) -> Path | None:
    """The packaged file of an earlier default model (EARLIER_MODELS), or None."""
    return weights_beside(DEFAULT_WEIGHTS, mid) if mid in EARLIER_MODELS else None


def where_model_is(mid: str, named: bool) -> str:
    """What a refusal of a stream or row of model `mid` tells the user to do (`named`: weights
    were named with --weights, which turns the packaged models' lookup off)."""
    if mid in EARLIER_MODELS:
        return (f"model {mid} is packaged with rgbatch: " + ("leave out --weights, and it is found" if named else
                f"its file is {DEFAULT_WEIGHTS.parent / (mid + '.delta')}"))
    if mid in UNPACKAGED_MODELS:
        commit, path = UNPACKAGED_MODELS[mid]
        return (f"model {mid}, an early default (sessions 1-13), is not packaged; rgbatch's repository keeps it: "
                f"`git show {commit}:{path} > {mid}.safetensors`, then --weights {mid}.safetensors")
    return "decode it with the weights that made it (--weights)"


def weights_beside(path, mid: str) -> Path | None:
    """The weight or delta file of model `mid` in the folder of `path`: `<mid>.delta`,
    `<mid>.safetensors`, or `default.safetensors` when that is model `mid`; None if none is (or
    if `mid` is no model id: a forged file's name never makes a path)."""
    if not (isinstance(mid, str) and re.fullmatch(f"[0-9a-f]{{{2 * MODEL_ID_BYTES}}}", mid)):
        return None
    folder = Path(path).parent
    for name in (f"{mid}.delta", f"{mid}.safetensors"):
        if (folder / name).is_file():
            return folder / name
    default = folder / DEFAULT_WEIGHTS.name
    try:
        with safe_open(str(default), framework="pt") as f:
            return default if (f.metadata() or {}).get("model_id") == mid else None
    except (SafetensorError, OSError, ValueError):
        return None


def xor_tensors(tensors: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """`tensors` with each one `base` has in the same name, shape and dtype replaced by the
    bitwise XOR of the two (its own inverse: `xor_tensors(stored, base)` with those names gives
    them back), and the names so replaced."""
    names = sorted(k for k, v in tensors.items() if _same_kind(v, base.get(k)))
    out = dict(tensors)
    for k in names:
        a, b = tensors[k].contiguous(), base[k].contiguous()
        out[k] = (a.view(-1).view(torch.uint8) ^ b.view(-1).view(torch.uint8)).view(a.dtype).view(a.shape)
    return out, names


def _same_kind(tensor: torch.Tensor, base: torch.Tensor | None) -> bool:
    return base is not None and base.shape == tensor.shape and base.dtype == tensor.dtype and tensor.numel() > 0


def _float_order(bits: np.ndarray) -> np.ndarray:
    """16-bit float patterns (uint16) as integers 0..65535 in the floats' order: the negatives
    below 0x8000, the positives from it (a bijection: -0 and +0 stay apart)."""
    return bits ^ ((bits >> 15) * np.uint16(0x7FFF) | np.uint16(0x8000))


def _float_order_inverse(order: np.ndarray) -> np.ndarray:
    return order ^ (np.uint16(0xFFFF) ^ (order >> 15) * np.uint16(0x7FFF))


def _bits16(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().view(-1).view(torch.int16).numpy().view(np.uint16)


def delta_tensors(tensors: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """`tensors` stored against `base` (the module's docstring): each 16-bit float tensor the base
    has in the same name, shape and dtype as a uint8 tensor of shape (2, n), its zigzagged
    difference in float order in two byte planes; each other such tensor XORed. Returns the
    stored tensors and {"sub": names, "xor": names}, which `undelta_tensors` takes back."""
    sub = sorted(k for k, v in tensors.items() if v.dtype in FLOAT16 and _same_kind(v, base.get(k)))
    out, xor = xor_tensors({k: v for k, v in tensors.items() if k not in sub}, base)
    for k in sub:  # uint16 arithmetic wraps modulo 2^16
        d = _float_order(_bits16(tensors[k])) - _float_order(_bits16(base[k]))
        zigzag = (d << 1) ^ -(d >> 15)  # a step of -1 -> 1, +1 -> 2, ...
        out[k] = torch.from_numpy(np.stack([zigzag >> 8, zigzag & 0xFF]).astype(np.uint8))
    return out, {"sub": sub, "xor": xor}


def undelta_tensors(stored: dict[str, torch.Tensor], base: dict[str, torch.Tensor], kinds: dict, what) -> dict:
    """The tensors `delta_tensors` stored, given back from the same `base` ({"xor": names} alone:
    a delta of sessions 24-42, every tensor XORed)."""
    sub, xor = kinds.get("sub", []), kinds.get("xor", [])
    bad = [k for k in sub if k not in stored or k not in base or base[k].dtype not in FLOAT16
           or stored[k].dtype != torch.uint8 or tuple(stored[k].shape) != (2, base[k].numel())]
    bad += [k for k in xor if k not in stored or not _same_kind(stored[k], base.get(k))]
    if bad:
        raise WeightsError(f"{what} does not fit its base model: tensor {bad[0]}")
    out = {**stored, **xor_tensors({k: stored[k] for k in xor}, base)[0]}
    for k in sub:
        planes = stored[k].cpu().numpy().astype(np.uint16)
        zigzag = planes[0] << 8 | planes[1]
        d = (zigzag >> 1) ^ -(zigzag & 1)
        bits = _float_order_inverse(_float_order(_bits16(base[k])) + d)
        out[k] = torch.from_numpy(bits.view(np.int16)).view(base[k].dtype).view(base[k].shape).to(base[k].device)
    return out


def xz_file_bytes(path) -> bytes | None:
    """The decompressed bytes of a file that is an xz stream (a delta file, a compact training
    state), at most MAX_XZ_BYTES of them (a ValueError beyond); None for any other file."""
    with open(path, "rb") as f:
        if f.read(len(XZ_MAGIC)) != XZ_MAGIC:
            return None
        f.seek(0)
        data = f.read()
    decompressor = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    out = decompressor.decompress(data, max_length=MAX_XZ_BYTES)
    if not decompressor.eof:
        raise ValueError(f"{path} decompresses to more than {MAX_XZ_BYTES} bytes, or is cut short")
    return out


def _delta_header(path: Path, blob: bytes) -> tuple[dict, str | None, dict]:
    """(metadata, base model id, {"sub": names, "xor": names}) of a delta file's decompressed
    bytes, checked: a header of another shape is a WeightsError (a traceback until session 60)."""
    try:
        header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
        metadata = (header.get("__metadata__") or {}) if isinstance(header, dict) else None
        if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
            raise ValueError("its header is not a safetensors header")
        metadata = dict(metadata)
        base_id = metadata.pop("delta_base", None)
        kinds = {kind: json.loads(metadata.pop(f"delta_{kind}", "[]")) for kind in ("sub", "xor")}
        if not all(isinstance(names, list) and all(isinstance(n, str) for n in names) for names in kinds.values()):
            raise ValueError("its lists of tensors are not lists of names")
    except (ValueError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path} is not a readable delta file: {e}") from None
    return metadata, base_id, kinds


def _read_delta(path: Path, blob: bytes, chain: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) of a delta file (`blob`: its decompressed bytes), rebuilt from its
    base (found beside it)."""
    metadata, base_id, kinds = _delta_header(path, blob)
    base_path = weights_beside(path, base_id)
    if base_path is None or chain >= MAX_DELTA_CHAIN:
        raise WeightsError(f"{path} is a delta file whose base model {base_id} is not beside it")
    *_, base_mid, base, _ = _read(base_path, chain + 1)
    if base_mid != base_id:
        raise WeightsError(f"{path} is a delta file on model {base_id}, but {base_path} is model {base_mid}")
    return metadata, undelta_tensors(load(blob), base, kinds, path)


def write_delta(source, base, out, overwrite: bool = False) -> tuple[str, int]:
    """Write weight file `source` as a delta file `out` against weight (or delta) file `base`,
    which must lie in `out`'s folder (where reading finds it); returns (model id, bytes).
    Atomic; read back and checked against the source's model id before it is put in place.
    Never over the base or a file it is rebuilt from (until session 60 `--out` named as the base
    replaced it with a delta on itself: the model lost), nor over a file without `overwrite`, nor
    over one that another delta beside it is stored against."""
    out = Path(out)
    architecture, config, mid, tensors, info = _read(source)
    _, _, base_mid, base_tensors, _ = _read(base)
    base_file = weights_beside(out, base_mid)
    if base_file is None:
        raise WeightsError(f"the base model {base_mid} must lie in {out.parent} as {base_mid}.safetensors, "
                           f"{base_mid}.delta or default.safetensors, where reading looks for it")
    if out.resolve() in _files_read(base_file):
        raise WeightsError(f"{out} is where the base model {base_mid} is read from: writing the delta there would "
                           f"destroy its base; choose another name ({mid}.delta)")
    check_new_file(out, overwrite)
    old = _stated(out)[0] if out.is_file() else None  # None too for a file that is no weight file
    if old:
        leaning = [p.name for p in sorted(out.parent.glob("*.delta")) if p.resolve() != out.resolve()
                   and old != mid and _stated(p)[1] == old]
        if leaning:
            raise WeightsError(f"{out} holds model {old}, the base of {', '.join(leaning)} beside it: replacing it "
                               f"would leave them without their base; choose another name")
    stored, kinds = delta_tensors(tensors, base_tensors)
    metadata = {"format": FORMAT, "architecture": architecture, "config": config.to_json(), "model_id": mid,
                "info": json.dumps(info, sort_keys=True), "delta_base": base_mid,
                **{f"delta_{kind}": json.dumps(names) for kind, names in kinds.items()}}
    data = lzma.compress(save(stored, metadata=metadata), preset=9 | lzma.PRESET_EXTREME)
    if model_id(config, _read_delta(out, lzma.decompress(data), 0)[1], architecture) != mid:
        raise WeightsError(f"{out}: the delta does not rebuild model {mid}")
    with NewFile.replacing(out) as f:
        f.write(data)
    return mid, len(data)


def _stated(path: Path) -> tuple[str | None, str | None]:
    """(the model id, the base model id of a delta) that a weight or delta file's header says,
    without rebuilding it (None for what it does not say, or for a file that is neither)."""
    try:
        blob = xz_file_bytes(path)
        if blob is not None:
            metadata, base, _ = _delta_header(path, blob)
            return metadata.get("model_id"), base
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("model_id"), None
    except (WeightsError, SafetensorError, OSError, ValueError, lzma.LZMAError):
        return None, None


def _files_read(path: Path | None) -> list[Path]:
    """The files that reading weight or delta file `path` reads: itself, then each delta's base."""
    files = []
    while path is not None and path.resolve() not in files and len(files) <= MAX_DELTA_CHAIN:
        files.append(path.resolve())
        base = _stated(path)[1]
        path = weights_beside(path, base) if base else None
    return files


def check_new_file(out, overwrite: bool, option: str = "--out"):
    """Refuse (NotWritten), before any work, a file to write where a file is and not `overwrite`,
    or where something else is (a folder)."""
    out = Path(out)
    if out.is_dir():
        raise NotWritten(f"{out}: a folder is there: not written")
    if out.exists() and not overwrite:
        raise NotWritten(f"{out} exists: not replaced (pass --overwrite to replace it, or choose another {option})")


def load_weights(path=None) -> tuple[torch.nn.Module, str, dict[str, torch.Tensor], dict]:
    """(model in eval mode with fp32 weights, model id, extra tensors, info) from a weight file."""
    architecture, config, mid, tensors, info = _read(path)
    with torch.random.fork_rng(devices=[]):  # its random start, replaced: a caller's random numbers stay theirs
        model = build_model(architecture, config)
    own = set(model.state_dict())
    try:
        model.load_state_dict({k: v.float() for k, v in tensors.items() if k in own})
    except RuntimeError as e:
        raise WeightsError(f"{path or DEFAULT_WEIGHTS} does not fit its own config: {e}") from None
    extra = {k: v for k, v in tensors.items() if k not in own}
    return model.eval(), mid, extra, info
