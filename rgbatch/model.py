"""The Residual-GRU image codec.

G. Toderici, D. Vincent, N. Johnston, S. J. Hwang, D. Minnen, J. Shor, M. Covell,
"Full Resolution Image Compression with Recurrent Neural Networks", CVPR 2017.

An encoder and a decoder made of convolutional GRUs, with a binarizer between them.
Iteration t encodes the residual r[t-1] = x - x_hat[t-1] into 32 bits per 16x16 block
(0.125 bpp); the decoder turns the bits of iteration t into an update of the
reconstruction. Both keep their GRU state across iterations, so the bits of one
iteration only carry what the decoder does not know yet.

Layer table (paper widths, `width=1.0`):

    encoder  conv 3x3/2 64 -> GRU 256 (3x3/2, hidden 1x1) -> GRU 512 (same) -> GRU 512 (same)
    binarize conv 1x1 32, tanh, sign
    decoder  conv 1x1 512 -> GRU 512 (hidden 1x1) -> d2s -> GRU 512 (hidden 1x1) -> d2s
             -> GRU 256 (hidden 3x3) -> d2s -> GRU 128 (hidden 3x3) -> d2s -> conv 1x1 3

Images enter as float tensors in [-0.5, 0.5], shape (N, 3, H, W), H and W multiples of 32
(`rgbatch.tiling` pads any image to that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import JsonConfig
from .options import OptionError

BLOCK = 16  # one code position per 16x16 pixel block
ALIGN = 32  # the spatial size the network needs (its strides multiply to 16, d2s needs even)
RECONSTRUCTIONS = ("one-shot", "additive", "scaled-additive")
# the decoder's arithmetic (`set_decoding`): in decoding / in the encoder's loop
DECODINGS = ("exact", "exact-loop", "float")  # exact / float, exact / exact, float / float
SEARCH_LR = 0.1  # Adam step of the bit search (of 0.1 and 0.3 on Kodak crops, 0.1 was better)


@dataclass(frozen=True)
class CodecConfig(JsonConfig):
    width: float = 0.25  # channel multiplier; 1.0 is the paper's model (0.25 ships, see the model card)
    bits: int = 32  # binarizer channels = bits per 16x16 block per iteration
    max_iterations: int = 16
    # x_hat[t] = D(b[t]) (one-shot), x_hat[t-1] + D(b[t]) (additive), or additive with a
    # learned per-iteration gain g[t] that scales the residual up before encoding and the
    # decoder output down after decoding, so late, small residuals reach the networks at
    # full scale (the paper's "scaled-additive").
    reconstruction: str = "scaled-additive"
    residual_gru: bool = True  # output = GRU state + projection of the input ("Residual GRU")

    def __post_init__(self):
        if self.reconstruction not in RECONSTRUCTIONS:
            raise OptionError("reconstruction", f"must be one of {', '.join(RECONSTRUCTIONS)}, not {self.reconstruction!r}")
        if not 0 < self.width <= 4:
            raise OptionError("width", f"must be in (0, 4], not {self.width}")
        if not 1 <= self.max_iterations <= 255:  # a stream's header counts its iterations in a byte
            raise OptionError("max_iterations", f"must be 1..255, not {self.max_iterations}")

    @property
    def block(self) -> int:
        """Pixels per code position along a side (a 16x16 block holds `bits` bits per iteration)."""
        return BLOCK

    @property
    def align(self) -> int:
        """The multiple of this the network's inputs must be, in height and width."""
        return ALIGN

    def channels(self, paper_channels: int) -> int:
        """Scaled channel count, a multiple of 8 so that depth-to-space stays even."""
        return max(8, int(round(paper_channels * self.width / 8)) * 8)


class ConvGRU(nn.Module):
    """Convolutional GRU; with `residual`, its output adds a projection of the input."""

    def __init__(self, in_ch, hidden_ch, kernel=3, stride=1, hidden_kernel=1, residual=True):
        super().__init__()
        self.hidden_ch = hidden_ch
        self.stride = stride
        self.residual = residual
        # One convolution computes every input term: update, reset, candidate (+ residual).
        n_terms = 4 if residual else 3
        self.input_conv = nn.Conv2d(in_ch, n_terms * hidden_ch, kernel, stride, kernel // 2)
        self.hidden_gates = nn.Conv2d(hidden_ch, 2 * hidden_ch, hidden_kernel, 1, hidden_kernel // 2, bias=False)
        self.hidden_candidate = nn.Conv2d(hidden_ch, hidden_ch, hidden_kernel, 1, hidden_kernel // 2, bias=False)

    def forward(self, x, h):
        terms = self.input_conv(x).split(self.hidden_ch, dim=1)
        x_update, x_reset, x_candidate = terms[:3]
        if h is None:  # first iteration: zero state, skip its convolutions
            update = torch.sigmoid(x_update)
            h = update * torch.tanh(x_candidate)
        else:
            h_update, h_reset = self.hidden_gates(h).chunk(2, dim=1)
            update = torch.sigmoid(x_update + h_update)
            reset = torch.sigmoid(x_reset + h_reset)
            candidate = torch.tanh(x_candidate + self.hidden_candidate(reset * h))
            h = h + update * (candidate - h)
        out = h + terms[3] if self.residual else h
        return out, h


class Encoder(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        c, r = cfg.channels, cfg.residual_gru
        self.conv = nn.Conv2d(3, c(64), 3, 2, 1)
        self.grus = nn.ModuleList([
            ConvGRU(c(64), c(256), 3, 2, 1, r),
            ConvGRU(c(256), c(512), 3, 2, 1, r),
            ConvGRU(c(512), c(512), 3, 2, 1, r),
        ])

    def forward(self, x, state):
        x = self.conv(x)
        new_state = []
        for gru, h in zip(self.grus, state):
            x, h = gru(x, h)
            new_state.append(h)
        return x, new_state


class Binarizer(nn.Module):
    """1x1 conv to `bits` channels and tanh, then +-1: stochastic with a straight-through
    gradient while training (P(+1) = (1 + x) / 2), the sign at inference (0 maps to +1).
    `stochastic = False` trains on the signs inference sends (straight-through as well)."""

    stochastic = True

    def __init__(self, in_ch, bits):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, bits, 1, bias=False)

    def forward(self, x):
        x = torch.tanh(self.conv(x))
        if self.training and self.stochastic:
            bits = torch.where(torch.rand_like(x) < (1 + x) / 2, 1.0, -1.0)
        else:
            bits = torch.where(x >= 0, 1.0, -1.0)
        return x + (bits - x).detach() if self.training else bits.to(x.dtype)


class Decoder(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        c, r = cfg.channels, cfg.residual_gru
        self.conv_in = nn.Conv2d(cfg.bits, c(512), 1)
        # Each GRU is followed by depth-to-space x2, which divides its channels by 4.
        self.grus = nn.ModuleList([
            ConvGRU(c(512), c(512), 3, 1, 1, r),
            ConvGRU(c(512) // 4, c(512), 3, 1, 1, r),
            ConvGRU(c(512) // 4, c(256), 3, 1, 3, r),
            ConvGRU(c(256) // 4, c(128), 3, 1, 3, r),
        ])
        self.conv_out = nn.Conv2d(c(128) // 4, 3, 1)

    def forward(self, bits, state):
        x = self.conv_in(bits)
        new_state = []
        for gru, h in zip(self.grus, state):
            x, h = gru(x, h)
            new_state.append(h)
            x = F.pixel_shuffle(x, 2)
        return self.conv_out(x), new_state


class DecoderState(NamedTuple):
    """Where a decoding stands (`ResidualGRUCodec.decode_from`): the reconstruction before clamping
    (float32), the decoder GRUs' hidden states, and the number of iterations decoded."""

    x_hat: torch.Tensor | None
    hidden: list
    iterations: int


class ResidualGRUCodec(nn.Module):
    """The codec. `forward` trains; `encode` / `decode` work on code tensors of +-1.

    Codes have shape (iterations, N, bits, H/16, W/16). `rgbatch.codec` turns them into bytes.
    """

    architecture = "residual-gru"  # its name in the architecture registry (rgbatch.architectures)
    Config = CodecConfig

    def __init__(self, cfg: CodecConfig = CodecConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.binarizer = Binarizer(cfg.channels(512), cfg.bits)
        self.decoder = Decoder(cfg)
        # log of the per-iteration gain of scaled-additive reconstruction. Starts at the rate at
        # which the paper's residuals shrink (about 1 + t/2 after t iterations).
        init = torch.log1p(0.5 * torch.arange(cfg.max_iterations, dtype=torch.float32))
        self.log_gain = nn.Parameter(init, requires_grad=cfg.reconstruction == "scaled-additive")
        # inputs reach the networks in their dtype and layout; by default as they come (training
        # passes channels-last tensors for bf16 autocast)
        self.net_dtype, self.net_layout = torch.float32, torch.preserve_format
        self.exact = None  # the decoder in exact arithmetic, where `set_decoding` asks for it
        self.exact_loop = False  # the encoder's loop runs it too

    def set_decoding(self, decoding: str) -> "ResidualGRUCodec":
        """How the decoder computes: "exact" (`decode` / `decode_from` in `rgbatch.exact`'s
        integer arithmetic, the same reconstruction on every machine; the encoder's own loop in
        the networks' precision, 1.3-2.2x faster on a CPU), "exact-loop" (the encoder's loop exact
        too: it measures exactly what `decode` returns) or "float" (both in the networks'
        precision, as training does). Set it before `set_precision` lowers the weights to
        bfloat16; the exact decoder follows the model on `to`."""
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, not {decoding!r}")
        lowered = {p.dtype for p in self.decoder.parameters()} - {torch.float32}
        if decoding != "float" and lowered:  # built from rounded weights, it decoded other pixels (until session 63)
            raise OptionError("decoding", f"is {decoding!r} of a model whose decoder is already {lowered.pop()}: the "
                                          f"exact decoder is built from the float32 weights (load them again)")
        from .exact import ExactDecoder
        self.exact = None if decoding == "float" else ExactDecoder(self).to(self.log_gain.device)
        self.exact_loop = decoding == "exact-loop"
        return self

    @property
    def decoding(self) -> str:
        return "float" if self.exact is None else "exact-loop" if self.exact_loop else "exact"

    def to(self, *args, **kwargs):
        super().to(*args, **kwargs)
        if self.exact is not None:
            self.exact.to(self.log_gain.device)
        return self

    def set_precision(self, dtype: torch.dtype) -> "ResidualGRUCodec":
        """Run the networks in `dtype`. bfloat16 goes with the channels-last layout, which
        oneDNN needs for its fast bf16 convolutions (2.2x fp32 on CPUs with native bf16;
        bf16 in the default layout is slower than fp32). Gains and the reconstruction stay
        float32, so the sum of 16 small updates keeps its precision."""
        self.net_dtype = dtype
        self.net_layout = torch.preserve_format if dtype == torch.float32 else torch.channels_last
        for network in (self.encoder, self.binarizer, self.decoder):
            network.to(dtype=dtype, memory_format=self.net_layout)
        return self

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype=self.net_dtype, memory_format=self.net_layout)

    def gain(self, t: int) -> torch.Tensor | float:
        return self.log_gain[t].exp() if self.cfg.reconstruction == "scaled-additive" else 1.0

    def _blank_state(self):
        return [None] * 3, [None] * 4

    def _exact_in_loop(self, asked: bool | None) -> bool:
        """Whether the encoder's loop runs the exact decoder: as `set_decoding` says, or as a call
        asks (`iterate`'s `exact_loop`), where there is one."""
        return self.exact is not None and (self.exact_loop if asked is None else asked)

    def _step(self, residual, t, enc_state, dec_state, x_hat, active=None, freeze: bool = False,
              encoder_grad: bool = True, exact_loop: bool | None = None):
        """One iteration: code the residual, decode the bits. Returns the bits and the
        reconstruction after them (`x_hat`: the one before), in the encoder loop's arithmetic
        (`set_decoding`; `freeze` computes in float). Without `encoder_grad` the encoder and
        binarizer run without autograd (training the decoder alone: the same values, no
        gradient through the codes).

        `active` (N, 1, H/16, W/16) of 0/1, optional: blocks that still send bits. A stopped
        block's bits are 0, the value that carries no sign; the decoder goes on updating its
        pixels from what it knows, unless `freeze` keeps them as they are (measured worse:
        docs/ENTROPY.md). Spatially adaptive bit rates, Johnston et al. 2018."""
        g = self.gain(t)
        with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
            features, enc_state = self.encoder(self._net(residual * g), enc_state)
            bits = self.binarizer(features)
        if active is not None:
            bits = bits * self._net(active)
        if self._exact_in_loop(exact_loop) and not freeze:  # the decoder's exact arithmetic, in the encoder's loop
            x_hat, dec_state = self.exact.step(bits, t, dec_state, x_hat)
            return bits, x_hat, enc_state, dec_state
        update, dec_state = self.decoder(bits, dec_state)
        update = update.float() / g
        if active is not None and freeze:
            update = update * block_mask_to_pixels(active)
        return bits, self._reconstruct(x_hat, update), enc_state, dec_state

    def _reconstruct(self, previous, update):
        if self.cfg.reconstruction == "one-shot" or previous is None:
            return update
        return previous + update

    def _iterations(self, x, iterations: int, stop=None, freeze: bool = False, search_steps: int = 0,
                    search_loss=None, encoder_grad: bool = True, exact_loop: bool | None = None):
        """Yield (bits, reconstruction) after each iteration: the residual coding loop.

        `stop` (N, 1, H/16, W/16), optional: how many iterations each block sends (`_step`).
        `search_steps`: choose each iteration's bits by search (`_search_step`).
        `encoder_grad`, `exact_loop`: see `_step`, `_exact_in_loop`."""
        enc_state, dec_state = self._blank_state()
        x_hat = None
        for t in range(iterations):
            if search_steps:
                bits, x_hat, enc_state, dec_state = self._search_step(
                    x, x_hat, t, enc_state, dec_state, search_steps, search_loss or l1_loss, exact_loop)
                yield bits, x_hat
                continue
            residual = x if x_hat is None else x - x_hat
            active = None if stop is None else (stop > t).float()
            bits, x_hat, enc_state, dec_state = self._step(residual, t, enc_state, dec_state, x_hat, active, freeze,
                                                           encoder_grad, exact_loop)
            yield bits, x_hat

    def _search_step(self, x, x_hat, t, enc_state, dec_state, steps: int, loss, exact_loop: bool | None = None):
        """`_step` with the bits chosen by search: the decoder takes any bits, so the encoder may
        send better ones than the binarizer's signs. Starting from the binarizer's tanh outputs,
        `steps` Adam steps (straight-through signs) lower loss(x, reconstruction) per image,
        and each image keeps the best signs seen, the binarizer's included: never worse by
        that loss. Decoding is unchanged. Gradients flow to the bits only."""
        g = self.gain(t)
        residual = x if x_hat is None else x - x_hat
        features, enc_state = self.encoder(self._net(residual * g), enc_state)
        soft = torch.tanh(self.binarizer.conv(features)).float()

        # the float decoder, for its gradient (from an exact decoder's float64 values too)
        float_state = [None if h is None else self._net(h) for h in dec_state]
        float_x_hat = None if x_hat is None else x_hat.to(x.dtype)

        def decoded(bits):
            update, state = self.decoder(self._net(bits), float_state)
            return self._reconstruct(float_x_hat, update.float() / g), state

        def sign(c):
            return torch.where(c >= 0, 1.0, -1.0)

        best = sign(soft)
        best_loss = loss(x, decoded(best)[0])
        relaxed = soft.clone().requires_grad_()
        optimizer = torch.optim.Adam([relaxed], lr=SEARCH_LR)
        for _ in range(steps):
            with torch.enable_grad():
                value = loss(x, decoded(relaxed + (sign(relaxed) - relaxed).detach())[0]).sum()
                # the bits' gradient only: no weight gradients computed or left on the model
                relaxed.grad, = torch.autograd.grad(value, relaxed)
            optimizer.step()
            candidate = sign(relaxed.detach())
            candidate_loss = loss(x, decoded(candidate)[0])
            better = candidate_loss < best_loss
            best = torch.where(better.view(-1, 1, 1, 1), candidate, best)
            best_loss = torch.minimum(candidate_loss, best_loss)
        if self._exact_in_loop(exact_loop):
            x_new, dec_state = self.exact.step(best, t, dec_state, x_hat)
        else:
            x_new, dec_state = decoded(best)
        return best, x_new, enc_state, dec_state

    def forward(self, x, iterations: int | None = None, stop=None, with_codes: bool = False,
                encoder_grad: bool = True):
        """Training pass: returns the reconstruction after each iteration, (T, N, 3, H, W),
        and with `with_codes` also the codes (T, N, bits, H/16, W/16), straight-through
        +-1 (for a rate term). `stop`: optional per-block iteration counts (`_iterations`).
        Without `encoder_grad` only the decoder (and the gains' decoding side) gets
        gradients: the codes are what a frozen encoder makes in the same loop."""
        iterations = iterations or self.cfg.max_iterations
        codes, x_hats = zip(*self._iterations(x, iterations, stop, encoder_grad=encoder_grad))
        return (torch.stack(x_hats), torch.stack(codes)) if with_codes else torch.stack(x_hats)

    def encode(self, x, iterations: int, on_iteration=None, search_steps: int = 0, search_loss=None):
        """Codes (T, N, bits, H/16, W/16) of +-1 for x in [-0.5, 0.5].

        `on_iteration(t, x_hat)` sees each reconstruction, which the encoder computes anyway,
        so that per-iteration quality costs nothing extra. The encoder clamps nothing: it
        must reproduce exactly what `decode` computes (in the same arithmetic: float, or
        "exact-loop", `set_decoding`), and `decode` clamps only its output.
        `search_steps` > 0 chooses the bits by search against `search_loss(x, x_hat)` per
        image (default mean L1; `_search_step`).
        """
        codes = []
        # the search needs autograd through the decoder; plain encoding needs none
        with torch.no_grad() if search_steps else torch.inference_mode():
            for t, (bits, x_hat) in enumerate(self.iterate(x, iterations, search_steps, search_loss)):
                codes.append(bits)
                if on_iteration is not None:
                    on_iteration(t, x_hat.clamp(-0.5, 0.5))
        return torch.stack(codes)

    def iterate(self, x, iterations: int, search_steps: int = 0, search_loss=None, exact_loop: bool | None = None):
        """`encode` one iteration at a time: yields (codes (N, bits, H/16, W/16), reconstruction
        before clamping) lazily, so that a caller may stop early. Run it under
        torch.inference_mode() (torch.no_grad() with `search_steps`). `exact_loop` overrides
        `set_decoding`'s choice for this call (the codec's small images: rgbatch.codec)."""
        self._check_iterations(iterations)
        return self._iterations(x, iterations, search_steps=search_steps, search_loss=search_loss,
                                exact_loop=exact_loop)

    @torch.inference_mode()
    def decode(self, codes, iterations: int | None = None):
        """Reconstruction in [-0.5, 0.5] from the first `iterations` iterations of codes."""
        iterations = codes.shape[0] if iterations is None else iterations
        if not 1 <= iterations <= codes.shape[0]:
            raise ValueError(f"can decode 1..{codes.shape[0]} iterations, not {iterations}")
        return self.decode_from(codes[:iterations]).x_hat.clamp(-0.5, 0.5)

    @torch.inference_mode()
    def decode_from(self, codes, state: DecoderState | None = None, loop: bool = False) -> DecoderState:
        """`decode` resumed: the decoder over `codes` (T, N, bits, H/16, W/16), the iterations
        after those `state` holds (None: from the first), returning the state after them, its
        reconstruction before clamping. A state may be resumed from many times (the GRUs make
        new tensors); the same codes give the same values as `decode` in one go. `loop`: in the
        encoder's loop's arithmetic (`set_decoding`), as the encoder measures."""
        state = state or self._first_state()
        for state in self._decoding(codes, state, loop):
            pass
        return state  # no codes: the state given

    def reconstructions(self, codes) -> torch.Tensor:
        """The reconstruction after each iteration of `codes`, (T, N, 3, H, W), with autograd:
        training the decoder alone on codes the encoder made without gradients."""
        return torch.stack([state.x_hat for state in self._decoding(codes, self._first_state())])

    def _first_state(self) -> DecoderState:
        return DecoderState(None, self._blank_state()[1], 0)

    def _decoding(self, codes, state: DecoderState, loop: bool = False):
        """The decoder's loop: yields the state after each iteration of `codes` from `state`
        (`loop`: in the encoder loop's arithmetic, `decode_from`)."""
        x_hat, hidden, start = state
        exact = self.exact is not None and (self.exact_loop or not loop)
        for t, bits in enumerate(codes, start):
            if exact:
                x_hat, hidden = self.exact.step(bits, t, hidden, x_hat)
            else:
                update, hidden = self.decoder(self._net(bits), hidden)
                x_hat = self._reconstruct(x_hat, update.float() / self.gain(t))
            yield DecoderState(x_hat, hidden, t + 1)

    def _check_iterations(self, iterations):
        if not 1 <= iterations <= self.cfg.max_iterations:
            raise ValueError(f"iterations must be 1..{self.cfg.max_iterations}, not {iterations}")


def l1_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image."""
    return (x - x_hat).abs().flatten(1).mean(1)


def block_mask_to_pixels(mask: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w) per-block values to (N, 1, 16h, 16w) per-pixel values."""
    return mask.repeat_interleave(BLOCK, dim=2).repeat_interleave(BLOCK, dim=3)


def _flops_parts(cfg: CodecConfig, part: str) -> tuple[float, float]:
    """Multiply-adds x2 per input pixel of one iteration: (every iteration's convolutions, the
    convolutions of the GRUs' hidden states, which the first iteration skips: its state is 0)."""
    model = ResidualGRUCodec(cfg)

    def conv_flops(conv: nn.Conv2d, scale: float):
        # scale: output positions per input pixel
        k = conv.kernel_size[0] * conv.kernel_size[1]
        return 2 * conv.in_channels * conv.out_channels * k * scale

    grus = [(gru, 1 / 256 * 4 ** i) for i, gru in enumerate(model.decoder.grus)]
    every = conv_flops(model.decoder.conv_in, 1 / 256) + conv_flops(model.decoder.conv_out, 1.0)
    if part != "decode":
        grus += [(gru, 1 / 4 ** (i + 2)) for i, gru in enumerate(model.encoder.grus)]
        every += conv_flops(model.encoder.conv, 1 / 4) + conv_flops(model.binarizer.conv, 1 / 256)
    every += sum(conv_flops(gru.input_conv, scale) for gru, scale in grus)
    hidden = sum(conv_flops(gru.hidden_gates, scale) + conv_flops(gru.hidden_candidate, scale) for gru, scale in grus)
    return every, hidden


def flops_per_pixel(cfg: CodecConfig, iterations: int = 1, part: str = "encode") -> float:
    """Multiply-adds x2 per input pixel, counted from the layer shapes, of `iterations`
    iterations as every iteration after the first computes them (the model's cost per iteration).

    `encode` runs the encoder, binarizer and decoder (the encoder needs the reconstruction);
    `decode` runs the decoder alone.
    """
    every, hidden = _flops_parts(cfg, part)
    return (every + hidden) * iterations


def run_flops_per_pixel(cfg: CodecConfig, iterations: int, part: str = "encode") -> float:
    """What a run of `iterations` iterations computes: `flops_per_pixel` less the hidden-state
    convolutions the first iteration skips (so the FLOP/s of a measured run are not overstated)."""
    every, hidden = _flops_parts(cfg, part)
    return every * iterations + hidden * (iterations - 1)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ALIGN", "BLOCK", "CodecConfig", "DecoderState", "ResidualGRUCodec", "flops_per_pixel", "parameter_count",
           "run_flops_per_pixel"]
