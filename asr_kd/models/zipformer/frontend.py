"""Zipformer front end: Conv2d subsampling of 10 ms fbank frames to ~50 Hz, with a ConvNeXt block.

conv (3x3, no time padding) -> SwooshR -> conv (3x3, stride 2) -> SwooshR -> conv (3x3, stride (1, 2))
-> SwooshR -> [ConvNeXt (depthwise 7x7, pointwise expand, SwooshL, pointwise)] -> Linear -> BiasNorm.

The three convolutions have no time padding, so their output ("conv frame") j depends only on input
frames ``2j .. 2j + 8`` and

    T' = (T - 7) // 2   (clamped at 0).

Frames past an utterance's end are zeroed before the ConvNeXt block, whose 7-frame depthwise kernel
would otherwise see the padding of longer utterances in the batch (so outputs do not depend on padding).
The ConvNeXt kernel is symmetric in time: output frame j also depends on conv frames ``j - 3 .. j + 3``,
i.e. on input frames up to ``2j + 14``.

Streaming (:meth:`ZipformerFrontend.streaming_forward`) reproduces :meth:`ZipformerFrontend.forward`
exactly: a raw-frame buffer that always starts at an even input frame feeds the convolutions, and a
buffer of conv frames holds the ConvNeXt block's 3 frames of left context and holds back the 3 frames
of look-ahead it needs on the right (30 ms at 50 Hz, 60 ms of input).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from asr_kd.models.encoder.masks import lengths_to_mask
from asr_kd.models.encoder.subsampling import _drop_prefix, _pack_rows
from asr_kd.models.zipformer.scaling import BiasNorm, swoosh_l, swoosh_r

__all__ = ["FrontendStreamState", "ZipformerFrontend", "frontend_lengths"]

#: input frames seen by one conv frame (three valid 3-frame convolutions, the middle one with stride 2)
RECEPTIVE_FIELD = 9
#: input frames per conv frame
STRIDE = 2


def frontend_lengths(x_lens: Tensor) -> Tensor:
    """(N,) input frames T -> (N,) 50 Hz frames ``(T - 7) // 2`` (clamped at 0)."""
    return torch.div(x_lens - 7, 2, rounding_mode="floor").clamp(min=0)


@dataclass
class FrontendStreamState:
    """Streaming buffers of :class:`ZipformerFrontend` (one row per stream, left-aligned, zero padded).

    raw (N, B, F) / raw_lens (N,): input frames not yet turned into conv frames; the buffer starts at
    input frame ``2j`` for the next conv frame ``j``. frames (N, L + P, C) / frames_lens (N,): conv
    frames (C = channels x frequency bins, flattened): ``L = ZipformerFrontend.context`` frames of left
    context of the next frame to emit (zeros at the start of a stream), then P pending conv frames.
    """

    raw: Tensor
    raw_lens: Tensor
    frames: Tensor
    frames_lens: Tensor


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

    def __init__(
        self,
        input_dim: int,
        out_dim: int,
        channels: Sequence[int] = (8, 32, 64),
        dropout: float = 0.1,
        convnext: bool = True,
    ) -> None:
        super().__init__()
        c1, c2, c3 = (int(c) for c in channels)
        self.conv1 = nn.Conv2d(1, c1, 3, padding=(0, 1))
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2)
        self.conv3 = nn.Conv2d(c2, c3, 3, stride=(1, 2))
        self.convnext = convnext
        if convnext:
            # time padding is explicit (zeros in forward, the left context / look-ahead when streaming)
            self.dw = nn.Conv2d(c3, c3, 7, padding=(0, 3), groups=c3)
            self.pw1 = nn.Conv2d(c3, 3 * c3, 1)
            self.pw2 = nn.Conv2d(3 * c3, c3, 1)
            with torch.no_grad():
                self.pw2.weight.mul_(0.1)
        f = input_dim  # conv1 keeps F (padding 1)
        f = (f - 3) // 2 + 1
        f = (f - 3) // 2 + 1
        if f < 1:
            raise ValueError(f"input_dim {input_dim} is too small for the Zipformer front end (needs >= 7)")
        self.input_dim = input_dim
        self.channels = c3
        self.freq_out = f
        self.out = nn.Linear(c3 * f, out_dim)
        self.norm = BiasNorm(out_dim)
        self.dropout = nn.Dropout(dropout)

    @property
    def context(self) -> int:
        """Conv frames of context the ConvNeXt block needs on each side of a frame (0 without it)."""
        return 3 if self.convnext else 0

    @property
    def out_dim(self) -> int:
        return self.out.out_features

    def conv_frames(self, x: Tensor) -> Tensor:
        """The three convolutions: (N, T, F) -> (N, (T - 7) // 2, C) conv frames, C = channels x bins."""
        if x.size(1) < RECEPTIVE_FIELD:
            return x.new_zeros(x.size(0), 0, self.channels * self.freq_out)
        h = swoosh_r(self.conv1(x.unsqueeze(1)))  # (N, c1, T-2, F)
        h = swoosh_r(self.conv2(h))
        h = swoosh_r(self.conv3(h))  # (N, c3, T', F')
        n, c, t, f = h.shape
        return h.permute(0, 2, 1, 3).reshape(n, t, c * f)

    def project(self, frames: Tensor) -> Tensor:
        """(N, L + T + L, C) conv frames with ``L = context`` frames of context on each side ->
        (N, T, D): the ConvNeXt block (when present), Linear, BiasNorm, dropout."""
        if self.convnext:
            n, w, _ = frames.shape
            ctx = self.context
            h = frames.reshape(n, w, self.channels, self.freq_out).permute(0, 2, 1, 3)  # (N, c3, W, F')
            h = h[:, :, ctx : w - ctx] + self.pw2(swoosh_l(self.pw1(self.dw(h))))
            frames = h.permute(0, 2, 1, 3).reshape(n, w - 2 * ctx, -1)
        return self.dropout(self.norm(self.out(frames)))

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, T, F), x_lens: (N,) -> (N, T', D), (N,) with T' = (T - 7) // 2."""
        lens = frontend_lengths(x_lens)
        frames = self.conv_frames(x)
        if frames.size(1) == 0:
            return x.new_zeros(x.size(0), 0, self.out_dim), lens
        if self.convnext:
            frames = frames * lengths_to_mask(lens, frames.size(1)).unsqueeze(-1).to(frames.dtype)
            frames = nn.functional.pad(frames, (0, 0, self.context, self.context))
        return self.project(frames), lens

    # ------------------------------------------------------------------ streaming
    def init_stream(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> FrontendStreamState:
        """Empty buffers for ``batch_size`` streams (the ConvNeXt left context starts as zeros)."""
        n, ctx = batch_size, self.context
        return FrontendStreamState(
            raw=torch.zeros(n, 0, self.input_dim, device=device, dtype=dtype),
            raw_lens=torch.zeros(n, dtype=torch.long, device=device),
            frames=torch.zeros(n, ctx, self.channels * self.freq_out, device=device, dtype=dtype),
            frames_lens=torch.full((n,), ctx, dtype=torch.long, device=device),
        )

    def streaming_forward(
        self, x: Tensor, x_lens: Tensor, state: FrontendStreamState, *, chunk_frames: int, final: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Feed new input frames; emits 50 Hz frames equal to :meth:`forward`'s.

        Frames are emitted in whole multiples of ``chunk_frames`` per row once their look-ahead
        (``context`` conv frames) is available; rows with ``final`` set emit every remaining frame
        (the frames past the end count as zeros, as in :meth:`forward`) and drop what is left.

        Args:
            x: (N, Tc, F) new input frames; x_lens: (N,) valid new frames per row (0 allowed).
            state: :class:`FrontendStreamState`, updated in place.
            chunk_frames: emit frames in multiples of this (> 0).
            final: (N,) bool, the stream of that row ends with this call.

        Returns:
            out (N, E, D), out_lens (N,) frames emitted per row (a multiple of ``chunk_frames`` unless final).
        """
        if chunk_frames <= 0:
            raise ValueError(f"streaming needs chunk_frames > 0, got {chunk_frames}")
        raw, total = _pack_rows(state.raw, state.raw_lens, x.to(state.raw.dtype), x_lens)
        avail = torch.div(total - 7, STRIDE, rounding_mode="floor").clamp(min=0)  # new conv frames
        a = int(avail.max().item()) if avail.numel() > 0 else 0
        if a > 0:
            new = self.conv_frames(raw[:, : STRIDE * a + RECEPTIVE_FIELD - STRIDE])[:, :a]
        else:
            new = state.frames.new_zeros(raw.size(0), 0, state.frames.size(2))
        state.raw, state.raw_lens = _drop_prefix(raw, total, torch.where(final, total, STRIDE * avail))

        ctx = self.context
        frames, lens = _pack_rows(state.frames, state.frames_lens, new, avail)
        pending = lens - ctx
        ready = torch.div((pending - ctx).clamp(min=0), chunk_frames, rounding_mode="floor") * chunk_frames
        emit = torch.where(final, pending, ready)
        e = int(emit.max().item()) if emit.numel() > 0 else 0
        if e > 0:
            width = e + 2 * ctx
            if frames.size(1) < width:
                frames_w = nn.functional.pad(frames, (0, 0, 0, width - frames.size(1)))
            else:
                frames_w = frames[:, :width]
            out = self.project(frames_w)
        else:
            out = frames.new_zeros(frames.size(0), 0, self.out_dim)
        state.frames, state.frames_lens = _drop_prefix(frames, lens, emit)
        return out, emit
