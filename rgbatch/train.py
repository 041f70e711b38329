"""Training: the paper's recipe (random 32x32 patches, mean L1 of the residual of every
iteration, Adam), resumable exactly from atomic checkpoints.

A checkpoint holds the model, optimizer, scheduler, step, every RNG and the history of
evaluations, so `--resume` continues the same run as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import io
import lzma
import math
import os
import pickle
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .architectures import DEFAULT_ARCHITECTURE, build_model, get_architecture
from .codec import resolve_device, resolve_precision
from .imageio import ImageError, read_image
from .metrics import msssim, msssim_tensor
from .options import OptionError, check_choice, check_positive, check_range
from .model import Binarizer, CodecConfig
from .rate import ContextRate
from .storage import NewFile, NotWritten, temp_path
from .tiling import to_float, to_uint8, to_unit
from .weights import (DEFAULT_WEIGHTS, WeightsError, check_new_file, delta_tensors, read_weight_file, save_weights,
                      undelta_tensors, weights_beside, xz_file_bytes)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm"}


TRAIN_PARTS = ("all", "encoder", "decoder", "display")
BINARIZE = ("stochastic", "sign")
MSSSIM_LOSSES = ("linear", "db")
ENCODER_PARTS = ("encoder.", "binarizer.")  # what "encoder" trains and "decoder" / "display" leave as they are
CODING_PARTS = ("all", "encoder")  # they change the codes: make them with gradients, may price them


class TrainingError(RuntimeError):
    """A problem with the training set-up, worded for the user."""


class TrainingOptionError(OptionError, TrainingError):
    """A training parameter that cannot be used: an `OptionError` naming it as `TrainConfig`
    and `train` spell it, and a `TrainingError`."""


@dataclass
class TrainConfig:
    data_dir: str | list[str]  # a folder, a .npy pack, or a list of them (sampled by pixels together)
    out: str
    steps: int = 100_000  # length of the learning-rate schedule
    batch_size: int = 32
    patch: int = 32
    iterations: int = 8  # iterations unrolled in training
    lr: float = 5e-4
    warmup: int = 200
    min_lr_fraction: float = 0.1  # cosine decay to this fraction of lr at `steps`
    hard_fraction: float = 0.0  # share of each batch taken as the busiest of 4x candidates
    # patches drawn with random quarter turns as well as left-right flips (False: flips alone, so that
    # the network sees photos the way up they are taken; docs/TRAINING.md, "Orientation")
    turns: bool = True
    loss_weighting: str = "uniform"  # uniform | gain (weight iteration t by its gain)
    # adds msssim_weight * mean over iterations of (1 - MS-SSIM) to the L1 loss (Johnston et
    # al. 2018 trained this codec family for SSIM-like quality); on 64 px patches, 3 scales
    msssim_weight: float = 0.0
    # "linear": the term above; "db": msssim_weight x log10(1 - MS-SSIM) of each iteration (the
    # batch's mean MS-SSIM), the axis the bench's BD-rate integrates over, so that every depth
    # counts by its MS-SSIM in dB and not by its error, 14-32x smaller at depth 16 than at depth 1
    # (docs/TRAINING.md, "Encoder alone ... and MS-SSIM in dB")
    msssim_loss: str = "linear"
    # share of patches trained with random per-block stopping (spatially adaptive bit rates):
    # each 16x16 block sends 1..iterations iterations, uniformly drawn, then zeros
    stop_fraction: float = 0.0
    # weight of the context coder's code length in the loss (`rgbatch.rate`, `rate_prices`):
    # 1 prices every bit at the distortion the run's own curve trades for it; 0 = no rate term
    rate_weight: float = 0.0
    rate_tables: str | None = None  # weights whose context model starts the rate term (default: shipped)
    # what the steps train: "all"; "encoder": the encoder and binarizer alone, the gradient
    # through the decoder as it is (the codes change, so they may be priced); "decoder": the
    # decoder and its gains alone, on codes the encoder makes without gradients each step (the
    # encoder as it is, so no rate term); a
    # decoder tuned to the metric at the codes' own rate (docs/TRAINING.md, "Decoder alone");
    # "display": the same, but the codes come from the model as the run starts (encoder and its
    # loop decoder frozen, kept in the checkpoint): a second decoder for display, the codes
    # and their rate exactly as they were
    train_part: str = "all"
    # the bits training decodes: "stochastic" (the paper: +1 with probability (1 + x) / 2), or
    # "sign", the bits inference sends (both straight-through; docs/TRAINING.md, "Signs")
    binarize: str = "stochastic"
    # auto: bfloat16 autocast where the hardware computes it (1.5x faster per step on an AVX-512
    # BF16 CPU at width 0.25), else fp32 (emulated bf16 made a step 12x slower on an AVX2 CPU)
    precision: str = "auto"
    threads: int = 0  # torch threads; 0 = torch's default
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    checkpoint_every: int = 500
    # stop at a checkpoint once this process has trained this many seconds (0: run to `steps`):
    # a lent GPU machine or a session ends at a known time, and a killed run loses its last steps
    time_limit: float = 0.0
    # also keep the model every this many steps (`<out>.step<N>.pt`, model and history only):
    # `rgbatch export --average` ships the mean of the last few (measured better than the last)
    snapshot_every: int = 0
    eval_dir: str | None = None
    eval_every: int = 2000
    eval_images: int = 6
    eval_crop: int = 256
    codec: dict = field(default_factory=lambda: asdict(CodecConfig()))  # the architecture's Config fields
    architecture: str = DEFAULT_ARCHITECTURE  # rgbatch.architectures; checkpoints without one are Residual-GRU

    def check(self):
        """The run's numbers, checked before it starts (OptionError, exit 2): until session 53
        `--checkpoint-every 0` ended a run in a ZeroDivisionError, `--batch-size 0` in torch's
        words, and `--rate-weight nan` or a negative weight trained on."""
        for name in ("steps", "batch_size", "checkpoint_every", "eval_every", "eval_images"):
            check_range(name, getattr(self, name), 1)
        for name in ("warmup", "snapshot_every", "seed", "time_limit", "msssim_weight", "rate_weight"):
            check_range(name, getattr(self, name), 0)
        for name in ("min_lr_fraction", "hard_fraction", "stop_fraction"):
            check_range(name, getattr(self, name), 0, 1)
        check_range("threads", self.threads, 0, what=" (0: torch's default)")
        check_positive("lr", self.lr)
        if not math.isfinite(self.lr):  # inf trained NaN weights into every checkpoint until session 60
            raise OptionError("lr", f"must be finite, not {self.lr}")
        check_choice("loss_weighting", self.loss_weighting, ("uniform", "gain"))  # a typo trained uniform
        check_range("eval_crop", self.eval_crop, 32, what=" pixels")
        if self.snapshot_every % self.checkpoint_every:
            raise TrainingOptionError("snapshot_every", f"{self.snapshot_every} must be a multiple of "
                                      f"{{checkpoint_every}} {self.checkpoint_every} (snapshots are taken with "
                                      f"checkpoints)", ("checkpoint_every",))


def list_images(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingError(f"{folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_training_images(source, log=print) -> list[np.ndarray]:
    """A folder of images, or a `.npy` pack of uint8 crops (N, H, W, 3) made by `pack_crops`,
    or a list of such sources (their images together)."""
    if isinstance(source, (list, tuple)):
        return [image for one in source for image in load_training_images(one, log)]
    if str(source).endswith(".npy"):
        return list(_pack(source))
    return [image for _, image in read_each(list_images(source), log)]


def read_each(paths, log=print, what: str = ""):
    """(path, HxWx3 uint8 image) for each of `paths` that can be read; each other is skipped with
    a line that names it (`what`: the use, "evaluation: ")."""
    for path in paths:
        try:
            yield path, read_image(path)[0]
        except (ImageError, OSError) as e:
            log(f"{what}skipping {path}: {e}")


def _pack(source) -> np.ndarray:
    """The crops of a `.npy` pack, checked: uint8 (N, H, W, 3) (until session 60 a float array
    was cast to uint8 without a word, and other shapes failed in numpy's words, the file unnamed)."""
    try:
        pack = np.load(source)
    except (OSError, ValueError, EOFError) as e:
        why = ("not an array file (numpy reads it as pickled objects, which are not loaded: they could run code)"
               if "pickle" in str(e) else " ".join(str(e).split())[:200])
        raise TrainingError(f"{source} is not a readable .npy pack: {why}") from None
    if not (isinstance(pack, np.ndarray) and pack.dtype == np.uint8 and pack.ndim == 4 and pack.shape[3] == 3):
        shape = getattr(pack, "shape", "?")
        raise TrainingError(f"{source} is not a pack of crops (`rgbatch pack`: uint8, shape (N, H, W, 3)): it holds "
                            f"{getattr(pack, 'dtype', type(pack).__name__)} of shape {shape}")
    return pack


def random_crops(images, crop: int, per_image: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`per_image` random crop x crop views of each image (HxWx3) at least that large, in order."""
    crops = []
    for image in images:
        h, w = image.shape[:2]
        if min(h, w) >= crop:
            for _ in range(per_image):
                y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
                crops.append(image[y:y + crop, x:x + crop])
    return crops


MAX_CROPS_PER_IMAGE = 1024  # `pack --per-image`: 72 photos give 73,728 crops, 8 GB of 192 px ones


def pack_crops(folder, out, crop: int = 128, per_image: int = 2, seed: int = 0,
               jpeg_quality: int = 0, max_mib: float = 0.0, overwrite: bool = False) -> tuple[int, ...]:
    """Random crops of a folder's images: a compact training set to carry to a GPU machine.

    With jpeg_quality 0, one uint8 array (N, crop, crop, 3) in the .npy file `out`; else a
    folder `out` of JPEG files at that quality, without chroma subsampling (at 95 about a
    fifth of the array's size: a call to a lent machine carries 64 MiB in all). `max_mib`
    (JPEG packs; 0: no limit): the crops in a random order until the next would take the
    folder past that many MiB, so that a pack fits the room a call has left. Both are
    training sources for `rgbatch train`. Returns (N, crop, crop, 3). An array pack replaces a
    file at `out` only with `overwrite` (until session 60 without a word), and is written crop
    by crop: it takes no memory beyond the images (until then a copy of every crop at once)."""
    out = Path(out)
    check_range("crop", crop, 16, what=" pixels")  # until session 53 a crop of 0 or -1 packed empty images
    check_range("per_image", per_image, 1, MAX_CROPS_PER_IMAGE)  # 10**20 drew crops until memory ran out
    check_range("jpeg_quality", jpeg_quality, 0, 100, " (0: a .npy array)")
    check_range("max_mib", max_mib, 0)
    if max_mib and not jpeg_quality:
        raise TrainingOptionError("max_mib", "limits a JPEG pack: give {jpeg_quality} too", ("jpeg_quality",))
    if jpeg_quality and out.suffix == ".npy":
        raise TrainingOptionError("out", f"{out} names a .npy file, but a JPEG pack ({{jpeg_quality}} {jpeg_quality}) "
                                         f"is a folder of files: give a folder name", ("jpeg_quality",))
    if not jpeg_quality and out.suffix != ".npy":  # numpy would add the suffix: another file than the one named
        raise TrainingOptionError("out", f"{str(out)!r} is no .npy file name: an array pack is one (or give "
                                         f"{{jpeg_quality}} for a folder of JPEG crops)", ("jpeg_quality",))
    if not jpeg_quality:
        check_new_file(out, overwrite)
    if jpeg_quality and out.exists() and any(out.iterdir()):
        # a folder pack is read whole: crops left from an earlier pack would join this one
        raise TrainingOptionError("out", f"{out} is not empty: remove it or choose another")
    rng = np.random.default_rng(seed)
    crops = random_crops(load_training_images(folder), crop, per_image, rng)
    if not crops:
        raise TrainingError(f"no image of at least {crop}x{crop} in {folder}")
    if not jpeg_quality:
        shape = (len(crops), int(crop), int(crop), 3)  # plain ints: the header is their repr
        with NewFile.replacing(out) as f:  # whole or not at all
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            for one in crops:
                f.write(np.ascontiguousarray(one).tobytes())
        return shape
    # the crops go to a hidden folder beside `out`, renamed onto it once all are written (over an
    # empty folder): until session 55 an interrupted pack left some of its crops under `out`, a
    # smaller pack that trained as if whole
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(temp_path(str(out)))
    tmp.mkdir()
    try:
        order = rng.permutation(len(crops)) if max_mib else range(len(crops))
        written = size = 0
        for i in order:
            buffer = io.BytesIO()
            Image.fromarray(crops[i]).save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
            size += buffer.tell()
            if max_mib and size > max_mib * 2**20:
                break
            (tmp / f"{written:05d}.jpg").write_bytes(buffer.getvalue())
            written += 1
        if not written:
            raise TrainingOptionError("max_mib", f"{max_mib} is too small: not one crop of {crop} px fits")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return (written, crop, crop, 3)


class PatchSampler:
    """Random patches of a folder of images (or a .npy pack), all held in memory as uint8."""

    def __init__(self, source, patch: int, rng: np.random.Generator, log=print, turns: bool = True):
        self.patch, self.rng, self.turns = patch, rng, turns
        self.images = []
        skipped = 0
        for image in load_training_images(source, log):
            if min(image.shape[:2]) < patch:
                skipped += 1
                continue
            self.images.append(image)
        if not self.images:
            raise TrainingError(f"no usable training image in {source} (need images of at least "
                                f"{patch}x{patch}; {skipped} were smaller)")
        sizes = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.weights = sizes / sizes.sum()  # every pixel equally likely

    def sample(self, n: int) -> np.ndarray:
        """n patches, (n, p, p, 3) uint8, randomly flipped (left-right) and turned (with `turns`)."""
        p = self.patch
        out = np.empty((n, p, p, 3), np.uint8)
        for i, k in enumerate(self.rng.choice(len(self.images), size=n, p=self.weights)):
            image = self.images[k]
            y = self.rng.integers(0, image.shape[0] - p + 1)
            x = self.rng.integers(0, image.shape[1] - p + 1)
            patch = image[y:y + p, x:x + p]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            out[i] = np.rot90(patch, self.rng.integers(4)) if self.turns else patch
        return out

    def batch(self, n: int, hard_fraction: float = 0.0) -> torch.Tensor:
        """(n, 3, p, p) float in [-0.5, 0.5]; a share of them the busiest of 4n candidates."""
        n_hard = int(round(n * hard_fraction))
        patches = self.sample(n - n_hard)
        if n_hard:
            candidates = self.sample(4 * n_hard).astype(np.float32)
            busyness = (np.abs(np.diff(candidates, axis=1)).mean(axis=(1, 2, 3))
                        + np.abs(np.diff(candidates, axis=2)).mean(axis=(1, 2, 3)))
            hard = candidates[np.argsort(busyness)[-n_hard:]].astype(np.uint8)
            patches = np.concatenate([patches, hard])
        return to_float(patches)


def load_eval_set(folder, count: int, crop: int, log=print) -> list[torch.Tensor]:
    """Centre crops of the first `count` images of a folder, (1, 3, c, c) in [-0.5, 0.5]; an
    image that cannot be read, or under 32 pixels a side, is skipped with a line (until session 60
    the first ended the run unnamed, and the second every evaluation, the run unable to pass it)."""
    crops = []
    for path, image in read_each(list_images(folder)[:count], log, "evaluation: "):
        h, w = image.shape[:2]
        if min(h, w) < 32:
            log(f"evaluation: skipping {path}: {w}x{h} pixels, under the 32 of a crop")
            continue
        c = min(crop, h, w) // 32 * 32
        y, x = (h - c) // 2, (w - c) // 2
        crops.append(to_float(image[y:y + c, x:x + c].copy())[None])
    if not crops:
        raise TrainingError(f"no evaluation image in {folder}")
    return crops


def evaluate(model, crops, iterations: int) -> list[float]:
    """Mean MS-SSIM after each iteration over the crops (8-bit rounded reconstructions)."""
    model.eval()
    device = next(model.parameters()).device
    scores = np.zeros(iterations)
    for x in crops:
        x = x.to(device)
        def score(t, x_hat, x=x):
            scores[t] += msssim(to_uint8(x[0]), to_uint8(x_hat[0]))
        model.encode(x, iterations, on_iteration=score)
    model.train()
    return (scores / len(crops)).tolist()


def random_stops(n: int, height: int, width: int, iterations: int, fraction: float, block: int):
    """(n, 1, height/block, width/block) iterations sent per block: `iterations` everywhere, except
    in a random `fraction` of the patches, where every block draws its own count in
    1..iterations. None when fraction is 0 (no masking at all)."""
    if not fraction:
        return None
    shape = (n, 1, height // block, width // block)
    drawn = torch.randint(1, iterations + 1, shape)
    stopping = torch.rand(n, 1, 1, 1) < fraction
    return torch.where(stopping, drawn, iterations)


def iteration_losses(model, x, outputs, cfg: TrainConfig) -> torch.Tensor:
    """The distortion loss of each iteration's reconstruction, (T,): mean L1 of the residual
    (weighted by the iteration's gain with `loss_weighting="gain"`), plus msssim_weight x
    (1 - MS-SSIM), or x log10(1 - MS-SSIM) with `msssim_loss="db"`. The training loss is their mean."""
    steps, n = outputs.shape[:2]
    losses = (x - outputs).abs().mean(dim=(1, 2, 3, 4))
    if cfg.loss_weighting == "gain":
        weights = torch.stack([torch.as_tensor(model.gain(t)).detach() for t in range(steps)])
        losses = losses * weights / weights.mean()
    if cfg.msssim_weight:
        # every iteration's reconstructions against one set of the patches' statistics
        quality = msssim_tensor(to_unit(x), to_unit(outputs.flatten(0, 1)))
        error = 1 - quality.view(steps, n).mean(1)
        if cfg.msssim_loss == "db":  # 1e-6: 60 dB, far past any depth, keeps the log finite
            error = torch.log10(error.clamp(min=1e-6))
        losses = losses + cfg.msssim_weight * error
    return losses


def rate_prices(losses: torch.Tensor) -> torch.Tensor:
    """What one iteration's worth of bits is worth at iteration i, (T,), from the loss curve.

    Depth t is an operating point of slope s[t] = -dL/dt (loss per iteration of bits, by
    central differences). Its rate counts the bits of iterations 1..t, so a bit of
    iteration i is priced at the sum of s[t] for t >= i: saving it is worth what the curve
    itself pays for a bit at every depth that contains it. With these prices the term
    rate_weight * mean_i(price_i * R_i) is mean_t(s[t] * rate_t): a Lagrangian per depth."""
    if len(losses) < 2:
        return losses.new_zeros(len(losses))
    slopes = (-torch.gradient(losses)[0]).clamp(min=0)
    return slopes.flip(0).cumsum(0).flip(0)


def lr_factor(step: int, cfg: TrainConfig, restart: int = 0) -> float:
    """Linear warm-up over `warmup` steps, then a cosine decay to `min_lr_fraction` at `steps`.
    `restart`: the step at which Adam started again without moments (a widened or slimmed
    state): the cosine's value is warmed up again over `warmup` steps from there."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    cosine = cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))
    return cosine * min(1.0, (step - restart + 1) / cfg.warmup)


def save_checkpoint(path, state: dict):
    """Write a file without a name, then put it at `path`: a killed run never leaves half a
    checkpoint, nor (since session 55) a temporary file. A TrainingError that names `path`
    where it cannot be written (until session 60 the hidden temporary file's name)."""
    with _writing(path), NewFile.replacing(path) as f:
        torch.save(state, f)


def check_writable(path):
    """Refuse, before any work, a checkpoint that cannot be written where asked (until session
    60 found at the first checkpoint, the steps before it lost)."""
    with _writing(path):
        NewFile.replacing(path).discard()


@contextlib.contextmanager
def _writing(path):
    """A TrainingError naming `path` for what stops it being written (NotWritten: something not
    a file there, or on the way)."""
    try:
        yield
    except (OSError, NotWritten) as e:
        raise TrainingError(f"cannot write {path}: {getattr(e, 'strerror', None) or e}") from None


def load_checkpoint(checkpoint, keys: tuple[str, ...], what: str, device="cpu") -> dict:
    """A state `save_checkpoint` wrote, holding `keys`, on `device`; TrainingError, worded, for
    a missing file or one that is no `what`."""
    if not Path(checkpoint).is_file():
        raise TrainingError(f"no checkpoint at {checkpoint}")
    try:  # weights_only: tensors and plain containers only, so a forged file cannot run code
        compact = xz_file_bytes(checkpoint)  # a compact state (`slim_checkpoint` with a base), or None
        state = torch.load(checkpoint if compact is None else io.BytesIO(compact), weights_only=True,
                           map_location=device)
    except pickle.UnpicklingError:  # torch's words on it advise loading the file as code: not said
        raise TrainingError(f"{checkpoint} is not a {what} (not a file torch.save wrote of tensors)") from None
    except Exception as e:  # torch.load raises what its unpickler meets: no narrower class covers it
        # its first line; an empty file raises a bare EOFError (until session 55 an IndexError traceback)
        said = str(e).strip().splitlines() or (["it ends at once (empty, or cut short)"] if isinstance(e, EOFError) else [])
        raise TrainingError(f"{checkpoint} is not a {what} ({type(e).__name__}{': ' + said[0] if said else ''})") from None
    if not isinstance(state, dict) or not set(keys) <= state.keys():
        raise TrainingError(f"{checkpoint} is not a {what} (no {', '.join(keys[:-1])} and {keys[-1]})")
    if "model_delta" in state:  # a compact state (`slim_checkpoint` with a base): the model from its base
        delta = state.pop("model_delta")
        if not (isinstance(delta, dict) and isinstance(delta.get("xor"), list)
                and isinstance(delta.get("sub", []), list)):
            raise TrainingError(f"{checkpoint} is not a {what} (a compact state without its delta's description)")
        base = weights_beside(DEFAULT_WEIGHTS, delta.get("base"))
        if base is None:
            raise TrainingError(f"{checkpoint} stores its model against model {delta.get('base')}, which is not "
                                f"among the packaged models ({DEFAULT_WEIGHTS.parent})")
        try:
            tensors = {k: v.to(device) for k, v in read_weight_file(base)[2].items()}
            state["model"] = undelta_tensors(state["model"], tensors, delta, checkpoint)
        except WeightsError as e:
            raise TrainingError(str(e)) from None
    return state


def load_training_state(checkpoint, device="cpu") -> dict:
    """A training checkpoint's state (`save_checkpoint`'s), on `device` (`load_checkpoint`)."""
    return load_checkpoint(checkpoint, ("train_config", "model", "step"), "training checkpoint", device)


def _rng_state(np_rng):
    state = {"torch": torch.get_rng_state(), "numpy": np_rng.bit_generator.state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state, np_rng):
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np_rng.bit_generator.state = state["numpy"]
    random.setstate(state["python"])


def train(cfg: TrainConfig, resume: bool = False, log=print, progress=None, stop=None):
    """Run (or continue) a training run until `cfg.steps`. Returns the final checkpoint dict.

    `progress(step, loss, steps_per_second)` is called once as the steps start (loss None) and
    after every step when given. `stop`: a `threading.Event`; once it is set the run ends after the
    step it is in, with a checkpoint of that step written (as `cfg.time_limit` ends it), so that a
    run asked to stop (`train`'s Ctrl-C or SIGTERM) loses nothing.
    """
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    architecture = get_architecture(cfg.architecture)
    codec_cfg = architecture.Config(**cfg.codec)
    check_range("iterations", cfg.iterations, 1, codec_cfg.max_iterations, " for this model")
    if cfg.patch < codec_cfg.block or cfg.patch % codec_cfg.block:
        raise TrainingOptionError("patch", f"{cfg.patch} must be a multiple of {codec_cfg.block} (a code position's "
                                           f"block of pixels)")
    checkpoint_path = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)
    # oneDNN runs bf16 convolutions fast only in the channels-last layout (a step 1.5x faster here)
    bf16 = resolve_precision(cfg.precision, device) == "bf16"
    layout = torch.channels_last if bf16 else torch.contiguous_format
    model = architecture(codec_cfg).to(device, memory_format=layout)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the shapes repeat every step
    check_choice("train_part", cfg.train_part, TRAIN_PARTS)
    check_choice("binarize", cfg.binarize, BINARIZE)
    check_choice("msssim_loss", cfg.msssim_loss, MSSSIM_LOSSES)
    if cfg.train_part not in CODING_PARTS and cfg.rate_weight:
        raise TrainingOptionError("rate_weight", f"{cfg.rate_weight:g} prices the codes, which {{train_part}} "
                                                 f"{cfg.train_part!r} leaves as they are: give 0", ("train_part",))
    for name, parameter in model.named_parameters():
        in_encoder = name.startswith(ENCODER_PARTS)
        parameter.requires_grad_(cfg.train_part == "all" or in_encoder == (cfg.train_part == "encoder"))
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=cfg.lr)
    restart = 0  # read by the schedule when it is called: a resumed state may set it
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, restart))
    step, wall_time, history, best = 0, 0.0, [], -1.0
    rate, widened, reference_state = None, None, None

    if resume:
        if not checkpoint_path.exists():
            raise TrainingOptionError("resume", f"asks to continue {checkpoint_path}, but there is no checkpoint there")
        state = load_training_state(checkpoint_path, device)
        saved_architecture = state["train_config"].get("architecture", DEFAULT_ARCHITECTURE)
        saved_codec = get_architecture(saved_architecture).Config(**state["train_config"]["codec"])
        if (saved_architecture, saved_codec) != (cfg.architecture, codec_cfg):
            raise TrainingOptionError("out", f"{checkpoint_path}: the checkpoint is for model {saved_codec}, not "
                                             f"{codec_cfg}; drop the conflicting options or give another")
        model.load_state_dict(state["model"])
        step, wall_time, history = state["step"], state["wall_time"], state["history"]
        widened = state.get("widened")
        saved_part = state["train_config"].get("train_part", "all")
        if saved_part != cfg.train_part:
            log(f"trained part {saved_part} -> {cfg.train_part} from step {step}")
            state["optimizer"] = None  # Adam's moments were for other parameters
        if state.get("optimizer") is None:  # widened, slimmed, retargeted or a snapshot: Adam starts again, warmed up
            restart = step
            scheduler.last_epoch = step
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, cfg, restart)
            log(f"Adam starts again at step {step} (the checkpoint holds no moments): "
                f"{cfg.warmup} steps of warm-up")
        else:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            restart = state.get("restart", 0)
        if cfg.lr != state["train_config"]["lr"]:
            # a resumed run keeps its schedule's shape but may change its scale: a CPU run that
            # takes over from a GPU run's larger batches needs a smaller step (docs/TRAINING.md)
            scheduler.base_lrs = [cfg.lr for _ in optimizer.param_groups]
            for group in optimizer.param_groups:
                group["initial_lr"], group["lr"] = cfg.lr, cfg.lr * lr_factor(step, cfg, restart)
            log(f"learning rate scale {state['train_config']['lr']:g} -> {cfg.lr:g} from step {step}")
        saved_binarize = state["train_config"].get("binarize", "stochastic")
        if saved_binarize != cfg.binarize:
            log(f"binarize {saved_binarize} -> {cfg.binarize} from step {step}")
        saved_loss = state["train_config"].get("msssim_loss", "linear")
        if saved_loss != cfg.msssim_loss:
            log(f"MS-SSIM loss {saved_loss} -> {cfg.msssim_loss} from step {step}")
        saved_turns = state["train_config"].get("turns", True)
        if saved_turns != cfg.turns:
            log(f"quarter turns {'on' if saved_turns else 'off'} -> {'on' if cfg.turns else 'off'} from step {step}")
        saved_rate_weight = state["train_config"].get("rate_weight", 0.0)
        if cfg.rate_weight != saved_rate_weight:
            log(f"rate weight {saved_rate_weight:g} -> {cfg.rate_weight:g} from step {step}")
        best = state.get("best", -1.0)
        if state.get("rate"):
            rate = ContextRate.from_state_dict(state["rate"])
        if cfg.train_part == "display":
            reference_state = state.get("reference")
        if state.get("rng"):
            _restore_rng(state["rng"], np_rng)
        else:  # a snapshot (or a state widened or slimmed from one) keeps none: until session 60 a KeyError
            log(f"random states start from the seed {cfg.seed} (the checkpoint keeps none: a snapshot)")
        log(f"resumed {checkpoint_path} at step {step} ({wall_time / 3600:.2f} h of training so far)")
        if step >= cfg.steps:  # `make train` on a finished run: said, not a silent exit
            log(f"the run has done its {cfg.steps} steps: nothing to train (a larger --steps goes on, the "
                f"schedule's cosine stretched to it)")
    elif checkpoint_path.exists():
        raise TrainingOptionError("out", f"{checkpoint_path} exists: pass {{resume}} to continue it, or choose "
                                         f"another", ("resume",))
    check_writable(checkpoint_path)

    reference = None  # the model that makes the codes of a display decoder: the run's as it started
    if cfg.train_part == "display":
        reference = architecture(codec_cfg).to(device, memory_format=layout).requires_grad_(False)
        reference.load_state_dict(reference_state or model.state_dict())
    if cfg.binarize == "sign":  # the architecture's own binarizer, where it has one
        if not isinstance(getattr(model, "binarizer", None), Binarizer):
            raise TrainingOptionError("binarize", f"sign needs a Residual-GRU binarizer, which {cfg.architecture!r} "
                                                  f"has not")
        for network in (model, reference):
            if network is not None:
                network.binarizer.stochastic = False
    if cfg.rate_weight and rate is None:
        rate = ContextRate.from_weights(cfg.rate_tables)
        log(f"rate term (weight {cfg.rate_weight}) from the context tables of {cfg.rate_tables or 'the shipped model'}")
    if rate is not None:
        rate.to(device)
    sampler = PatchSampler(cfg.data_dir, cfg.patch, np_rng, log, turns=cfg.turns)
    eval_crops = load_eval_set(cfg.eval_dir, cfg.eval_images, cfg.eval_crop, log) if cfg.eval_dir else None
    log(f"{len(sampler.images)} training images; model {cfg.architecture} {codec_cfg}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, on {device} in {'bf16' if bf16 else 'fp32'} "
        f"({torch.get_num_threads()} CPU threads)")

    def state_dict():
        return {"train_config": asdict(cfg), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "wall_time": wall_time,
                "history": history, "best": best, "rng": _rng_state(np_rng),
                "rate": rate.state_dict() if rate else None, "restart": restart, "widened": widened,
                "reference": reference.state_dict() if reference is not None else None}

    def kept() -> str:
        saved = history[-1]["step"] if history else None
        return (f"the checkpoint of step {saved} ({checkpoint_path}) kept as it was" if checkpoint_path.exists()
                and saved is not None else "no checkpoint written")

    model.train()
    started = process_start = time.perf_counter()
    session_start_step = step
    if progress:
        progress(step, None, 0.0)
    while step < cfg.steps and not (stop is not None and stop.is_set()):  # set before any step: the checkpoint is current
        x = sampler.batch(cfg.batch_size, cfg.hard_fraction).to(device, memory_format=layout)
        stops = random_stops(len(x), x.shape[2], x.shape[3], cfg.iterations, cfg.stop_fraction, codec_cfg.block)
        stops = None if stops is None else stops.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if cfg.train_part in CODING_PARTS:  # "encoder": the gradient reaches it through the frozen decoder
                outputs, codes = model(x, cfg.iterations, stops, with_codes=True)
            elif reference is None:  # "decoder": one pass, the codes made without gradients in the same loop
                outputs, codes = model(x, cfg.iterations, stops, with_codes=True, encoder_grad=False)
            else:  # "display": a second decoder learns from the reference's codes
                with torch.no_grad():
                    _, codes = reference(x, cfg.iterations, stops, with_codes=True)
                outputs = model.reconstructions(codes)
        distortion = iteration_losses(model, x, outputs.float(), cfg)
        loss = distortion.mean()
        if not torch.isfinite(loss):  # until session 60 the run went on, checkpointing NaN weights
            raise TrainingError(f"step {step + 1}: the loss is {loss.item()}: stopped, {kept()}; a smaller --lr "
                                f"may train")
        priced = rate is not None and cfg.rate_weight
        if priced:
            bits_per_bit = rate(codes, count=True)  # priced with the tables before this batch
            loss = loss + cfg.rate_weight * (rate_prices(distortion.detach()) * bits_per_bit).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        elapsed = time.perf_counter() - started
        if progress:
            progress(step, loss.item(), (step - session_start_step) / max(elapsed, 1e-9))

        out_of_time = cfg.time_limit and time.perf_counter() - process_start >= cfg.time_limit
        asked = stop is not None and stop.is_set()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time or asked:
            if not all(torch.isfinite(p).all() for p in trained):  # a step that made them so: never saved
                raise TrainingError(f"step {step}: the weights are no longer finite: stopped, {kept()}; a smaller "
                                    f"--lr may train")
            speed = (step - session_start_step) / max(elapsed, 1e-9)
            wall_time += elapsed
            started = time.perf_counter()
            session_start_step = step
            # threads with the wall time: CPU-hours are wall hours x threads (runs change threads)
            entry = {"step": step, "loss": loss.item(), "wall_time": wall_time, "lr": scheduler.get_last_lr()[0],
                     "threads": torch.get_num_threads() if device.type == "cpu" else 0}
            if priced:
                entry["bits_per_bit"] = bits_per_bit.tolist()  # the last batch's, per iteration
            if eval_crops and (step % cfg.eval_every == 0 or step == cfg.steps):
                entry["msssim"] = evaluate(model, eval_crops, cfg.iterations)
                score = float(np.mean(entry["msssim"]))
                log(f"step {step}: eval MS-SSIM per iteration "
                    + " ".join(f"{v:.4f}" for v in entry["msssim"]))
                if score > best:
                    best = score
                    save_checkpoint(checkpoint_path.with_name(checkpoint_path.stem + ".best.pt"), state_dict())
            history.append(entry)
            save_checkpoint(checkpoint_path, state_dict())
            if cfg.snapshot_every and step % cfg.snapshot_every == 0:
                snapshot = {k: v for k, v in state_dict().items() if k not in ("optimizer", "scheduler", "rng")}
                save_checkpoint(snapshot_path(checkpoint_path, step), snapshot)
            log(f"step {step}: loss {entry['loss']:.5f}, {wall_time / 3600:.2f} h, {speed:.2f} steps/s, checkpoint written")
            if out_of_time or asked:
                log(f"stopped at step {step}: " + ("asked to stop" if asked else
                                                   f"the time limit of {cfg.time_limit:g} s was reached"))
                break
    return state_dict()


def slim_checkpoint(checkpoint, out, half: bool = False, base=None) -> dict:
    """`checkpoint` without Adam's moments, written to `out`: a third of its size (a lent machine
    cannot bring back a width-0.5 checkpoint with them). `train --resume` starts Adam again from
    it with a warm-up (`lr_factor`'s restart). Model, step, rate counts, history and RNG stay.
    `half`: the model's floating tensors in fp16, as `export` ships them (half the size again,
    room in a lent machine's carry; a resumed run trains in its own precision from there).
    `base`: a packaged weight file (rgbatch/models/): the model stored as its difference from that
    file's tensors (`weights.delta_tensors`, as a delta file stores it; XOR before session 43) and
    the whole state compressed with xz, which
    `load_checkpoint` undoes; with `half`, a run that trained the decoder alone from the base
    keeps about 4 MB of its 12 (what weights/train-state.pt is since session 24)."""
    if Path(out).exists():
        raise TrainingOptionError("out", f"{out} exists: remove it or choose another")
    state = load_training_state(checkpoint)
    state.update(optimizer=None, scheduler=None)
    if half:
        state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    if base is None:
        save_checkpoint(out, state)
        return state
    try:
        _, base_id, tensors, _ = read_weight_file(base)
    except WeightsError as e:
        raise TrainingOptionError("base", str(e)) from None
    if weights_beside(DEFAULT_WEIGHTS, base_id) is None:
        raise TrainingOptionError("base", f"model {base_id} is not among the packaged models ({DEFAULT_WEIGHTS.parent}), "
                                          "where resuming looks for it")
    stored, kinds = delta_tensors(state["model"], tensors)
    buffer = io.BytesIO()
    torch.save({**state, "model": stored, "model_delta": {"base": base_id, **kinds}}, buffer)
    with NewFile.replacing(out) as f:
        f.write(lzma.compress(buffer.getvalue(), preset=9))
    return state


def data_names(source) -> str:
    """`train/` or `train+photos/`: which data a run used, for a weight file's metadata."""
    sources = source if isinstance(source, (list, tuple)) else [source]
    return "+".join(Path(s).name for s in sources)


def snapshot_path(checkpoint, step: int) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.step{step}.pt")


def export_weights(checkpoint, out, extra=None, average=(), log=None) -> str:
    """Write a training checkpoint's model as a shipped fp16 weight file; returns the model id.

    `average`: more checkpoints or snapshots of the same model; the weights written are the
    mean of all (checkpoint averaging: three snapshots 500 steps apart scored +0.0005 mean
    MS-SSIM over the last alone, on training-set crops)."""
    states = [load_training_state(p) for p in [checkpoint, *average]]
    state = states[0]
    cfg = state["train_config"]
    for other, p in zip(states[1:], average):
        if other["train_config"]["codec"] != cfg["codec"]:
            raise TrainingError(f"{p} is another model ({other['train_config']['codec']}): cannot average")
    model = build_model(cfg.get("architecture"), cfg["codec"])
    model.load_state_dict({k: sum(s["model"][k].float() for s in states) / len(states) for k in state["model"]})
    last_eval = next((h for h in reversed(state["history"]) if "msssim" in h), None)
    info = {"steps": state["step"], "training_hours": round(state["wall_time"] / 3600, 3),
            "patch": cfg["patch"], "batch_size": cfg["batch_size"], "iterations_trained": cfg["iterations"],
            "lr": cfg["lr"], "data": data_names(cfg["data_dir"]),
            # the loss of the last stretch: a model trained with a rate term is made for its coder
            "loss": {k: cfg.get(k) for k in ("loss_weighting", "msssim_weight", "msssim_loss", "rate_weight")},
            # runs evaluate every so many steps (GPU runs not at all): say which step scored this
            "last_eval": last_eval and {"step": last_eval["step"], "msssim": last_eval["msssim"]}}
    if average:
        info["averaged_steps"] = sorted(s["step"] for s in states)
    if state.get("widened"):  # rgbatch.widen: from which width, at which step
        info["widened"] = state["widened"]
    if cfg.get("train_part", "all") != "all":  # a display decoder's file decodes its reference's codes
        info["train_part"] = cfg["train_part"]
    if log and cfg.get("train_part") == "display":
        log("note: a display decoder (--train-part display): this file decodes the codes of the run's reference "
            "model (benchmarks/display_decoder.py); as a codec it would code with itself in the encoder's loop, "
            "other codes than the reference's")
    return save_weights(out, model, extra=extra, info=info)
