import numpy as np
import pytest

from rgbatch.tiling import align, cut, merge, tile_grid


@pytest.mark.parametrize("h,w,tile", [(1, 1, 0), (7, 3000, 512), (512, 768, 512), (100, 130, 64), (65, 33, 32)])
def test_tiles_cover_the_image_exactly_once(h, w, tile):
    cover = np.zeros((h, w), int)
    for t in tile_grid(h, w, tile):
        cover[t.y:t.y + t.height, t.x:t.x + t.width] += 1
        assert t.padded_shape[0] % 32 == 0 and t.padded_shape[1] % 32 == 0
    assert (cover == 1).all()


def test_cut_pads_by_edge_replication_and_merge_crops_back(rng):
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    tiles = tile_grid(50, 70, 64)
    parts = cut(image, tiles)
    assert [tuple(p.shape) for p in parts] == [(3, 64, 64), (3, 64, 32)]
    # the padding repeats the last row and column of the image
    last_row = parts[0][:, 49, :]
    assert all(np.array_equal(parts[0][:, r, :], last_row) for r in range(50, 64))
    back = merge(parts, tiles, 50, 70)
    restored = ((back + 0.5) * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(restored, image)


def test_bad_tile_sizes_and_empty_images_are_refused():
    with pytest.raises(ValueError, match="multiple of 32"):
        tile_grid(10, 10, 100)
    with pytest.raises(ValueError, match="nothing to code"):
        tile_grid(0, 10, 0)
    assert align(1) == 32 and align(32) == 32 and align(33) == 64
