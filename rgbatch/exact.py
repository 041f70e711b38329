"""Exact decoding: the Residual-GRU decoder in integer arithmetic, the same pixels on every machine.

A float network rounds differently on another CPU, GPU, thread count or batch (oneDNN picks
another kernel for a batch of one tile than for two), so float decoders give an image that
differs by a few pixel levels here and there from machine to machine. Ballé, Johnston and
Minnen ("Integer Networks for Data Compression with Latent-Variable Models", ICLR 2019) make
the decoder deterministic by computing it in integers. rgbatch does that for its trained
float decoder, with no retraining:

- every value is a multiple of a power of two: weights of 2**-S (S = 24 when they fit, which
  keeps the fp16 weights of a weight file exactly), activations of 2**-F (F = 16), the
  reconstruction of 2**-24;
- the networks compute in float64 on those values, where every product and every partial sum
  is an integer multiple of the grid below 2**52 (checked when the decoder is built, from the
  weights' L1 norms and the activations' bounds): float64 then computes them exactly, in any
  order, with or without FMA, on any device;
- after each convolution the result is rounded to the activation grid (half up), and the GRU
  output clamped to +-64 (the shipped decoder's activations stay below 11);
- sigmoid and tanh are tables of their values at steps of 2**-7, computed once with Python's
  `decimal` (software arithmetic: the same digits everywhere), read with linear interpolation
  in the same exact arithmetic (within 2.1e-5 of the function: 6e-6 of interpolation and
  two roundings to the grid of 1.5e-5);
- the per-iteration gain divides as a multiplication by 1 / gain rounded to 2**-24, also from
  `decimal`.

Decoding uses it by default (`ResidualGRUCodec.set_decoding`); with "exact-loop" the encoder's
loop uses it too, so that the reconstruction it measures (the manifest's MS-SSIM) is the one
every decoder returns. It costs float64: decoding takes 3.2-3.6x the float32 decoder's time on
a CPU (docs/FORMAT.md, "Exact decoding").

    exact = ExactDecoder(model)            # from a float ResidualGRUCodec
    x_hat, hidden = exact.step(bits, t, hidden, x_hat)
"""

from __future__ import annotations

import decimal
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATION_BITS = 16  # activations: multiples of 2**-16
WEIGHT_BITS = 24  # weights: multiples of 2**-24 (every fp16 value is one), fewer where the sums need
OUTPUT_BITS = 24  # the reconstruction: multiples of 2**-24
BOUND = 64.0  # |GRU outputs| <= 64 (clamped); gates, states and their products stay in [-1, 1]
TABLE_BITS = 7  # sigmoid and tanh tabulated at steps of 2**-7 ...
TABLE_RANGE = {"sigmoid": 16, "tanh": 8}  # ... on [-R, R]; beyond, within 2**-17 of +-1 or 0
EXACT_BITS = 52  # every sum a float64 computes stays an integer multiple of its grid below 2**52
COLUMN_BYTES = 64 << 20  # a 3x3 convolution's im2col buffer, at most (ExactConv._banded)


def grid(x: torch.Tensor, bits: int) -> torch.Tensor:
    """x rounded to a multiple of 2**-bits, half up (exact in float64 for |x| < 2**(51 - bits))."""
    return grid_(x.clone(), bits)


def grid_(x: torch.Tensor, bits: int) -> torch.Tensor:
    """`grid` in place, on a temporary."""
    return x.mul_(2.0 ** bits).add_(0.5).floor_().mul_(2.0 ** -bits)


@functools.cache
def table(name: str) -> list[int]:
    """f(k / 2**TABLE_BITS) * 2**ACTIVATION_BITS rounded half to even, k = -R * 2**TABLE_BITS ..
    R * 2**TABLE_BITS: computed in `decimal` at 40 digits, so the same integers on every machine."""
    steps = TABLE_RANGE[name] << TABLE_BITS
    with decimal.localcontext() as ctx:
        ctx.prec, ctx.rounding = 40, decimal.ROUND_HALF_EVEN
        one = decimal.Decimal(1)
        values = []
        for k in range(-steps, steps + 1):
            x = decimal.Decimal(k) / (1 << TABLE_BITS)
            f = one / (one + (-x).exp()) if name == "sigmoid" else one - 2 / ((2 * x).exp() + one)
            values.append(int((f * (1 << ACTIVATION_BITS)).to_integral_value()))
    return values


def inverse_gain(log_gain: float) -> float:
    """1 / exp(log_gain) rounded to 2**-OUTPUT_BITS, in `decimal` (the same on every machine)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 40
        inverse = (-decimal.Decimal(log_gain)).exp() * (1 << OUTPUT_BITS)
    return int(inverse.to_integral_value(decimal.ROUND_HALF_EVEN)) / (1 << OUTPUT_BITS)


class ExactConv:
    """A convolution on the activation grid: weights rounded to 2**-S, bias to the products'
    grid, output rounded to 2**-ACTIVATION_BITS. S is the largest up to WEIGHT_BITS for which
    sum |w| * in_bound + |b| stays below 2**52 on the products' grid."""

    def __init__(self, conv: nn.Conv2d, in_bits: int, in_bound: float):
        weight = conv.weight.detach().to(torch.float64)
        bias = None if conv.bias is None else conv.bias.detach().to(torch.float64)
        worst = (weight.abs().flatten(1).sum(1) * in_bound).max().item()
        worst += 0.0 if bias is None else bias.abs().max().item()
        self.bound = worst  # |outputs| <= this, before rounding
        self.weight_bits = min(WEIGHT_BITS, EXACT_BITS - in_bits - math.ceil(math.log2(worst + 1)))
        if self.weight_bits < 8:
            raise ValueError(f"weights too large for exact decoding (sum |w| x |input| up to {worst:.3g})")
        self.weight = grid(weight, self.weight_bits)
        self.bias = None if bias is None else grid(bias, self.weight_bits + in_bits)
        self.stride, self.padding = conv.stride, conv.padding
        self.pointwise = conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)

    def to(self, device) -> "ExactConv":
        self.weight = self.weight.to(device)
        self.bias = None if self.bias is None else self.bias.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.pointwise:  # a matrix product per image, faster than the im2col convolution
            n, _, height, width = x.shape
            y = torch.matmul(self.weight.flatten(1), x.flatten(2))
            if self.bias is not None:
                y.add_(self.bias[:, None])
            y = y.view(n, -1, height, width)
        else:
            y = self._banded(x)
        return grid_(y, ACTIVATION_BITS)

    def _conv(self, x, padding):
        # cuDNN may pick FFT or Winograd algorithms, whose transforms are not exact: the native
        # convolution (im2col and a float64 GEMM) only multiplies and adds. Asked per call, not by
        # torch.backends.cudnn.flags, which would switch cuDNN off for every thread of the process.
        return torch.ops.aten._convolution(x, self.weight, self.bias, self.stride, padding, (1, 1), False,
                                           (0, 0), 1, False, True, False, False)

    def _banded(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution in bands of output rows: its im2col buffer (input channels x k x k
        values per output pixel, in float64) holds at most COLUMN_BYTES at a time. The same sums."""
        n, channels, height, width = x.shape
        (k, _), (stride, _), (pad, _) = self.weight.shape[-2:], self.stride, self.padding
        out_height, out_width = (height + 2 * pad - k) // stride + 1, (width + 2 * pad - k) // stride + 1
        rows = max(1, COLUMN_BYTES // (n * channels * k * k * out_width * 8))
        if rows >= out_height:
            return self._conv(x, self.padding)
        padded = F.pad(x, (pad, pad, pad, pad))
        y = x.new_empty(n, self.weight.shape[0], out_height, out_width)
        for top in range(0, out_height, rows):
            bottom = min(out_height, top + rows)
            y[:, :, top:bottom] = self._conv(padded[:, :, top * stride:(bottom - 1) * stride + k], (0, 0))
        return y


class ExactGRU:
    """`model.ConvGRU` on the grid: the same equations, every product rounded back to it."""

    def __init__(self, gru, in_bits: int, in_bound: float):
        self.hidden_ch, self.residual = gru.hidden_ch, gru.residual
        self.input_conv = ExactConv(gru.input_conv, in_bits, in_bound)
        self.hidden_gates = ExactConv(gru.hidden_gates, ACTIVATION_BITS, 1.0)
        self.hidden_candidate = ExactConv(gru.hidden_candidate, ACTIVATION_BITS, 1.0)

    def convs(self):
        return self.input_conv, self.hidden_gates, self.hidden_candidate

    def __call__(self, x, h, lookup):
        # the input terms are temporaries: the gates' sums are made in them, in place
        x_update, x_reset, x_candidate, *projection = self.input_conv(x).split(self.hidden_ch, dim=1)
        if h is None:
            h = product(lookup("sigmoid", x_update), lookup("tanh", x_candidate))
        else:
            h_update, h_reset = self.hidden_gates(h).chunk(2, dim=1)
            update = lookup("sigmoid", x_update.add_(h_update))
            reset = lookup("sigmoid", x_reset.add_(h_reset))
            del h_update, h_reset
            candidate = lookup("tanh", x_candidate.add_(self.hidden_candidate(product(reset, h))))
            del reset
            h = h + product(update, candidate.sub_(h))
        out = (h + projection[0]).clamp_(-BOUND, BOUND) if self.residual else h
        return out, h


def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return grid_(a * b, ACTIVATION_BITS)


class ExactDecoder:
    """The decoder of a float `ResidualGRUCodec` on the grid. `step` is one decoder iteration."""

    def __init__(self, model):
        decoder, cfg = model.decoder, model.cfg
        self.conv_in = ExactConv(decoder.conv_in, 0, 1.0)  # codes: -1, 0, +1
        self.in_bound = self.conv_in.bound + 1.0  # its outputs, clamped to that (rounding included)
        bounds = [self.in_bound] + [BOUND] * 3
        self.grus = [ExactGRU(gru, ACTIVATION_BITS, bound) for gru, bound in zip(decoder.grus, bounds)]
        self.conv_out = ExactConv(decoder.conv_out, ACTIVATION_BITS, BOUND)
        self.additive = cfg.reconstruction != "one-shot"
        gains = model.log_gain.detach().tolist() if cfg.reconstruction == "scaled-additive" else [0.0] * len(model.log_gain)
        self.inverse_gains = [inverse_gain(g) for g in gains]
        largest = self.conv_out.bound * max(self.inverse_gains)  # an update, x 1/gain exactly
        if largest >= 2 ** (EXACT_BITS - ACTIVATION_BITS - OUTPUT_BITS):
            raise ValueError(f"decoder outputs too large for exact decoding (up to {largest:.3g})")
        self.tables = {name: torch.tensor(table(name), dtype=torch.float64) * 2.0 ** -ACTIVATION_BITS
                       for name in TABLE_RANGE}
        self.steps = {name: t.diff() for name, t in self.tables.items()}  # to the next entry (exact)

    def to(self, device) -> "ExactDecoder":
        for conv in self.convs():
            conv.to(device)
        self.tables = {name: t.to(device) for name, t in self.tables.items()}
        self.steps = {name: t.to(device) for name, t in self.steps.items()}
        return self

    def convs(self):
        return [self.conv_in, *(c for gru in self.grus for c in gru.convs()), self.conv_out]

    def lookup(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """f(x) for x on the activation grid (consumed: a temporary, overwritten), the table read
        with linear interpolation."""
        values, steps, reach = self.tables[name], self.steps[name], TABLE_RANGE[name]
        position = x.clamp_(-reach, reach).add_(reach).mul_(2.0 ** TABLE_BITS)  # multiples of 2**(TABLE_BITS - 16)
        below = position.floor().clamp_(max=len(values) - 2)
        fraction = position.sub_(below)  # in [0, 1]
        index = below.long()
        del below
        y = steps.take(index).mul_(fraction)
        del fraction
        return grid_(y.add_(values.take(index)), ACTIVATION_BITS)

    @torch.inference_mode()
    def step(self, bits, t: int, hidden: list, x_hat):
        """Iteration t: codes (N, bits, h, w) of -1/0/+1 -> (the reconstruction, float64
        multiples of 2**-24, before clamping; the GRUs' states)."""
        x = self.conv_in(bits.to(torch.float64)).clamp(-self.in_bound, self.in_bound)
        new_hidden = []
        for gru, h in zip(self.grus, hidden):
            x, h = gru(x, h, self.lookup)
            new_hidden.append(h)
            x = F.pixel_shuffle(x, 2)
        update = grid_(self.conv_out(x).mul_(self.inverse_gains[t]), OUTPUT_BITS)
        return (x_hat + update if self.additive and x_hat is not None else update), new_hidden
