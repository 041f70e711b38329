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
