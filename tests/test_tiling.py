import numpy as np
import pytest

from rgbatch.model import CodecConfig
from rgbatch.tiling import align, check_tile_size, cut, paste, tile_grid, to_float, to_uint8


@pytest.mark.parametrize("h,w,tile", [(1, 1, 0), (7, 3000, 512), (512, 768, 512), (100, 130, 64), (65, 33, 32)])
def test_tiles_cover_the_image_exactly_once(h, w, tile):
    cover = np.zeros((h, w), int)
    for t in tile_grid(h, w, tile):
        cover[t.y:t.y + t.height, t.x:t.x + t.width] += 1
        assert t.padded_shape(32)[0] % 32 == 0 and t.padded_shape(32)[1] % 32 == 0
        assert t.code_shape(CodecConfig()) == (t.padded_shape(32)[0] // 16, t.padded_shape(32)[1] // 16)
    assert (cover == 1).all()


def test_cut_pads_by_edge_replication_and_paste_crops_back(rng):
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    tiles = tile_grid(50, 70, 64)
    parts = cut(image, tiles, 32)
    assert [tuple(p.shape) for p in parts] == [(3, 64, 64), (3, 64, 32)]
    # the padding repeats the last row and column of the image
    last_row = parts[0][:, 49, :]
    assert all(np.array_equal(parts[0][:, r, :], last_row) for r in range(50, 64))
    restored = np.zeros_like(image)
    for part, tile in zip(parts, tiles):
        paste(restored, to_uint8(part), tile)
    assert np.array_equal(restored, image)


def test_uint8_conversions_round_trip(rng):
    image = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    assert np.array_equal(to_uint8(to_float(image)), image)
    batch = rng.integers(0, 256, (2, 7, 5, 3), dtype=np.uint8)  # a batch converts image by image
    assert to_float(batch).shape == (2, 3, 7, 5) and np.array_equal(to_uint8(to_float(batch)), batch)


def test_bad_tile_sizes_and_empty_images_are_refused():
    with pytest.raises(ValueError, match="multiple of 32"):
        check_tile_size(100, 32)
    with pytest.raises(ValueError, match="nothing to code"):
        tile_grid(0, 10, 0)
    assert align(1, 32) == 32 and align(32, 32) == 32 and align(33, 32) == 64


def test_by_default_an_image_is_coded_whole_up_to_two_megapixels_and_in_1024_px_tiles_beyond():
    from rgbatch.tiling import WHOLE_IMAGE_PIXELS, tile_size_for

    assert tile_size_for(None, 853, 1280) == 0  # a 1.1 MP photo: no seams
    assert tile_size_for(None, 1024, WHOLE_IMAGE_PIXELS // 1024) == 0
    assert tile_size_for(None, 1024, WHOLE_IMAGE_PIXELS // 1024 + 1) == 1024
    # counted padded to 32 too: a strip 1 pixel high codes 32 rows (until session 59 one of 0.5 MP
    # was coded whole: 16.7 MP of the network's work at once, 8 GB to decode); ordinary shapes
    # near 2 MP stay whole, as before
    assert tile_size_for(None, 1, WHOLE_IMAGE_PIXELS // 32) == 0
    assert tile_size_for(None, 1, 80000) == tile_size_for(None, 524288, 1) == 1024
    assert tile_size_for(None, 1448, 1448) == tile_size_for(None, 1300, 1600) == tile_size_for(None, 1638, 1280) == 0
    assert tile_size_for(None, 3000, 4000) == 1024
    assert tile_size_for(512, 10, 10) == 512 and tile_size_for(0, 5000, 5000) == 0  # asked for: as asked
