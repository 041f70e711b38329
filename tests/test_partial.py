"""A partial last iteration (Codec.encode_many(partial=True), docs/FORMAT.md "Partial last chunk"):
the stream ends with the first m coding steps of an iteration, the decoder reads 0 for the others."""

import numpy as np
import pytest

from dataclasses import replace

from rgbatch import bitstream, fuzz
from rgbatch.bitstream import BitstreamError
from rgbatch.codec import Codec, partial_steps, resolve_partial
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim_many
from rgbatch.options import OptionError
from rgbatch.ratecontrol import Target

from conftest import DATA
from test_refine import refined_weights  # noqa: F401 (a fixture: random weights with a refiner)


@pytest.fixture(scope="module")
def codec(default_weights):
    # 4 tiles of a 192 px crop; the float decoder, the encoder loop's arithmetic (test_exact.py: exact)
    # post-filters on this crop too (sent from postfilter.MIN_PIXELS up): none on a partial last chunk
    return Codec.load(default_weights, precision="fp32", tile_size=128, decoding="float", post_filter_min_pixels=0)


@pytest.fixture(scope="module")
def image():
    return read_image(DATA / "kodim23_crop192.png")[0]


def test_steps_tried_are_eighths_of_an_iteration():
    assert partial_steps(32) == (8, 16, 24, 32, 40, 48, 56)
    assert partial_steps(4) == (1, 2, 3, 4, 5, 6, 7)


def test_the_default_codes_partial_iterations_where_the_target_measuring_and_coder_allow():
    target = Target(msssim=0.9)
    assert resolve_partial(None, target, True, "adaptive") and resolve_partial(None, target, True, "auto")
    assert not resolve_partial(None, Target(), True, "adaptive")  # no target: nothing to land nearer
    assert not resolve_partial(None, target, False, "context")  # candidates are chosen by their MS-SSIM
    assert not resolve_partial(None, target, True, "raw")  # codes whole iterations only
    assert not resolve_partial(False, target, True, "adaptive")
    with pytest.raises(OptionError, match="raw coder codes whole iterations"):
        resolve_partial(True, target, True, "raw")
    with pytest.raises(OptionError, match="measuring must stay on"):
        resolve_partial(True, target, False, "adaptive")


@pytest.mark.parametrize("resample", ["none", "0.75"])
def test_a_quality_target_keeps_the_fewest_bytes_reaching_it_and_decoding_gives_what_was_measured(
        codec, image, resample):
    goal = Target(msssim=0.94)  # depth 4 whole overshoots it, the first 24 (none) or 40 (0.75) steps of 4 do not
    whole = codec.encode(image, 16, target=goal, resample=resample)
    enc = codec.encode(image, 16, target=goal, resample=resample, partial=True, keep_reconstructions=True,
                       keep_codes=True)
    assert whole.steps == 0 and whole.msssim[-1] >= goal.msssim > whole.msssim[-2]
    # every candidate, coded and decoded here: depth k - 1 whole and the first m steps of iteration k
    k = whole.iterations
    full = codec.encode(image, k, resample=resample, keep_codes=True).codes
    sizes, quality = [whole.bytes[-1]], [whole.msssim[-1]]
    for m in partial_steps(32):
        part = full.partial(k, m)  # without a post-filter at depth k: it was fitted to the whole iteration
        chunks = codec.code(full)[:k - 1] + codec.frame(part, [codec.coder.encode_iteration(full.tiles, k - 1, m)], k - 1)
        blob = codec.pack(part, chunks)
        sizes.append(len(blob))
        quality.append(msssim_many(image, [codec.decode(blob)])[0])
    reaching = [n for n, q in enumerate(quality) if q >= goal.msssim]
    best = min(reaching, key=lambda n: sizes[n])
    assert best > 0, "the test image must have a partial candidate that wins"
    assert (enc.iterations, enc.steps) == (k, partial_steps(32)[best - 1])
    assert enc.bytes[-1] == sizes[best] < whole.bytes[-1] and enc.msssim[-1] == pytest.approx(quality[best], abs=1e-6)
    assert enc.bytes[:-1] == whole.bytes[:-1] and len(enc.blob) == enc.bytes[-1]
    header = bitstream.read_header(enc.blob)
    assert (header.iterations, header.steps, header.scale) == (k, enc.steps, enc.scale)
    # decoding returns exactly the image the encoder measured, at the kept depth and below
    assert np.array_equal(codec.decode(enc.blob), enc.reconstructions[-1])
    assert np.array_equal(codec.decode(enc.blob, k - 1), enc.reconstructions[-2])
    read = codec.read_codes(enc.blob)
    assert read.steps == enc.steps and all(np.array_equal(a, b) for a, b in zip(read.tiles, enc.codes.tiles))
    coded = read.coded()  # the bits not held are False, and the decoder read them as 0
    assert all(not t[-1][~c].any() for t, c in zip(read.tiles, coded))
    # a cut drops the partial chunk: whole iterations, as the stream without partial had them
    cut = enc.cut(k - 1)
    assert cut.steps == 0 and bitstream.read_header(cut.blob).steps == 0
    assert cut.blob == whole.cut(k - 1).blob


@pytest.mark.parametrize("precision, weights", [("fp32", "shipped"), ("bf16", "shipped"), ("bf16", "refined")])
def test_candidates_decoded_from_the_kept_state_are_what_decoding_their_streams_gives(
        default_weights, refined_weights, image, precision, weights, monkeypatch):
    from rgbatch import codec as codec_module

    # 9 tiles of 64 px in batches of 2 (of the 4 full tiles, the 2 + 2 edge tiles, the corner); states kept
    # for 4 tiles' pixels only (the first 2 batches), the others decoded from scratch
    # the codes alone: any coder; the exact decoder in the encoder's loop, so in the candidates' too
    tiled = Codec.load(default_weights if weights == "shipped" else refined_weights, precision=precision,
                       tile_size=64, batch_size=2, coder="raw", decoding="exact-loop")
    assert (tiled.refiner is not None) == (weights == "refined")
    monkeypatch.setattr(codec_module, "RESUMED_PIXELS", 4 * 64 * 64)
    for scale in (0, 1):
        full = tiled.encode(image, 4, keep_codes=True, resample=scale).codes
        for base in (0, 3):
            decode = tiled._resumed(full.cut(base + 1), base)
            for m in partial_steps(32) + (64,):
                candidate = full.partial(base + 1, m)
                assert np.array_equal(decode(candidate), tiled.decode_codes([candidate])[0]), (scale, base, m)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_tiled_partial_streams_decode_to_what_was_measured_with_resample_auto(default_weights, image, precision):
    tiled = Codec.load(default_weights, precision=precision, tile_size=64, batch_size=3, decoding="float")
    for goal in (Target(msssim=0.95), Target(bpp=0.4)):
        enc = tiled.encode(image, 16, target=goal, resample="auto", partial=True, keep_reconstructions=True)
        assert np.array_equal(tiled.decode(enc.blob), enc.reconstructions[-1]), goal
        assert enc.msssim[-1] == pytest.approx(msssim_many(image, [enc.reconstructions[-1]])[0], abs=1e-6)


def test_a_size_target_keeps_the_best_quality_within_the_size(codec, image):
    whole = codec.encode(image, 16, target=Target(bpp=0.25))
    after = codec.encode(image, whole.iterations + 1).bytes[-1]
    budget = Target(max_bytes=(whole.bytes[-1] + 3 * after) // 4)  # room for 3/4 of the next iteration's bytes
    plain = codec.encode(image, 16, target=budget)
    enc = codec.encode(image, 16, target=budget, partial=True, keep_reconstructions=True)
    assert plain.iterations == whole.iterations and enc.iterations == plain.iterations + 1 and enc.steps
    assert enc.bytes[-1] <= budget.max_bytes and enc.msssim[-1] > plain.msssim[-1]
    assert np.array_equal(codec.decode(enc.blob), enc.reconstructions[-1])
    # a limit under the first iteration's bytes: a part of it fits (the whole first iteration, over
    # the limit, was kept until session 63)
    first = codec.encode(image, 1)
    budget = Target(max_bytes=first.bytes[0] * 7 // 8)
    enc = codec.encode(image, 16, target=budget, partial=True, keep_reconstructions=True)
    assert enc.iterations == 1 and enc.steps and enc.bytes[-1] <= budget.max_bytes
    assert np.array_equal(codec.decode(enc.blob), enc.reconstructions[-1])


def test_partial_without_a_target_changes_nothing_and_the_raw_coder_refuses_it(codec, image, default_weights):
    assert codec.encode(image, 3, partial=True).blob == codec.encode(image, 3).blob
    raw = Codec.load(default_weights, coder="raw", precision="fp32")
    with pytest.raises(OptionError, match="raw coder codes whole iterations"):
        raw.encode(image, 3, target=Target(msssim=0.9), partial=True)
    with pytest.raises(OptionError, match="measuring must stay on"):
        codec.encode(image, 3, measure=False, target=Target(bpp=0.3), partial=True)


@pytest.mark.parametrize("coder", ["adaptive", "context"])
def test_a_forged_partial_chunk_is_refused_or_is_the_encoder_s(default_weights, image, coder):
    """Checksums recomputed after the last chunk was cut by a word or more: refused. After header
    byte 27 was raised above the steps the last chunk holds: refused, unless the chunk is also,
    word for word, what the encoder writes for the bits the range decoder reads for the extra steps
    (then the stream is a valid one of those codes; docs/FORMAT.md, "Errors"). Session 12 found
    both decoding without an error."""
    codec = Codec.load(default_weights, precision="fp32", tile_size=128, coder=coder)
    codes = codec.encode(image, 3, keep_codes=True, measure=False).codes
    whole = codec.code(codes)[:2]
    outcomes = []
    for m in partial_steps(32):
        payload = codec.coder.encode_iteration(codes.tiles, 2, m)
        last = codec.frame(codes.partial(3, m), [payload], 2)[0]  # its post-filter record (all off), then the payload
        parts = fuzz.Parts.of(codec.pack(codes.partial(3, m), whole + [last]))
        assert parts.fields["steps"] == m and codec.read_codes(parts.build()).steps == m  # as written: decodes
        for cut in (1, 2, len(last) // 4 - 1):  # by one word, two, to one word left
            short = replace(parts, lengths=parts.lengths[:2] + [len(last) - 4 * cut], payload=parts.payload[:-4 * cut])
            with pytest.raises(BitstreamError, match="iteration 3 (ends before|is not a chunk)"):
                codec.read_codes(short.build())
        for more in range(m + 1, 64):
            try:
                read = codec.read_codes(replace(parts, fields={**parts.fields, "steps": more}).build())
            except BitstreamError as e:
                assert str(e).startswith(("iteration 3 ends before", "iteration 3 is not a chunk")), e
                outcomes.append("refused")
            else:
                assert codec.coder.encode_iteration(read.tiles, 2, more) == payload
                outcomes.append("the encoder's")
    # measured: 6 (adaptive) and 5 (context) of the 217 raises are valid chunks, each by 1 to 4 steps
    # from step 8 or 40: channels 8-11, which are 1 at only 0 to 9 of the 144 positions on this crop
    assert outcomes.count("refused") > 0.95 * len(outcomes), outcomes.count("refused")
