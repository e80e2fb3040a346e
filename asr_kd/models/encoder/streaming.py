"""Simulated streaming over a whole batch: feed an encoder piece by piece, collect its outputs."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from asr_kd.models.encoder.base import Encoder


@torch.no_grad()
def stream_encoder(
    encoder: Encoder, x: Tensor, x_lens: Tensor, *, feed_frames: int, **stream_options: Any
) -> tuple[Tensor, Tensor]:
    """Run ``encoder.streaming_forward`` over ``x`` in pieces of ``feed_frames`` input frames.

    Each row is finalised in the call that contains its last frame. Useful for streaming decoding
    experiments and for checking streaming against ``encoder.forward``.

    Args:
        encoder: any :class:`Encoder` (in eval mode for deterministic output).
        x: (N, T, F) features; x_lens: (N,) valid frames.
        feed_frames: input frames per call (e.g. ``4 * chunk_size`` for one encoder chunk per call).
        stream_options: passed to ``encoder.init_state`` (``chunk_size``, ``left_context``, ...).

    Returns:
        out (N, T', D) zero padded, out_lens (N,).
    """
    if feed_frames < 1:
        raise ValueError(f"feed_frames must be >= 1, got {feed_frames}")
    n = x.size(0)
    state = encoder.init_state(n, x.device, **stream_options)
    pieces: list[list[Tensor]] = [[] for _ in range(n)]
    total = max(x.size(1), 1)
    for start in range(0, total, feed_frames):
        piece = x[:, start : start + feed_frames]
        lens = (x_lens - start).clamp(0, piece.size(1))
        final = x_lens <= start + feed_frames
        out, out_lens, state = encoder.streaming_forward(piece, lens, state, final=final)
        for r in range(n):
            if int(out_lens[r]) > 0:
                pieces[r].append(out[r, : int(out_lens[r])])
    rows = [torch.cat(p, dim=0) if p else x.new_zeros(0, encoder.output_dim) for p in pieces]
    out_lens = torch.tensor([r.size(0) for r in rows], dtype=torch.long, device=x.device)
    width = int(out_lens.max().item()) if n > 0 else 0
    out = x.new_zeros(n, width, encoder.output_dim)
    for r, row in enumerate(rows):
        out[r, : row.size(0)] = row
    return out, out_lens
