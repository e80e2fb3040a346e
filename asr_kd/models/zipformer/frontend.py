"""Zipformer front end: Conv2d subsampling of 10 ms fbank frames to ~50 Hz, with a ConvNeXt block.

conv (3x3, no time padding) -> SwooshR -> conv (3x3, stride 2) -> SwooshR -> conv (3x3, stride (1, 2))
-> SwooshR -> [ConvNeXt (depthwise 7x7, pointwise expand, SwooshL, pointwise)] -> Linear -> BiasNorm.

The three convolutions have no time padding, so output frame j depends only on input frames
``2j .. 2j + 6`` before the ConvNeXt block, and

    T' = (T - 7) // 2   (clamped at 0).

Frames past an utterance's end are zeroed before the ConvNeXt block, whose 7-frame depthwise kernel
would otherwise see the padding of longer utterances in the batch (so outputs do not depend on padding).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from asr_kd.models.encoder.masks import lengths_to_mask
from asr_kd.models.zipformer.scaling import BiasNorm, swoosh_l, swoosh_r

__all__ = ["ZipformerFrontend", "frontend_lengths"]


def frontend_lengths(x_lens: Tensor) -> Tensor:
    """(N,) input frames T -> (N,) 50 Hz frames ``(T - 7) // 2`` (clamped at 0)."""
    return torch.div(x_lens - 7, 2, rounding_mode="floor").clamp(min=0)


class ZipformerFrontend(nn.Module):
    """(N, T, F) fbank -> (N, (T - 7) // 2, D) at ~50 Hz.

    Args:
        input_dim: F.
        out_dim: D (the first stack's dim).
        channels: the three convolutions' output channels (icefall's default is (8, 32, 128); smaller
            last channels make a CPU step cheaper).
        dropout: dropout on the output.
        convnext: include the ConvNeXt block (its 7x7 depthwise Conv2d is slow on CPU; off in the CPU
            presets).
    """

    def __init__(self, input_dim: int, out_dim: int, channels: Sequence[int] = (8, 32, 64),
                 dropout: float = 0.1, convnext: bool = True) -> None:
        super().__init__()
        c1, c2, c3 = (int(c) for c in channels)
        self.conv1 = nn.Conv2d(1, c1, 3, padding=(0, 1))
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2)
        self.conv3 = nn.Conv2d(c2, c3, 3, stride=(1, 2))
        self.convnext = convnext
        if convnext:
            self.dw = nn.Conv2d(c3, c3, 7, padding=3, groups=c3)
            self.pw1 = nn.Conv2d(c3, 3 * c3, 1)
            self.pw2 = nn.Conv2d(3 * c3, c3, 1)
            with torch.no_grad():
                self.pw2.weight.mul_(0.1)
        f = input_dim  # conv1 keeps F (padding 1)
        f = (f - 3) // 2 + 1
        f = (f - 3) // 2 + 1
        if f < 1:
            raise ValueError(f"input_dim {input_dim} is too small for the Zipformer front end (needs >= 7)")
        self.freq_out = f
        self.out = nn.Linear(c3 * f, out_dim)
        self.norm = BiasNorm(out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, T, F), x_lens: (N,) -> (N, T', D), (N,) with T' = (T - 7) // 2."""
        lens = frontend_lengths(x_lens)
        if x.size(1) < 7:
            return x.new_zeros(x.size(0), 0, self.out.out_features), lens
        h = swoosh_r(self.conv1(x.unsqueeze(1)))  # (N, c1, T-2, F)
        h = swoosh_r(self.conv2(h))
        h = swoosh_r(self.conv3(h))  # (N, c3, T', F')
        if self.convnext:
            valid = lengths_to_mask(lens, h.size(2))  # (N, T')
            h = h * valid[:, None, :, None].to(h.dtype)
            h = h + self.pw2(swoosh_l(self.pw1(self.dw(h))))
        n, c, t, f = h.shape
        h = self.out(h.permute(0, 2, 1, 3).reshape(n, t, c * f))
        return self.dropout(self.norm(h)), lens
