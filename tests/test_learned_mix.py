"""`benchmarks/learned_mix.py`: the network reads only what the decoder has, on the coder's own
checkerboard, and the mix measures what it says."""

import sys
from pathlib import Path

import numpy as np
import torch

from rgbatch.context import GUTTER, Canvas

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import learned_mix  # noqa: E402
from learned_context import BitPredictor  # noqa: E402


def _tiles(rng):
    # two tiles side by side: the second's colours start on the other parity of the canvas
    return [rng.random((3, 4, 5, 6)) < 0.5, rng.random((3, 4, 6, 5)) < 0.5]


def test_no_probability_reads_its_own_bit_or_a_later_one():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = BitPredictor(bits=4, iterations=3, hidden=8).eval()
    with torch.no_grad():  # random weights, so that every input the network reads moves its output
        for p in model.parameters():
            p.normal_(0, 0.5)
    tiles = _tiles(rng)
    layout = Canvas(tuple(t.shape[1:] for t in tiles))
    assert (GUTTER + layout.left[1]) % 2 == 1  # the second tile is read shifted by a column
    before = learned_mix.network_probabilities(model, tiles)
    # iteration 2's steps in coding order: (colour, channel), the positions of that colour
    order = [(s, c) for s in (0, 1) for c in range(4)]
    for i, (s, c) in enumerate(order):
        for tile, x0 in enumerate(layout.left):
            flat = rng.choice(layout.positions[s][layout.position_tiles[s] == tile])
            row, col = divmod(int(flat), layout.width)
            flipped = [t.copy() for t in tiles]
            flipped[tile][1, c, row - GUTTER, col - x0] ^= True
            after = learned_mix.network_probabilities(model, flipped)
            # nothing coded before this bit, nor the bit itself, may move
            steps = zip(learned_mix.steps_of([p[1] for p in before], layout),
                        learned_mix.steps_of([p[1] for p in after], layout))
            for t, (b, a) in enumerate(steps):
                if t <= i:
                    assert np.array_equal(a, b), (s, c, tile, t)
            # while the next iteration reads it
            assert not np.allclose(np.concatenate([p[2].ravel() for p in after]),
                                   np.concatenate([p[2].ravel() for p in before]))


def test_the_mix_starts_as_the_coder_and_learns_from_the_network():
    rng = np.random.default_rng(1)
    y = [rng.random(500) < 0.8 for _ in range(20)]
    coder = [np.full(500, 0.5) for _ in y]
    network = [np.where(bits, 0.9, 0.1) for bits in y]  # a network that knows the bits
    own, (mixed, learned), alone = learned_mix.mixed_lengths(coder, network, y, rates=[0.0, 1.0])
    assert own == mixed == 20 * 500  # at rate 0 the mix is the coder's: one bit a bit
    assert np.isclose(alone, -20 * 500 * np.log2(0.9))
    assert learned < 0.7 * own
    # each rate's mix on its own: the same as with the others beside it
    assert np.isclose(learned_mix.mixed_lengths(coder, network, y, rates=[1.0])[1][0], learned)
