"""`benchmarks/display_head.py`: the head starts as the identity, reads the decoder's last hidden
state, and its training loop sees what decoding the codes gives."""

import sys
from pathlib import Path

import torch

from rgbatch.model import CodecConfig, ResidualGRUCodec

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import display_head  # noqa: E402


def test_head_starts_as_the_identity_and_then_reads_the_hidden_state():
    torch.manual_seed(0)
    model = ResidualGRUCodec(CodecConfig(width=0.125)).eval()
    x = torch.rand(1, 3, 32, 32) - 0.5
    with torch.no_grad():
        states = display_head.loop_states(model, x, 3)
        codes = model.encode(x, 3)
        for t, (x_hat, hidden) in enumerate(states):  # the loop's states are the decoder's on its codes
            decoded = model.decode_from(codes[:t + 1])
            assert torch.equal(x_hat, decoded.x_hat.clamp(-0.5, 0.5))
            assert torch.equal(hidden, decoded.hidden[3].float())
        head = display_head.DisplayHead(model.decoder.grus[3].hidden_ch, channels=8, blocks=1)
        x_hat, hidden = states[-1]
        depth = torch.tensor([3])
        assert torch.equal(head(x_hat, hidden, depth), x_hat)
        torch.nn.init.normal_(head.conv_out.weight, std=0.1)
        moved = head(x_hat, hidden + 1, depth) - head(x_hat, hidden, depth)
        assert moved.abs().max() > 0  # the hidden state reaches the output
