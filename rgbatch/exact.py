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
  two roundings to the grid of 1.5e-5); the interpolated values at every point of the grid
  are tabulated once, in integers (`fine_table`), so a lookup is one read;
- the per-iteration gain divides as a multiplication by 1 / gain rounded to 2**-24, also from
  `decimal`.

Decoding uses it by default (`ResidualGRUCodec.set_decoding`); with "exact-loop" the encoder's
loop uses it too, so that the reconstruction it measures (the manifest's MS-SSIM) is the one
every decoder returns. Within a step the activations are held in units of their grid (the
integers x * 2**16, in float64), so that a rounding is one floor; the convolutions are float64
matrix products on bands of rows. It costs float64 all the same: decoding takes 1.7-3.3x the
float32 decoder's time on a CPU (docs/FORMAT.md, "Exact decoding").

    exact = ExactDecoder(model)            # from a float ResidualGRUCodec
    x_hat, hidden = exact.step(bits, t, hidden, x_hat)
"""

from __future__ import annotations

import decimal
import functools
import math

import numpy as np
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
COLUMN_BYTES = 8 << 20  # a 3x3 convolution's im2col buffer, at most (ExactConv.__call__)
BAND_BYTES = 16 << 20  # a GRU's input terms for a band of rows, at most (ExactGRU.__call__)


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


def fine_table(name: str) -> np.ndarray:
    """`table` read with linear interpolation at every point of the activation grid in [-R, R]
    and rounded back to it (half up), in units of the grid: entry j is f(j / 2**16 - R) * 2**16.
    A lookup is then one read (2**17 R + 1 entries: 16 MiB for sigmoid, 8 for tanh, in float64)."""
    coarse = np.array(table(name), dtype=np.int64)
    shift = ACTIVATION_BITS - TABLE_BITS  # grid points between two entries: 2**shift
    j = np.arange((TABLE_RANGE[name] << (ACTIVATION_BITS + 1)) + 1, dtype=np.int64)
    below = np.minimum(j >> shift, len(coarse) - 2)
    fraction = j - (below << shift)  # 0 .. 2**shift: the last entry is the end of the last step
    steps = coarse[below + 1] - coarse[below]
    values = coarse[below] + ((steps * fraction + (1 << (shift - 1))) >> shift)
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
    sum |w| * in_bound + |b| stays below 2**52 on the products' grid. Stride 1, 'same' padding
    (the decoder's convolutions).

    It computes in units of the grids (`ExactDecoder`): its input is x * 2**in_bits, its output
    y * 2**ACTIVATION_BITS, integers held in float64."""

    def __init__(self, conv: nn.Conv2d, in_bits: int, in_bound: float):
        k = conv.kernel_size[0]
        if conv.kernel_size != (k, k) or conv.stride != (1, 1) or conv.padding != (k // 2, k // 2) \
                or conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError("exact decoding computes stride-1 convolutions with 'same' padding only")
        weight = conv.weight.detach().to(torch.float64)
        bias = None if conv.bias is None else conv.bias.detach().to(torch.float64)
        worst = (weight.abs().flatten(1).sum(1) * in_bound).max().item()
        worst += 0.0 if bias is None else bias.abs().max().item()
        self.bound = worst  # |outputs| <= this, before rounding
        self.weight_bits = min(WEIGHT_BITS, EXACT_BITS - in_bits - math.ceil(math.log2(worst + 1)))
        if self.weight_bits < 8 or self.weight_bits + in_bits <= ACTIVATION_BITS:
            raise ValueError(f"weights too large for exact decoding (sum |w| x |input| up to {worst:.3g})")
        self.weight = grid(weight, self.weight_bits)
        self.bias = None if bias is None else grid(bias, self.weight_bits + in_bits)
        self.kernel, self.in_bits = k, in_bits
        self._matrix()

    def _matrix(self):
        # one matrix per row of taps dy, its columns in `_columns`' order: taps dx, then channels;
        # in units (outputs in 2**-16 for inputs in 2**-in_bits, exact: powers of two), the bias
        # with the half of the rounding to the grid (floor(y + 1/2): `grid_`'s half up)
        unit = 2.0 ** (ACTIVATION_BITS - self.in_bits)
        self.matrices = [(self.weight[:, :, dy] * unit).permute(0, 2, 1).flatten(1).contiguous()
                         for dy in range(self.kernel)]
        bias = 0.5 if self.bias is None else self.bias * 2.0 ** ACTIVATION_BITS + 0.5
        self.column_bias = torch.as_tensor(bias, dtype=torch.float64, device=self.weight.device).reshape(-1, 1)

    def to(self, device) -> "ExactConv":
        self.weight = self.weight.to(device)
        self.bias = None if self.bias is None else self.bias.to(device)
        self._matrix()
        return self

    def __call__(self, x: torch.Tensor, first: int = 0, last: int | None = None) -> torch.Tensor:
        """Output rows first..last (default all) of the convolution of x, zeros beyond x's
        edges. Float64 matrix products on an im2col of the horizontal taps, one per row of taps,
        image by image and in bands of output rows: a band's columns (k x input channels values
        per pixel and row) hold at most COLUMN_BYTES, and the products add straight into the
        output. (cuDNN's convolutions may use FFT or Winograd transforms, which are not exact:
        this only multiplies and adds.)"""
        n, channels, height, width = x.shape
        last = height if last is None else last
        k, outputs = self.kernel, self.matrices[0].shape[0]
        y = x.new_empty(n, outputs, last - first, width)
        rows = height if k == 1 else max(1, COLUMN_BYTES // (k * channels * width * 8) - k + 1)
        for i in range(n):
            for top in range(first, last, rows):
                bottom = min(last, top + rows)
                out = y[i, :, top - first:bottom - first].view(outputs, -1)
                columns = self._columns(x[i], top, bottom)  # (k * channels, (rows + k - 1) * width)
                for dy, matrix in enumerate(self.matrices):
                    taps = columns[:, dy * width:(dy + bottom - top) * width]
                    if dy:
                        out.addmm_(matrix, taps)
                    else:
                        torch.addmm(self.column_bias, matrix, taps, out=out)
        return y.floor_()

    def _columns(self, x: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        """The horizontal taps of the input rows that output rows top..bottom read, of one image
        (channels, height, width): (k * channels, (rows + k - 1) * width), zeros beyond the
        image's edges; row of taps dy reads columns dy * width onwards."""
        k, pad = self.kernel, self.kernel // 2
        channels, height, width = x.shape
        if k == 1:
            return x[:, top:bottom].reshape(channels, -1)
        first, last = max(0, top - pad), min(height, bottom + pad)
        band = F.pad(x[:, first:last], (pad, pad, first - (top - pad), bottom + pad - last))
        # taps dx x channels x rows x columns, as a strided view of the padded band
        c_stride, r_stride, _ = band.stride()
        taps = band.as_strided((k, channels, band.shape[1], width), (1, c_stride, r_stride, 1))
        return taps.reshape(k * channels, -1)


class ExactGRU:
    """`model.ConvGRU` on the grid: the same equations, every product rounded back to it (in
    units of the activation grid, as `ExactDecoder` computes)."""

    def __init__(self, gru, in_bits: int, in_bound: float):
        self.hidden_ch, self.residual = gru.hidden_ch, gru.residual
        self.input_conv = ExactConv(gru.input_conv, in_bits, in_bound)
        self.hidden_gates = ExactConv(gru.hidden_gates, ACTIVATION_BITS, 1.0)
        self.hidden_candidate = ExactConv(gru.hidden_candidate, ACTIVATION_BITS, 1.0)

    def convs(self):
        return self.input_conv, self.hidden_gates, self.hidden_candidate

    def __call__(self, x, h, lookup):
        """(output, new state) from input x and state h (None: zero), in bands of output rows:
        the temporaries of a band hold at most BAND_BYTES, which bounds the step's memory by its
        inputs and outputs. A band computes its reset gates one row beyond its edges where the
        state's convolutions are 3x3 (the candidate's convolution reads them)."""
        n, _, height, width = x.shape
        out = x.new_empty(n, self.hidden_ch, height, width)
        new_h = out if not self.residual else x.new_empty(n, self.hidden_ch, height, width)
        halo = 0 if h is None else self.hidden_candidate.kernel // 2
        rows = max(1, BAND_BYTES // (n * 4 * self.hidden_ch * width * 8) - 2 * halo)
        for top in range(0, height, rows):
            bottom = min(height, top + rows)
            self._band(x, h, lookup, top, bottom, halo, new_h[:, :, top:bottom], out[:, :, top:bottom])
        return out, new_h

    def _band(self, x, h, lookup, top, bottom, halo, new_h, out):
        first, last = max(0, top - halo), min(x.shape[2], bottom + halo)  # the rows the gates need
        inner = slice(top - first, bottom - first)  # the band's own rows among them
        # the input terms are temporaries: the gates' sums are made in them, in place
        x_update, x_reset, x_candidate, *projection = self.input_conv(x, first, last).split(self.hidden_ch, dim=1)
        if h is None:
            product(lookup("sigmoid", x_update), lookup("tanh", x_candidate), out=new_h)
        else:
            h_update, h_reset = self.hidden_gates(h, first, last).chunk(2, dim=1)
            reset = lookup("sigmoid", x_reset.add_(h_reset))
            del h_reset
            # the candidate's convolution on the reset state of rows first..last: zeros beyond
            # them, which is the image's edge wherever the band did not take a row more
            reset_h = product(reset, h[:, :, first:last])
            del reset
            candidate = lookup("tanh", x_candidate[:, :, inner].add_(
                self.hidden_candidate(reset_h, top - first, bottom - first)))
            del reset_h
            update = lookup("sigmoid", x_update[:, :, inner].add_(h_update[:, :, inner]))
            del h_update
            h_band = h[:, :, top:bottom]
            torch.add(h_band, product(update, candidate.sub_(h_band)), out=new_h)
        if self.residual:
            torch.add(new_h, projection[0][:, :, inner], out=out).clamp_(-UNITS_BOUND, UNITS_BOUND)


UNIT = 2.0 ** ACTIVATION_BITS  # an activation x is held as the integer x * UNIT
UNITS_BOUND = BOUND * UNIT


def product(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """a * b rounded to the activation grid (half up), in units: floor(a * b / 2**16 + 1/2), the
    product and the half in one pass (exact: a * b is an integer below 2**35); into `out` if given."""
    return torch.addcmul(_half(a.device), a, b, value=1 / UNIT, out=out).floor_()


@functools.lru_cache(maxsize=None)
def _half(device: torch.device) -> torch.Tensor:
    """0.5 on `device`, made once per device (not a host-to-device copy per product on a GPU)."""
    return torch.tensor(0.5, dtype=torch.float64, device=device)


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
        self.tables = {name: torch.from_numpy(fine_table(name).astype(np.float64)) for name in TABLE_RANGE}

    def to(self, device) -> "ExactDecoder":
        for conv in self.convs():
            conv.to(device)
        self.tables = {name: t.to(device) for name, t in self.tables.items()}
        return self

    def convs(self):
        return [self.conv_in, *(c for gru in self.grus for c in gru.convs()), self.conv_out]

    def lookup(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """f(x) for x on the activation grid, in units (consumed: a temporary, overwritten): one
        entry of `fine_table`, whose entries are the interpolated table's values at every grid point."""
        reach = TABLE_RANGE[name] * UNIT
        index = x.clamp_(-reach, reach).add_(reach).int()  # int32: faster to make and to read than int64
        return self.tables[name].index_select(0, index.reshape(-1)).view(index.shape)  # faster than take

    @torch.inference_mode()
    def step(self, bits, t: int, hidden: list, x_hat):
        """Iteration t: codes (N, bits, h, w) of -1/0/+1 -> (the reconstruction, float64
        multiples of 2**-24, before clamping; the GRUs' states, multiples of 2**-16). Within, the
        activations are held in units of their grid (integers: x * 2**16), which saves the
        scalings of every rounding."""
        x = self.conv_in(bits.to(torch.float64)).clamp_(-self.in_bound * UNIT, self.in_bound * UNIT)
        new_hidden = []
        for gru, h in zip(self.grus, hidden):
            x, h = gru(x, None if h is None else h * UNIT, self.lookup)
            new_hidden.append(h * (1 / UNIT))
            x = F.pixel_shuffle(x, 2)
        update = grid_(self.conv_out(x).mul_(self.inverse_gains[t] / UNIT), OUTPUT_BITS)
        return (x_hat + update if self.additive and x_hat is not None else update), new_hidden
