import numpy as np
import pytest

from rgbatch.codec import Codec
from rgbatch.limits import MAX_TILE_PIXELS, layout, padded_extent
from rgbatch.tiling import tile_grid


@pytest.mark.parametrize("height, width, tile", [(1, 1, 0), (1, 1, 32), (33, 70, 32), (100, 130, 64), (512, 513, 512),
                                                  (7, 300, 0), (1000, 31, 96)])
def test_the_padded_extent_is_that_of_the_tiles(height, width, tile):
    tiles = tile_grid(height, width, tile)
    assert layout(width, height, tile) == tiles
    assert padded_extent(height, tile) * padded_extent(width, tile) == sum(
        r * c for r, c in (t.padded_shape(32) for t in tiles))


def test_bounds_and_their_reasons():
    with pytest.raises(ValueError, match="limit of 999 pixels"):
        layout(40, 25, 32, max_pixels=999)
    with pytest.raises(ValueError, match="a tile"):
        layout(4097, 4096, 0)
    assert len(layout(4096, 4096, 0)) == 1 and 4096 * 4096 == MAX_TILE_PIXELS
    with pytest.raises(ValueError, match="padded"):
        layout(1, 3000, 32, max_pixels=3000)  # 32 columns coded for each one
    with pytest.raises(ValueError, match="multiple of 32"):
        layout(10, 10, 33)


def test_the_encoder_refuses_tiles_the_decoder_would(tiny_weights):
    codec = Codec.load(tiny_weights, tile_size=0)
    with pytest.raises(ValueError, match="a tile"):
        codec.encode(np.zeros((4100, 4100, 3), np.uint8), 1, measure=False)
