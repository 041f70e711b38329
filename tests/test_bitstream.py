import zlib

import pytest

from rgbatch import bitstream
from rgbatch.bitstream import BitstreamError

CHUNKS = [bytes([i]) * (10 + i) for i in range(5)]


def make(chunks=CHUNKS):
    return bitstream.pack(coder_id=0, bits=32, model_id="0123456789abcdef", width=70, height=50,
                          tile_size=512, chunks=chunks)


def test_round_trip_and_self_description():
    header, chunks = bitstream.unpack(make())
    assert chunks == CHUNKS
    assert (header.width, header.height, header.tile_size, header.iterations) == (70, 50, 512, 5)
    assert header.model_id == "0123456789abcdef" and header.coder_id == 0 and header.bits == 32
    assert header.cumulative_bytes()[-1] == len(make())


def test_progressive_reading_needs_only_the_first_k_chunks():
    blob = make()
    header = bitstream.read_header(blob)
    cut_at_2 = blob[:header.size + sum(header.chunk_lengths[:2])]
    _, chunks = bitstream.unpack(cut_at_2, iterations=2)
    assert chunks == CHUNKS[:2]
    truncated = bitstream.truncate(blob, 2)
    assert bitstream.unpack(truncated)[1] == CHUNKS[:2]
    assert len(truncated) == header.cumulative_bytes()[1]


@pytest.mark.parametrize("cut", [0, 3, 20, 40, -1])
def test_truncated_streams_raise(cut):
    with pytest.raises(BitstreamError, match="truncated"):
        bitstream.unpack(make()[:cut])


def test_every_single_byte_corruption_is_detected():
    blob = make()
    for i in range(len(blob)):
        damaged = bytearray(blob)
        damaged[i] ^= 0x41
        with pytest.raises(BitstreamError):
            bitstream.unpack(bytes(damaged))


def test_unknown_version_and_foreign_data():
    blob = bytearray(make())
    blob[4] = 9
    with pytest.raises(BitstreamError, match="version 9"):
        bitstream.unpack(bytes(blob))
    with pytest.raises(BitstreamError, match="not an rgbatch code"):
        bitstream.unpack(b"\x89PNG\r\n\x1a\n" + bytes(40))


def test_depth_beyond_the_stream_is_refused():
    with pytest.raises(BitstreamError, match="holds 5 iterations"):
        bitstream.unpack(make(), iterations=6)


def test_bytes_after_the_last_chunk_are_refused():
    """Issue 17, item 3: a stream ends with its last chunk, whatever depth is read."""
    blob = make()
    for extra in (b"\0", b"garbage", blob):
        with pytest.raises(BitstreamError, match="after the last chunk"):
            bitstream.unpack(blob + extra)
        with pytest.raises(BitstreamError, match="after the last chunk"):
            bitstream.unpack(blob + extra, iterations=2)
    assert bitstream.unpack(blob)[1] == CHUNKS  # the stream itself, and its prefixes, still read
    assert bitstream.unpack(blob[:-1], iterations=4)[1] == CHUNKS[:4]


def test_header_fields_outside_the_format_are_refused():
    """Issue 17, item 2: what the format rules out is refused from the header alone."""
    good = bitstream.unpack(make())[0]
    fields = dict(coder_id=0, bits=32, model_id=good.model_id, width=70, height=50, tile_size=512)
    for change, reason in ((dict(width=0), "0x50"), (dict(height=0), "70x0"), (dict(tile_size=33), "tile size"),
                           (dict(tile_size=16), "tile size"), (dict(bits=0), "bits")):
        forged = bitstream.pack(**{**fields, **change}, chunks=CHUNKS)  # checksums all valid
        with pytest.raises(BitstreamError, match=reason):
            bitstream.read_header(forged)
    for offset, value, reason in ((27, 1, "raw coder codes whole iterations"), (26, 3, "scale code 3"),
                                  (26, 255, "scale code 255")):
        with pytest.raises(BitstreamError, match=reason):
            bitstream.read_header(_with_byte(make(), offset, value))


def _with_byte(blob: bytes, offset: int, value: int) -> bytes:
    """The stream with one header byte changed, its header checksum recomputed."""
    forged = bytearray(blob)
    forged[offset] = value
    end = len(blob) - sum(map(len, CHUNKS)) - 4
    forged[end:end + 4] = zlib.crc32(bytes(forged[:end])).to_bytes(4, "little")
    return bytes(forged)


def test_a_scale_code_round_trips_and_old_streams_stay_as_they_were():
    good = bitstream.unpack(make())[0]
    fields = dict(coder_id=0, bits=32, model_id=good.model_id, width=70, height=50, tile_size=512, chunks=CHUNKS)
    plain = bitstream.pack(**fields)
    assert plain == bitstream.pack(**fields, scale=0) and plain[26:28] == b"\0\0"
    for scale, coded in ((1, (53, 38)), (2, (35, 25))):
        blob = bitstream.pack(**fields, scale=scale)
        assert blob == _with_byte(plain, 26, scale)  # byte 26 alone differs (and the header's checksum)
        header, chunks = bitstream.unpack(blob)
        assert (header.scale, header.coded_size, header.width, header.height) == (scale, coded, 70, 50)
        assert chunks == CHUNKS
        cut = bitstream.truncate(blob, 2)
        assert bitstream.read_header(cut).scale == scale and cut == bitstream.pack(**{**fields, "chunks": CHUNKS[:2]},
                                                                                   scale=scale)
    with pytest.raises(ValueError, match="scale code 3"):
        bitstream.pack(**fields, scale=3)


def test_steps_of_the_last_chunk_round_trip_and_a_cut_drops_the_partial_chunk():
    """Header byte 27 (docs/FORMAT.md, "Partial last chunk"): 0 for every stream before it."""
    fields = dict(coder_id=2, bits=32, model_id="0123456789abcdef", width=70, height=50, tile_size=512, chunks=CHUNKS)
    whole = bitstream.pack(**fields)
    assert whole == bitstream.pack(**fields, steps=0) and whole[27] == 0
    for steps in (1, 40, 63):
        blob = bitstream.pack(**fields, steps=steps)
        assert blob == _with_byte(whole, 27, steps)  # byte 27 alone differs (and the header's checksum)
        header, chunks = bitstream.unpack(blob)
        assert header.steps == steps and chunks == CHUNKS
        assert header.steps_at(5) == steps and header.steps_at(4) == 0
        assert bitstream.truncate(blob, 5) == blob  # the stream's own depth keeps its partial chunk
        cut = bitstream.truncate(blob, 2)  # a cut keeps whole chunks only
        assert cut == bitstream.pack(**{**fields, "chunks": CHUNKS[:2]}) and bitstream.read_header(cut).steps == 0
    for steps in (64, 255):  # an iteration of 32 bits has 64 steps: 64 would be the whole one
        with pytest.raises(BitstreamError, match=f"holds {steps} steps"):
            bitstream.read_header(_with_byte(whole, 27, steps))
        with pytest.raises(ValueError, match=f"holds {steps} steps"):
            bitstream.pack(**fields, steps=steps)
    with pytest.raises(BitstreamError, match="raw coder"):  # coder id 0 codes whole iterations only
        bitstream.read_header(_with_byte(make(), 27, 1))


def test_a_metadata_trailer_rides_with_the_stream_at_every_depth():
    blob = make()
    meta = bitstream.Metadata(b"icc" * 10, b"Exif\0\0" + b"x" * 7)
    full = bitstream.with_metadata(blob, meta)
    assert full.startswith(blob) and bitstream.read_metadata(full) == meta
    assert bitstream.unpack(full)[1] == CHUNKS  # the chunks as they were
    assert bitstream.read_metadata(blob) == bitstream.Metadata()  # none: both None
    cut = bitstream.truncate(full, 2)  # the image's metadata at every depth
    assert cut == bitstream.truncate(blob, 2) + full[len(blob):] and bitstream.read_metadata(cut) == meta
    assert bitstream.with_metadata(full, bitstream.Metadata()) == blob  # stripped: the stream alone, as before
    exif_only = bitstream.with_metadata(full, bitstream.Metadata(None, b"e"))  # replaced, not added
    assert bitstream.read_metadata(exif_only) == bitstream.Metadata(None, b"e") and exif_only.startswith(blob)
    # a progressive reader's prefix (the header and the first chunks) needs none of it
    header = bitstream.read_header(full)
    assert bitstream.unpack(full[:header.size + sum(header.chunk_lengths[:2])], iterations=2)[1] == CHUNKS[:2]


def test_an_alpha_channel_rides_in_the_trailer_and_leaves_old_trailers_as_they_were():
    blob = make()
    meta = bitstream.Metadata(b"icc" * 10, None)
    assert bitstream.with_metadata(blob, meta)[len(blob):len(blob) + 4] == b"RGBM"  # no alpha: the trailer as before
    for alpha in (b"a PNG's bytes", b""):  # b"": an opaque alpha channel
        full = bitstream.with_metadata(blob, meta, alpha)
        assert full[len(blob):len(blob) + 4] == b"RGBT" and bitstream.read_trailer(full) == (meta, alpha)
        assert bitstream.read_trailer(bitstream.truncate(full, 2)) == (meta, alpha)  # at every depth
        assert bitstream.read_metadata(full) == meta and bitstream.unpack(full)[1] == CHUNKS
    assert bitstream.read_trailer(blob) == (bitstream.Metadata(), None)
    assert bitstream.read_trailer(bitstream.with_metadata(blob, bitstream.Metadata(), b"")) == (bitstream.Metadata(), b"")
    header = bitstream.read_header(blob)
    with pytest.raises(ValueError, match="alpha channel of"):
        bitstream.with_metadata(blob, meta, bytes(bitstream.max_alpha_bytes(header.width, header.height) + 1))


def test_an_xmp_packet_rides_in_a_trailer_of_its_own_and_leaves_the_others_as_they_were():
    """Since session 63 the source's XMP packet is kept: the trailer `RGBX` (the alpha channel's
    length 2^32 - 1 where there is none); without XMP the trailers are those before, byte for byte."""
    blob = make()
    for alpha in (None, b"", b"a PNG's bytes"):
        meta = bitstream.Metadata(b"icc" * 10, None, b"<x:xmpmeta/>")
        full = bitstream.with_metadata(blob, meta, alpha)
        assert full[len(blob):len(blob) + 4] == b"RGBX" and bitstream.read_trailer(full) == (meta, alpha)
        assert bitstream.read_trailer(bitstream.truncate(full, 2)) == (meta, alpha)  # at every depth
        assert bitstream.with_metadata(full, meta._replace(xmp=None), alpha)[len(blob):len(blob) + 4] == (
            b"RGBM" if alpha is None else b"RGBT")
    with pytest.raises(ValueError, match="an XMP packet of"):
        bitstream.with_metadata(blob, bitstream.Metadata(xmp=bytes(bitstream.MAX_METADATA_BYTES + 1)))
    with pytest.raises(ValueError, match="utf-8"):  # the format's XMP is UTF-8: neither written nor read otherwise
        bitstream.with_metadata(blob, bitstream.Metadata(xmp=b"\xff\xfe<x/>"))
    forged = bitstream.with_metadata(blob, bitstream.Metadata(xmp=b"\xc3\xa9<x/>"))
    forged = forged[:-10] + b"\xff" + forged[-9:-4]  # the packet's first byte, then its CRC made again
    forged += zlib.crc32(forged[len(blob):]).to_bytes(4, "little")
    with pytest.raises(BitstreamError, match="its XMP packet is not UTF-8"):
        bitstream.read_trailer(forged)


def test_notes_ride_in_a_trailer_of_their_own_and_leave_the_others_as_they_were():
    """Since session 64 a source's text chunks and resolution are kept: the trailer `RGBN`; without
    notes the trailers are those before, byte for byte; notes not as `pack_notes` makes them are
    refused, written or read."""
    blob = make()
    notes = b'{"text":{"parameters":"a cat","Title":"Caf\xc3\xa9"},"dpi":[300.0,300.0]}'
    for alpha in (None, b"", b"a PNG's bytes"):
        for xmp in (None, b"<x:xmpmeta/>"):
            meta = bitstream.Metadata(b"icc" * 10, None, xmp, notes)
            full = bitstream.with_metadata(blob, meta, alpha)
            assert full[len(blob):len(blob) + 4] == b"RGBN" and bitstream.read_trailer(full) == (meta, alpha)
            assert bitstream.read_trailer(bitstream.truncate(full, 2)) == (meta, alpha)  # at every depth
            assert bitstream.with_metadata(full, meta._replace(notes=None), alpha)[len(blob):len(blob) + 4] == (
                b"RGBX" if xmp else b"RGBM" if alpha is None else b"RGBT")
    for bad, why in ((b"[1]", "not a JSON object"), (b'{"dpi":[0,1]}', "dpi is not"), (b"\xff{}", "not UTF-8 JSON"),
                     (b'{"text":{"rgbatch-restored":"x"}}', "not PNG keywords"), (b'{"text":{"k":1}}', "not PNG"),
                     (b"[" * 100000 + b"]" * 100000, "nested too deeply"), (b'{"text":{"k":"\\udc00"}}', "not PNG")):
        with pytest.raises(ValueError, match=why):
            bitstream.with_metadata(blob, bitstream.Metadata(notes=bad))
        trailer = bitstream._NOTES_TRAILER.pack(b"RGBN", 0, 0, bitstream.NO_ALPHA, 0, len(bad)) + bad
        with pytest.raises(BitstreamError, match=f"invalid metadata trailer: notes.*{why}"):  # forged, its CRC right
            bitstream.read_trailer(blob + trailer + zlib.crc32(trailer).to_bytes(4, "little"))
    later = b'{"dpi":[72,72],"gamma":0.45}'  # keys a later version may add: read, not refused
    assert bitstream.read_metadata(bitstream.with_metadata(blob, bitstream.Metadata(notes=later))).notes == later


@pytest.mark.parametrize("alpha, xmp, notes", [(None, None, None), (b"alpha" * 3, None, None), (None, b"<x/>", None),
                                               (b"alpha" * 3, b"<x/>", None), (None, None, b'{"dpi":[1,2]}'),
                                               (b"alpha" * 3, b"<x/>", b'{"text":{"a":"b"}}')])
def test_every_damage_to_a_metadata_trailer_is_refused(alpha, xmp, notes):
    blob = make()
    full = bitstream.with_metadata(blob, bitstream.Metadata(b"p" * 20, b"e" * 9, xmp, notes), alpha)
    for i in range(len(blob), len(full)):  # every byte of it flipped: magic, lengths, fields, checksum
        damaged = bytearray(full)
        damaged[i] ^= 0x10
        for read in (bitstream.read_metadata, bitstream.unpack):  # decoding refuses it too
            with pytest.raises(BitstreamError, match="trailer"):
                read(bytes(damaged))
    for end in range(len(blob) + 1, len(full)):  # cut anywhere inside it
        with pytest.raises(BitstreamError, match="trailer"):
            bitstream.unpack(full[:end], iterations=2)
    with pytest.raises(BitstreamError, match="trailer"):
        bitstream.unpack(full + b"\0")
    with pytest.raises(ValueError, match="follows a whole stream"):  # not after a progressive reader's prefix
        bitstream.with_metadata(blob[:-1], bitstream.Metadata(b"p"))
    with pytest.raises(ValueError, match="over the trailer"):
        bitstream.with_metadata(blob, bitstream.Metadata(bytes(bitstream.MAX_METADATA_BYTES + 1)))
