"""Widening a trained codec without changing what it computes (Net2WiderNet).

T. Chen, I. Goodfellow, J. Shlens, "Net2Net: Accelerating Learning via Knowledge Transfer",
ICLR 2016.

    wide = widen(model, 0.5)                      # same codes, same images, twice the channels
    widen_state("weights/train-state.pt", "runs/wide.pt", 0.5)    # a training state to resume

A wider model trained from scratch needs the tens of thousands of steps the narrow one had;
a widened copy starts where the narrow one is. Every hidden unit of the wider layer is an old
unit or a copy of one: a copy gets the same incoming weights (every row its unit owns: the
GRU's input terms, its hidden gates and candidate) and so, from the zero state of the first
iteration on, the same value forever; every weight that reads a copied unit (the next layer's
input convolution, the GRU's own hidden convolutions) is split between the copies so that the
parts add up to the old weight. The binarizer's 32 outputs and the decoder's 3 stay as they
are, so the codes, the bit count and the entropy tables stay valid.

The decoder's depth-to-space (`pixel_shuffle(x, 2)`) makes output channel c of channels
4c..4c+3: its GRUs are widened by whole groups of four. Which units are copied is drawn at
random (each as evenly as possible: at width 0.25 -> 0.5 every unit once).

The split is uneven (each part 1/2 +- up to `spread`, per weight) so that the copies get
different gradients and drift apart when trained: the function stays the same. `noise` adds
Gaussian noise (that times each weight tensor's standard deviation) to the copies' incoming
weights; 0, the default, keeps the function.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from .architectures import build_model
from .model import ResidualGRUCodec
from .train import TrainingOptionError, load_training_state, save_checkpoint

SPREAD = 0.2  # each part of a split weight is 1/2 +- up to this (not tuned: any asymmetry trains the copies apart)
MAX_SPREAD = 0.25  # keeps every part's share in (0, 1), so that the parts add up exactly (`_Widener._split`)
FP16_MAX = 65504.0


def widen(model: ResidualGRUCodec, width: float, noise: float = 0.0, seed: int = 0,
          spread: float = SPREAD) -> ResidualGRUCodec:
    """A copy of `model` at channel multiplier `width` (larger than its own) that computes the
    same codes and reconstructions, to float rounding (noise 0). fp32, on the CPU, in the
    model's training mode."""
    if not isinstance(model, ResidualGRUCodec):
        raise ValueError(f"can widen the Residual-GRU codec only, not {type(model).__name__}")
    if not width > model.cfg.width:
        raise ValueError(f"width {width:g} is not larger than the model's {model.cfg.width:g}: widening only adds channels")
    if not 0 <= spread <= MAX_SPREAD:
        raise TrainingOptionError("spread", f"must be in [0, {MAX_SPREAD}], not {spread:g}")
    if not 0 <= noise < math.inf:  # NaN passed `noise < 0` and filled the model with NaN (until session 60)
        raise TrainingOptionError("noise", f"must be at least 0 and finite, not {noise:g}")
    wide = ResidualGRUCodec(replace(model.cfg, width=width))
    with torch.no_grad():
        _Widener(seed, spread, noise).run(model, wide)
    return wide.train(model.training)


class _Widener:
    def __init__(self, seed: int, spread: float, noise: float):
        self.gen = torch.Generator().manual_seed(seed)
        self.spread, self.noise = spread, noise

    def run(self, old: ResidualGRUCodec, new: ResidualGRUCodec):
        # encoder: conv -> GRUs -> binarizer (whose 32 outputs stay)
        units = self.unit_map(old.encoder.conv.out_channels, new.encoder.conv.out_channels)
        self.conv(old.encoder.conv, new.encoder.conv, rows=units)
        for old_gru, new_gru in zip(old.encoder.grus, new.encoder.grus):
            hidden = self.unit_map(old_gru.hidden_ch, new_gru.hidden_ch)
            self.gru(old_gru, new_gru, units, hidden)
            units = hidden
        self.conv(old.binarizer.conv, new.binarizer.conv, columns=units)
        # decoder: conv_in -> (GRU, depth-to-space) x 4 -> conv_out (whose 3 outputs stay)
        units = self.unit_map(old.decoder.conv_in.out_channels, new.decoder.conv_in.out_channels)
        self.conv(old.decoder.conv_in, new.decoder.conv_in, rows=units)
        for old_gru, new_gru in zip(old.decoder.grus, new.decoder.grus):
            groups = self.unit_map(old_gru.hidden_ch // 4, new_gru.hidden_ch // 4)
            self.gru(old_gru, new_gru, units, (4 * groups[:, None] + torch.arange(4)).flatten())
            units = groups  # after depth-to-space, channel c is the group of units 4c..4c+3
        self.conv(old.decoder.conv_out, new.decoder.conv_out, columns=units)
        new.log_gain.copy_(old.log_gain.float())

    def unit_map(self, old: int, new: int) -> torch.Tensor:
        """For each new unit, the old unit it copies: the old units in order, then random copies,
        each old unit copied once before any is copied twice."""
        orders = [torch.arange(old)] + [torch.randperm(old, generator=self.gen) for _ in range(-(-new // old) - 1)]
        return torch.cat(orders)[:new]

    def gru(self, old: nn.Module, new: nn.Module, inputs: torch.Tensor, hidden: torch.Tensor):
        """A ConvGRU whose input channels are `inputs` (new -> old) and hidden units `hidden`."""
        def terms(n):  # the rows of n terms stacked along the output channels
            return torch.cat([t * old.hidden_ch + hidden for t in range(n)])

        self.conv(old.input_conv, new.input_conv, rows=terms(old.input_conv.out_channels // old.hidden_ch), columns=inputs)
        self.conv(old.hidden_gates, new.hidden_gates, rows=terms(2), columns=hidden)
        self.conv(old.hidden_candidate, new.hidden_candidate, rows=hidden, columns=hidden)

    def conv(self, old: nn.Conv2d, new: nn.Conv2d, rows=None, columns=None):
        """Copy the rows (output channels) of copied units, split the columns (input channels)
        that read them."""
        weight = old.weight.float()
        if rows is not None:
            weight = weight[rows]
        if columns is not None:
            counts = torch.bincount(columns, minlength=weight.shape[1]).tolist()
            parts = [self._split(weight[:, j], k) for j, k in enumerate(counts)]
            weight = torch.stack([parts[j][r] for j, r in zip(columns.tolist(), _occurrence(columns))], dim=1)
        if self.noise and rows is not None:
            copies = torch.tensor(_occurrence(rows)) > 0
            weight[copies] += self.noise * old.weight.float().std() * torch.randn(weight[copies].shape, generator=self.gen)
        new.weight.copy_(weight)
        if old.bias is not None:
            new.bias.copy_(old.bias.float() if rows is None else old.bias.float()[rows])

    def _split(self, w: torch.Tensor, k: int) -> list[torch.Tensor]:
        """k parts that add up to w exactly, in halvings: the larger part (share >= 1/2) is
        rounded to the fp16 grid and the other is the difference. In fp32 that difference is
        exact, and when w is an fp16 value (as the shipped file's weights are) both parts are
        fp16 values too (Sterbenz's lemma), so an fp16 export keeps the sums (|w| < 65504)."""
        if k == 1:
            return [w]
        left = (k + 1) // 2
        share = left / k + self.spread * torch.rand(w.shape, generator=self.gen)
        larger = w * share
        larger = torch.where(larger.abs() < FP16_MAX, larger.half().float(), larger)
        smaller = w - larger
        if 2 * left == k:  # equal halves: either copy may take the larger part
            swap = torch.rand(w.shape, generator=self.gen) < 0.5
            larger, smaller = torch.where(swap, smaller, larger), torch.where(swap, larger, smaller)
        return self._split(larger, left) + self._split(smaller, k - left)


def _occurrence(index: torch.Tensor) -> list[int]:
    """For each position, how many earlier positions hold the same value (0: the original)."""
    seen: dict[int, int] = {}
    ranks = []
    for value in index.tolist():
        ranks.append(seen.get(value, 0))
        seen[value] = ranks[-1] + 1
    return ranks


def widen_state(checkpoint, out, width: float, noise: float = 0.0, seed: int = 0, spread: float = SPREAD) -> dict:
    """A training state (`rgbatch.train`) whose model is `checkpoint`'s widened to `width`, written
    to `out` for `rgbatch train --width <width> --resume` (docs/TRAINING.md, "Widening").

    The model is first rounded to fp16, as `rgbatch export` writes it: the wide run starts from
    the function that was shipped and measured, and an fp16 export of the new state before any
    training is that function again (the same codes: the entropy tables stay valid).
    Kept: the step (the cosine schedule goes on), the rate term's counts (the codes are the
    same), history, RNG. New: Adam. Its moments cannot be widened with the weights, so the state
    holds none, and `train` starts Adam again with a warm-up of `warmup` steps from this step."""
    out = Path(out)
    if out.exists():
        raise TrainingOptionError("out", f"{out} exists: remove it or choose another")
    state = load_training_state(checkpoint)
    cfg = state["train_config"]
    model = build_model(cfg.get("architecture"), cfg["codec"])
    model.load_state_dict({k: v.half().float() for k, v in state["model"].items()})
    wide = widen(model, width, noise=noise, seed=seed, spread=spread)
    record = {"step": state["step"], "from_width": model.cfg.width, "width": width, "seed": seed, "spread": spread,
              "noise": noise}
    state.update(train_config={**cfg, "codec": {**cfg["codec"], "width": width}}, model=wide.state_dict(),
                 optimizer=None, scheduler=None, widened=[*(state.get("widened") or []), record])
    save_checkpoint(out, state)
    return state


__all__ = ["widen", "widen_state"]
