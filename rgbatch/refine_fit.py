"""Training the decoder-side refiner (rgbatch.refine) of a weight file, and attaching it.

    fit_refiner("model.safetensors", ["data/train"], "model+refiner.safetensors",
                state="runs/refiner.pt", steps=8000)

The codec is frozen: its codes and streams stay what they are. Training pairs are random
crops of the training images and the codec's 8-bit reconstruction of each at every depth
(what a restore gives), made once and kept beside the training state (`pairs`). Each step
refines a batch of crops, each at a random depth, and lowers the mean log(1 - MS-SSIM):
the axis the benchmarks compare codecs on (MS-SSIM in dB), so every depth counts alike.
The state (refiner, optimizer, step) is saved atomically every `checkpoint_every` steps and
a run resumes from it; the weight file written at the end is the codec's plus the refiner's
tensors (so a new model id).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from .codec import Codec
from .metrics import msssim_tensor
from .options import OptionError
from .refine import PREFIX, Refiner, RefinerConfig, refiner_tensors
from .storage import NewFile, replace_file
from .tiling import to_float, to_uint8, to_unit
from .train import list_images, load_checkpoint, read_each, save_checkpoint
from .weights import check_new_file, load_weights, read_weight_file, save_weights

CROP = 192  # px: MS-SSIM's five scales need more than 160
CROPS_PER_MEGAPIXEL = 9  # random crops an image gives (at least 2): its share of the pixels
VALIDATION = 96  # crops held out, scored every `validate_every` steps
STATE_KEYS = ("cfg", "model", "opt", "step")  # of the training state `train_refiner` saves and resumes


def made_from(weights, data_dirs: list, crop: int = CROP, seed: int = 0) -> dict:
    """What a folder of pairs is made from (its pairs.json, and a refiner state trained on them):
    the model's id, the data folders, the crop size and the seed."""
    _, model_id, _, _ = read_weight_file(weights)
    return {"model_id": model_id, "data": [os.path.abspath(d) for d in data_dirs], "crop": crop, "seed": seed}


def _recorded_source(pairs) -> dict | None:
    """The `made_from` record of a folder of pairs (None: made before session 56)."""
    recorded = Path(pairs) / "pairs.json"
    return json.loads(recorded.read_text()) if recorded.is_file() else None


def _same_source(what: str, theirs: dict | None, ours: dict, where: str):
    """An OptionError (on `state`) unless `theirs` (None: not recorded) is `ours`: a kept folder of
    pairs or a state made for another model or data would train a refiner for the wrong codes."""
    if theirs == ours:
        return
    said = ("with no record of the model and data used (made before session 56)" if theirs is None else
            f"made from model {theirs.get('model_id')} on {', '.join(theirs.get('data', []))} (crop "
            f"{theirs.get('crop')}, seed {theirs.get('seed')})")
    raise OptionError("state", f"{where} holds {what} {said}; this run is for model {ours['model_id']} on "
                               f"{', '.join(ours['data'])} (crop {ours['crop']}, seed {ours['seed']}): give another "
                               f"{{state}} (its pairs are kept beside it), or remove both to start again", ("state",))


def make_pairs(weights, data_dirs: list, out_dir, crop: int = CROP, seed: int = 0, log=print, stop=None) -> Path | None:
    """Crops of the images under `data_dirs` (orig.npy, (N, crop, crop, 3) uint8) and the codec's
    reconstruction of each at every depth (rec.npy, (N, depths, crop, crop, 3) uint8), in
    `out_dir`, in random order, with pairs.json (`made_from`). Kept: a second call with the same
    folder reuses them, if made from the same model and data (else an OptionError: until session
    56 another model's pairs were reused without a word).

    The reconstructions are made a batch at a time into rec.tmp.npy, the crops coded so far
    recorded in rec.tmp.json after each: a call that was stopped (`stop` set: None returned after
    the batch under way) or killed goes on from there (until session 57 Ctrl-C waited for every
    pair, and a rerun made them all again)."""
    out_dir = Path(out_dir)
    source = made_from(weights, data_dirs, crop, seed)
    if (out_dir / "rec.npy").is_file():
        _same_source("training pairs", _recorded_source(out_dir), source, f"(its pairs, {out_dir})")
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    crops = []
    for folder in data_dirs:
        for _, image in read_each(list_images(folder), log):  # one unreadable ended the fit until session 60
            h, w = image.shape[:2]
            if h < crop or w < crop:
                continue
            for _ in range(max(2, round(h * w / 1e6 * CROPS_PER_MEGAPIXEL))):
                y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
                crops.append(image[y:y + crop, x:x + crop])
    if not crops:
        raise ValueError(f"no image of at least {crop}x{crop} pixels under {', '.join(map(str, data_dirs))}")
    crops = np.stack(crops)[rng.permutation(len(crops))]
    codec = Codec.load(weights, refine=False)
    depths = codec.default_iterations
    shape = (len(crops), depths, crop, crop, 3)
    tmp, progress, made = out_dir / "rec.tmp.npy", out_dir / "rec.tmp.json", {**source, "shape": list(shape)}
    rec, done = _reconstructions(tmp, progress, made)
    if done:
        log(f"pairs: going on after {done}/{len(crops)} crops coded before ({out_dir})")
    start = time.time()
    with torch.inference_mode():
        for i in range(done, len(crops), codec.batch_size):
            if stop is not None and stop.is_set():
                log(f"pairs: stopped after {i}/{len(crops)} crops coded, kept in {out_dir}: the same command goes "
                    f"on from them")
                return None
            x = to_float(crops[i:i + codec.batch_size]).to(codec.device)
            for t, (_, x_hat) in enumerate(codec.model.iterate(x, depths)):
                rec[i:i + len(x), t] = to_uint8(x_hat.clamp(-0.5, 0.5))
            rec.flush()  # the rows on disk before the record that counts them
            with NewFile.replacing(progress) as f:
                f.write(json.dumps({**made, "done": i + len(x)}).encode())
            log(f"pairs: {i + len(x)}/{len(crops)} crops coded ({time.time() - start:.0f} s)")
    del rec
    with NewFile.replacing(out_dir / "orig.npy") as f:
        np.save(f, crops)
    with NewFile.replacing(out_dir / "pairs.json") as f:  # before rec.npy, which says the pairs are whole
        f.write(json.dumps(source).encode())
    replace_file(tmp, out_dir / "rec.npy")  # a memory map is written under a name: a hidden one until whole
    progress.unlink()
    return out_dir


def _reconstructions(tmp: Path, progress: Path, made: dict) -> tuple[np.memmap, int]:
    """The memory map of reconstructions `tmp`, and how many crops an earlier call coded into it:
    its record `progress` says how many, and for which model, data and shape; a new map, 0,
    where the record is missing, unreadable or for others, or the map not what it says."""
    shape = tuple(made["shape"])
    try:
        record = json.loads(progress.read_bytes())
        done = record.pop("done")
        if record == made and isinstance(done, int) and 0 < done <= shape[0]:
            rec = np.lib.format.open_memmap(tmp, mode="r+")
            if rec.shape == shape and rec.dtype == np.uint8:
                return rec, done
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape), 0


def _lr(step: int, steps: int, lr: float) -> float:
    """200 warm-up steps, then a cosine to 0 at `steps`."""
    return lr * min(1, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def _log_distortion(refiner, x, y, depth) -> torch.Tensor:
    """Mean log(1 - MS-SSIM) of the refined y against x (float, in [-0.5, 0.5])."""
    with torch.autocast(x.device.type, torch.bfloat16):
        refined = refiner(y, depth)
    return torch.log(1 - msssim_tensor(x + 0.5, refined.float() + 0.5) + 1e-6).mean()


@torch.no_grad()
def validation_gains(refiner, orig, rec, ids) -> np.ndarray:
    """Mean MS-SSIM gain in dB per depth on the crops `ids`, refined images stored as 8 bits."""
    refiner.eval()
    gains = np.zeros(rec.shape[1])
    for t in range(rec.shape[1]):
        for i in range(0, len(ids), 32):
            x = to_unit(to_float(np.asarray(orig[ids[i:i + 32]])))
            y = to_float(np.asarray(rec[ids[i:i + 32], t]))
            with torch.autocast(y.device.type, torch.bfloat16):
                refined = refiner(y.contiguous(memory_format=torch.channels_last), t + 1)
            refined = to_unit(to_float(to_uint8(refined)))  # stored as 8 bits, as a restore writes it
            before, after = msssim_tensor(x, to_unit(y)), msssim_tensor(x, refined)
            gains[t] += (10 * torch.log10((1 - before) / (1 - after))).sum().item()
    refiner.train()
    return gains / len(ids)


def train_refiner(pairs, state, steps: int = 8000, batch_size: int = 16, lr: float = 1e-3,
                  config: RefinerConfig = RefinerConfig(), time_limit: float = 0, checkpoint_every: int = 500,
                  validate_every: int = 1000, seed: int = 0, log=print, stop=None) -> Refiner:
    """Train (or resume, from `state`) a refiner on the pairs in `pairs` (`make_pairs`); a state
    trained on pairs made from another model or data is an OptionError. `stop` (a
    `threading.Event`), once set, ends the run after its step, its state saved."""
    source = _recorded_source(pairs)
    orig = np.load(Path(pairs) / "orig.npy", mmap_mode="r")
    rec = np.load(Path(pairs) / "rec.npy", mmap_mode="r")
    if len(orig) <= VALIDATION + batch_size:
        raise ValueError(f"{len(orig)} training crops are too few (more than {VALIDATION + batch_size} needed)")
    train_ids, val_ids = np.arange(VALIDATION, len(orig)), np.arange(VALIDATION)
    step, saved = 0, None
    if Path(state).is_file():
        saved = load_checkpoint(state, STATE_KEYS, "refiner training state")
        if source is not None:  # a state of before session 56 says nothing: taken as it is
            _same_source("a refiner training state", saved.get("pairs") or source, source, str(state))
        config, step = RefinerConfig.from_json(saved["cfg"]), saved["step"]
        log(f"resuming the refiner's training at step {step}")
    refiner = Refiner(config).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(refiner.parameters(), lr=lr)
    if saved:
        refiner.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["opt"])
    rng = np.random.default_rng(seed + step)
    start, losses = time.time(), []

    def save():
        save_checkpoint(state, {"model": refiner.state_dict(), "opt": optimizer.state_dict(), "step": step,
                                "cfg": config.to_json(), "pairs": source})

    while step < steps and not (time_limit and time.time() - start > time_limit) and not (stop and stop.is_set()):
        ids = np.sort(rng.choice(train_ids, batch_size, replace=False))
        depth = rng.integers(1, rec.shape[1] + 1, batch_size)
        x = to_float(np.asarray(orig[ids]))
        y = to_float(np.stack([rec[i, d - 1] for i, d in zip(ids, depth)]))
        turns = int(rng.integers(4))  # the eight flips and rotations of a square
        x, y = torch.rot90(x, turns, (2, 3)), torch.rot90(y, turns, (2, 3))
        if rng.integers(2):
            x, y = x.flip(3), y.flip(3)
        x, y = (v.contiguous(memory_format=torch.channels_last) for v in (x, y))
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, steps, lr)
        loss = _log_distortion(refiner, x, y, torch.from_numpy(depth))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(refiner.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            log(f"refiner step {step}: loss {np.mean(losses):.4f}")
            losses = []
        if step % checkpoint_every == 0:
            save()
        if step % validate_every == 0:
            gains = validation_gains(refiner, orig, rec, val_ids)
            log(f"refiner step {step}: MS-SSIM gain per depth (dB) " + " ".join(f"{g:.3f}" for g in gains)
                + f", mean {gains.mean():.3f}")
    save()
    return refiner.eval()


def attach_refiner(weights, refiner: Refiner, out, info: dict | None = None) -> str:
    """Write `weights` with `refiner` in it (any refiner it had replaced); returns the model id."""
    model, _, extra, old_info = load_weights(weights)
    extra = {k: v for k, v in extra.items() if not k.startswith(PREFIX)}
    return save_weights(out, model, {**extra, **refiner_tensors(refiner)}, {**old_info, "refiner": info or {}})


def fit_refiner(weights, data_dirs: list, out, state, steps: int = 8000, time_limit: float = 0,
                seed: int = 0, log=print, stop=None, overwrite: bool = False) -> str | None:
    """Pairs (kept beside `state`), training (resumed from `state`), and the weight file `out`;
    its model id, or None where `stop` ended the pair-making or the training (what they made
    kept, `out` not written). `out` and `state` are checked first (until session 60 after every
    pair was made): an existing `out` is replaced with `overwrite`, or where `state` exists (the
    same command going on: a run stopped by its time limit writes `out`)."""
    state = Path(state)
    check_new_file(out, overwrite or state.is_file())
    if state.suffix == ".pairs":
        raise OptionError("state", f"{state} ends in .pairs, the name of the folder of pairs kept beside the state: "
                                   f"choose another")
    if state.exists():
        load_checkpoint(state, STATE_KEYS, "refiner training state")
    pairs = make_pairs(weights, data_dirs, state.with_suffix(".pairs"), seed=seed, log=log, stop=stop)
    if pairs is None:
        return None
    refiner = train_refiner(pairs, state, steps=steps, time_limit=time_limit, seed=seed, log=log, stop=stop)
    if stop is not None and stop.is_set():
        return None
    step = load_checkpoint(state, STATE_KEYS, "refiner training state")["step"]
    return attach_refiner(weights, refiner, out, {"steps": step, "data": "+".join(map(str, data_dirs))})


__all__ = ["attach_refiner", "fit_refiner", "make_pairs", "train_refiner", "validation_gains"]
