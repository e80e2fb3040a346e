"""Conv2d subsampling: the lengths formula, padding, and exact streaming of the front end."""

import pytest
import torch

from asr_kd.models.encoder.subsampling import Conv2dSubsampling4, conv2d_subsampled_lengths


def _front_end(input_dim: int = 20, d_model: int = 16) -> Conv2dSubsampling4:
    torch.manual_seed(0)
    return Conv2dSubsampling4(input_dim, d_model, channels=8).double().eval()


def test_lengths_formula_matches_the_convolutions():
    sub = _front_end()
    for t in range(0, 80):
        expected = conv2d_subsampled_lengths(torch.tensor([t])).item()
        if t >= 7:  # the convolutions can only run on >= 7 frames; compare with the raw conv stack
            raw = sub.conv(torch.zeros(1, 1, t, 20, dtype=torch.float64)).size(2)
            assert raw == expected, t
        assert expected == max((t - 3) // 4, 0)
        out, lens = sub(torch.zeros(1, t, 20, dtype=torch.float64), torch.tensor([t]))
        assert out.shape == (1, expected, 16)
        assert lens.item() == expected


def test_valid_outputs_ignore_padding():
    sub = _front_end()
    x = torch.randn(1, 41, 20, dtype=torch.float64)
    alone, n = sub(x, torch.tensor([41]))
    padded = torch.cat([x, 100 * torch.randn(1, 30, 20, dtype=torch.float64)], dim=1)
    batched, n2 = sub(padded, torch.tensor([41]))
    assert n.item() == n2.item() == 9
    torch.testing.assert_close(batched[:, :9], alone)


@pytest.mark.parametrize("feed", [1, 3, 4, 9, 100])
@pytest.mark.parametrize("chunk_size", [1, 2, 5])
def test_streaming_equals_full(feed, chunk_size):
    sub = _front_end()
    lens = torch.tensor([57, 30, 7, 3])
    x = torch.randn(4, 57, 20, dtype=torch.float64)
    full, full_lens = sub(x, lens)
    buf, buf_lens = x.new_zeros(4, 0, 20), torch.zeros(4, dtype=torch.long)
    got = [[] for _ in range(4)]
    for start in range(0, 57, feed):
        piece = x[:, start : start + feed]
        piece_lens = (lens - start).clamp(0, piece.size(1))
        final = lens <= start + feed
        out, out_lens, buf, buf_lens = sub.streaming_forward(
            piece, piece_lens, buf, buf_lens, chunk_size=chunk_size, final=final
        )
        for r in range(4):
            n = int(out_lens[r])
            # whole chunks only, except in the final call of a row
            assert n % chunk_size == 0 or bool(final[r])
            got[r].append(out[r, :n])
    for r in range(4):
        row = torch.cat(got[r])
        assert row.size(0) == full_lens[r]
        torch.testing.assert_close(row, full[r, : full_lens[r]])
    assert int(buf_lens.max()) == 0  # everything flushed
