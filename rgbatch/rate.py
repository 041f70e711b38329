"""The context coder's code length as a differentiable training term.

    rate = ContextRate.from_weights("rgbatch/models/default.safetensors")
    bits_per_bit = rate(codes)              # (T,): mean code length per bit of each iteration
    rate.update(codes)                      # count this batch into the tables
    bits_per_bit = rate(codes, count=True)  # both, the contexts found once (training)

The codes of this codec are not free to be anything: a bit costs -log2 P(bit | context)
under the context coder (`rgbatch.entropy`), which looks up P from K already-coded bits
chosen per (iteration, checkerboard colour, channel). This module computes that code
length in torch, with the coder's own features, so that training can trade distortion
for predictable codes (Toderici et al. 2017 and Johnston et al. 2018 trained their
entropy models after the codec; putting the rate in the loss is the step that makes the
codes themselves cheaper, as in the rate-distortion training of Ballé et al. 2017).

The gradient reaches each coded bit through the binarizer's straight-through estimate:
d length / d bit = log2((1 - p) / p) / 2 pushes a bit towards the value its context
predicts. The context bits themselves get no gradient (they index a table).

The probabilities follow the codes as training changes them: counts from every batch,
decayed exponentially, smoothed towards the tables the run started from. They are part of
the training checkpoint; the shipped tables are refitted afterwards by `rgbatch
fit-entropy`, which also re-selects the context features for the new codes.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from .context import GUTTER, MAX_LOOKBACK, PROBABILITY_BITS, ContextModel, ContextModelError, context_index

MIN_PROBABILITY = 2.0 ** -10  # keeps the gradient log2((1-p)/p) within +-10 bits


class ContextRate:
    """Code length of +-1 codes (T, N, bits, h, w) under counted context tables."""

    def __init__(self, features: torch.Tensor, probabilities: torch.Tensor, decay: float = 0.998,
                 prior: float = 4.0):
        self.features = torch.as_tensor(features).long()  # (T, 2, bits, K, 4): dt, channel, dy, dx
        self.initial = torch.as_tensor(probabilities).double() / 2 ** PROBABILITY_BITS  # (T, 2, bits, 2**K)
        self.decay, self.prior = decay, prior
        self.ones = torch.zeros_like(self.initial)  # decayed counts of 1 bits per table entry
        self.seen = torch.zeros_like(self.initial)  # decayed counts of all bits

    @classmethod
    def from_weights(cls, path=None, **kwargs) -> "ContextRate":
        from .weights import read_weight_file

        # the tables only: building the model would also draw from torch's random generator
        _, _, tensors, _ = read_weight_file(path)
        try:
            return ContextModel.from_tensors(tensors).rate(**kwargs)
        except ContextModelError as e:
            raise ContextModelError(f"{path or 'the default weights'}: {e} (the rate term starts from it)") from None

    @property
    def probabilities(self) -> torch.Tensor:
        """P(bit = 1) per table entry: the counts, pulled towards the starting tables."""
        p = (self.ones + self.prior * self.initial) / (self.seen + self.prior)
        return p.clamp(MIN_PROBABILITY, 1 - MIN_PROBABILITY)

    def _table_index(self, bits01: torch.Tensor) -> torch.Tensor:
        """Flat table index of every bit, (T, bits, h, w, N), from 0/1 codes (T, N, bits, h, w).

        The contexts are the coder's (`context.context_index`), read from a canvas on which
        every patch is one tile: a gutter of zeros around it, as the coder's canvas has (so
        positions outside the patch read 0), and iterations before the first read 0 too.
        Colour = (row + column) parity within the patch."""
        iterations, n, bits, h, w = bits01.shape
        if iterations > self.features.shape[0] or bits != self.features.shape[2]:
            raise ValueError(f"the context tables cover {self.features.shape[0]} iterations of "
                             f"{self.features.shape[2]} bits, not {iterations} of {bits}")
        arange = partial(torch.arange, device=bits01.device)
        canvas = F.pad(bits01.bool(), (GUTTER,) * 4)  # (T, N, bits, h + 2, w + 2)
        canvas = torch.cat([canvas.new_zeros(MAX_LOOKBACK, *canvas.shape[1:]), canvas])
        canvas = canvas.transpose(1, 2).reshape(MAX_LOOKBACK + iterations, bits, -1)  # patch after patch
        width, patch = w + 2 * GUTTER, (h + 2 * GUTTER) * (w + 2 * GUTTER)
        # every position in the layout of the index: (row, column, patch)
        positions = ((arange(h)[:, None, None] + GUTTER) * width + arange(w)[:, None] + GUTTER + arange(n) * patch)
        features = self.features[:iterations].to(bits01.device)  # (T, 2, bits, K, 4)
        k = features.shape[3]
        # both colours' features at every position (T x 2 x bits feature sets at once), then each
        # position keeps its own colour's
        t = arange(iterations).repeat_interleave(2 * bits)[:, None]
        context = context_index(canvas, width, t, features.reshape(-1, k, 4), positions.flatten())
        context = context.view(iterations, 2, bits, h, w, n)
        colour = ((arange(h)[:, None] + arange(w)) % 2).view(1, 1, 1, h, w, 1)
        context = torch.where(colour.bool(), context[:, 1:2], context[:, 0:1]).squeeze(1)  # (T, bits, h, w, N)
        table = (arange(iterations)[:, None, None, None, None] * 2 + colour.squeeze(1)) * bits \
            + arange(bits)[None, :, None, None, None]
        return table * 2 ** k + context

    def __call__(self, codes: torch.Tensor, count: bool = False) -> torch.Tensor:
        """Mean code length in bits per bit of each iteration, (T,), differentiable in `codes`,
        under the tables as they are; with `count`, then also `update` them with these codes."""
        bits01 = (codes.float() + 1) / 2
        index = self._table_index(bits01.detach().round().to(self.seen.device))
        p = self.probabilities.flatten()[index].to(codes.device, torch.float32)
        bit = bits01.permute(0, 2, 3, 4, 1)  # the layout of `index`
        length = -(bit * torch.log2(p) + (1 - bit) * torch.log2(1 - p))
        if count:
            self._count(index, bit.detach().round().to(self.seen.device))
        return length.flatten(1).mean(1)

    @torch.no_grad()
    def update(self, codes: torch.Tensor):
        """Decay the counts and add the bits of `codes`."""
        bits01 = ((codes.float() + 1) / 2).round().to(self.seen.device)
        self._count(self._table_index(bits01), bits01.permute(0, 2, 3, 4, 1))

    @torch.no_grad()
    def _count(self, index: torch.Tensor, bits01: torch.Tensor):
        """Decay the counts and add 0/1 bits at their table indices (both in `_table_index`'s layout)."""
        size = self.seen.numel()
        self.seen.mul_(self.decay).add_(torch.bincount(index.flatten(), minlength=size).view_as(self.seen))
        ones = torch.bincount(index.flatten(), weights=bits01.flatten().double(), minlength=size)
        self.ones.mul_(self.decay).add_(ones.view_as(self.ones))

    def to(self, device) -> "ContextRate":
        """Keep the tables and counts on `device` (the training device: the contexts of a
        GPU batch are then gathered and counted there)."""
        self.features, self.initial, self.ones, self.seen = (
            t.to(device) for t in (self.features, self.initial, self.ones, self.seen))
        return self

    def state_dict(self) -> dict:
        # float32 on disk halves a checkpoint's tables (the counts need no more precision
        # than a price does); counting itself stays in float64 so small decayed counts add exactly
        tables = {name: getattr(self, name).float().cpu() for name in ("initial", "ones", "seen")}
        return {"features": self.features.cpu(), **tables, "decay": self.decay, "prior": self.prior}

    @classmethod
    def from_state_dict(cls, state: dict) -> "ContextRate":
        rate = cls(state["features"], torch.zeros_like(state["initial"]), state["decay"], state["prior"])
        rate.initial, rate.ones, rate.seen = (state[name].double() for name in ("initial", "ones", "seen"))
        return rate
