"""The colour post-filter (rgbatch.postfilter): fitted by the encoder, sent in records at the head of
each chunk (format v2), applied in integers."""

import numpy as np
import pytest

from rgbatch import postfilter
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim
from rgbatch.postfilter import COEFFICIENTS, MAX_COEFFICIENT, Filter, RecordError

from conftest import DATA


def cast_of(image):
    x = image.astype(np.int32)
    return np.clip(0.8 * x + 0.1 * x[..., [1, 2, 0]] + 12, 0, 255).astype(np.uint8)  # a cast a filter can undo


def test_coefficients_cost_signed_exp_golomb_lengths():
    # 0, 1, -1, 2, -2, 3, 4 map to 0, 1, 2, 3, 4, 5, 7, whose codes are 1, 3, 3, 5, 5, 5, 7 bits long
    assert [postfilter.coefficient_bits([v]) for v in (0, 1, -1, 2, -2, 3, 4)] == [1, 3, 3, 5, 5, 5, 7]
    assert postfilter.coefficient_bits([0, 1, 4]) == 1 + 3 + 7


@pytest.mark.parametrize("filt", [Filter(cross=False), Filter(), Filter(radius=1)], ids=["gain", "colour", "colour3x3"])
def test_a_filter_undoes_a_colour_cast_in_integers(filt):
    image, _ = read_image(DATA / "kodim23_crop192.png")
    cast = cast_of(image)
    q = filt.fit(cast, image)
    assert q.shape == (3, filt.size + 1) and q.dtype == np.int32
    error = lambda x: np.abs(x.astype(int) - image).mean()
    assert error(filt.apply(cast, q)) < 0.5 * error(cast)
    assert np.array_equal(filt.apply(cast, np.zeros_like(q)), cast)  # no coefficients: the image itself


def test_the_codecs_filter_is_the_integer_one_at_every_coefficient(rng):
    # float32 sums of integers below 2^24 are exact: the fast form gives the integer form's pixels,
    # the largest coefficients included
    x = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    x[0, :3] = [[0, 0, 0], [255, 255, 255], [0, 255, 0]]
    for q in [rng.integers(-50, 51, COEFFICIENTS), rng.integers(-MAX_COEFFICIENT, MAX_COEFFICIENT + 1, COEFFICIENTS),
              np.full(COEFFICIENTS, MAX_COEFFICIENT), np.full(COEFFICIENTS, -MAX_COEFFICIENT)]:
        q = q.astype(np.int32)
        assert np.array_equal(postfilter.apply(x, q), postfilter.COLOUR.apply(x, q))
    assert postfilter.apply(x, np.zeros(COEFFICIENTS, np.int32)) is x and postfilter.apply(x, None) is x


def test_the_encoder_sends_a_filter_only_where_it_pays():
    image, _ = read_image(DATA / "kodim23_crop192.png")
    q = postfilter.fit(cast_of(image), image)
    assert q.any() and np.abs(postfilter.apply(cast_of(image), q).astype(int) - image).mean() < 2
    assert msssim(image, postfilter.apply(cast_of(image), q)) > msssim(image, cast_of(image))
    assert not postfilter.fit(image, image).any()  # nothing to correct: off
    # a correction worth a fraction of a level on a tile of 16 pixels does not pay for its coefficients
    tiny = image[:4, :4]
    assert not postfilter.fit(np.clip(tiny.astype(int) + 1, 0, 255).astype(np.uint8), tiny).any()
    # a bit is worth 2 ln 2 times the mean squared error over the tile, of which a measured pixel is
    # one of SUBSAMPLE^2
    mse, pixels = 10.0, 100
    bound = postfilter.RATE_PRICE * 2 * np.log(2) * mse / postfilter.SUBSAMPLE ** 2
    assert postfilter.worth(1.01 * bound * 10, 10, mse * pixels, pixels)
    assert not postfilter.worth(0.99 * bound * 10, 10, mse * pixels, pixels)
    # a price above the bound (the tile's own last step, `slope`) raises it
    assert not postfilter.worth(1.01 * bound * 10, 10, mse * pixels, pixels, price=2 * bound)
    assert postfilter.worth(2.01 * bound * 10, 10, mse * pixels, pixels, price=2 * bound)


def test_a_filter_is_priced_by_what_the_tiles_last_iteration_bought():
    # SLOPE_PRICE times the squared error each of the iteration's bits bought; none bought, no price
    assert postfilter.slope(5000.0, 1000.0, 200) == postfilter.SLOPE_PRICE * 20.0
    assert postfilter.slope(1000.0, 1200.0, 200) == 0.0 and postfilter.slope(5000.0, 1000.0, 0) == 0.0
    image, _ = read_image(DATA / "kodim23_crop192.png")
    cast = cast_of(image)
    before = postfilter.error(cast, image)
    s = postfilter.SUBSAMPLE  # the error is the squared error on the pixels the fit measures
    assert before == ((cast[::s, ::s].astype(int) - image[::s, ::s]) ** 2).sum() > 0
    bits = 32 * (192 // 16) ** 2
    # a cast of ~20 levels is worth its bits after a step that bought little, not after one whose
    # bits each bought more than the filter's whole gain spread over its bits
    assert postfilter.fit(cast, image, last_error=before * 1.01, iteration_bits=bits).any()
    assert not postfilter.fit(cast, image, last_error=before * 1000, iteration_bits=bits).any()
    # at the first depth the last error is the flat grey the decoder starts from
    flat = postfilter.error(np.full_like(image, 128), image)
    assert np.array_equal(postfilter.fit(cast, image, iteration_bits=bits),
                          postfilter.fit(cast, image, last_error=flat, iteration_bits=bits))


def random_filters(rng, tiles, iterations):
    filters = rng.integers(-300, 301, (tiles, iterations, *COEFFICIENTS)).astype(np.int32)
    filters[rng.random((tiles, iterations)) < 0.4] = 0  # off
    return list(filters)


def test_records_round_trip_with_the_payloads_after_them(rng):
    for tiles, iterations in [(1, 1), (1, 16), (6, 5), (9, 3)]:
        filters = random_filters(rng, tiles, iterations)
        payloads = [rng.bytes(int(n)) for n in rng.integers(0, 20, iterations)]
        chunks = postfilter.frame(filters, payloads)
        back, rest = postfilter.unframe(chunks, tiles)
        assert rest == payloads and all(np.array_equal(a, b) for a, b in zip(back, filters))
        # a chunk's record codes against the tile's last filter sent: iterations framed from the middle
        assert postfilter.frame(filters, payloads[2:], 2) == chunks[2:]
    assert postfilter.frame(None, [b"ab", b"c"]) == [b"ab", b"c"]  # no filters: format v1's chunks
    off = postfilter.frame([np.zeros((2, *COEFFICIENTS), np.int32)] * 9, [b"x", b"y"])
    assert off == [b"\0\0x", b"\0\0y"]  # nine tiles off: nine zero bits, padded to two bytes


def test_a_damaged_record_is_refused_with_its_reason(rng):
    zeros = [np.zeros(COEFFICIENTS, np.int64)]
    q = np.zeros(COEFFICIENTS, np.int32)
    q[0, 0] = 5
    record = postfilter.write_record([q], zeros)
    assert postfilter.read_record(record + b"rest", zeros)[1] == len(record)
    cases = {
        record[:-1]: "ends inside",  # cut short
        b"": "ends inside",
        b"\x80\x00\x00": "leading zeros",  # on, then a code of more than MAX_PREFIX zeros
        bytes([record[0], *record[1:-1], record[-1] | 1]) if len(record) * 8 > 1 + 12 + 5 else None: "padding",
    }
    for data, reason in cases.items():
        if data is not None:
            with pytest.raises(RecordError, match=reason):
                postfilter.read_record(data, zeros)
    # on, with every coefficient coded as 0: the identity, which is sent as off
    with pytest.raises(RecordError, match="identity"):
        postfilter.read_record(bytes([0xFF, 0xF8]), zeros)  # 1, twelve codes "1", three bits of padding
    big = np.full(COEFFICIENTS, MAX_COEFFICIENT, np.int64)
    with pytest.raises(RecordError, match="over the format"):
        postfilter.read_record(postfilter.write_record([np.ones(COEFFICIENTS, np.int32)], zeros), [big])
    # the largest difference a record can need (-MAX_COEFFICIENT to +MAX_COEFFICIENT) reads back
    low, high = np.full(COEFFICIENTS, -MAX_COEFFICIENT, np.int32), np.full(COEFFICIENTS, MAX_COEFFICIENT, np.int32)
    for a, b in ((low, high), (high, low)):
        got, _ = postfilter.read_record(postfilter.write_record([b], [a.astype(np.int64)]), [a.astype(np.int64)])
        assert np.array_equal(got[0], b)
    with pytest.raises(RecordError, match="iteration 2 post-filter record"):
        postfilter.unframe([postfilter.write_record([q], zeros), b""], 1)
