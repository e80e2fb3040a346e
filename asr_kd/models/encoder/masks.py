"""Attention masks for encoders: key padding, chunk (streaming) masks, dynamic chunk sampling.

Convention used throughout ``asr_kd.models.encoder``: a boolean mask is ``True`` where attention is
**allowed** (query i may look at key j), the same sense as ``F.scaled_dot_product_attention``.

Chunk masks are defined on *absolute* frame positions, so the full-sequence forward (positions
``0..T'-1`` for queries and keys) and the streaming forward (queries = the new block, keys = cache +
new block) build their masks with the same function and therefore agree exactly.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Valid-frame mask from lengths.

    Args:
        lengths: (N,) integer lengths.
        max_len: width of the mask; ``lengths.max()`` when None.

    Returns:
        (N, max_len) bool, ``True`` on valid (non-padded) frames.
    """
    if max_len is None:
        max_len = int(lengths.max().item()) if lengths.numel() > 0 else 0
    frames = torch.arange(max_len, device=lengths.device)
    return frames.unsqueeze(0) < lengths.unsqueeze(1)


def chunk_mask_from_positions(q_pos: Tensor, k_pos: Tensor, chunk_size: int, left_context: int) -> Tensor:
    """Chunk attention mask between absolute query and key positions.

    Query at position p may attend key at position q iff ``chunk(q) <= chunk(p)`` and, when
    ``left_context >= 0``, ``chunk(q) >= chunk(p) - left_context`` where ``chunk(x) = x // chunk_size``.
    ``chunk_size <= 0`` means full context (everything allowed).

    Args:
        q_pos: (..., Tq) integer absolute positions of the queries.
        k_pos: (..., Tk) integer absolute positions of the keys (broadcastable batch dims with q_pos).
        chunk_size: encoder frames per chunk, or -1 for full context.
        left_context: number of chunks to the left that are visible, or -1 for all of them.

    Returns:
        (..., Tq, Tk) bool, ``True`` where allowed.
    """
    if chunk_size <= 0:
        shape = torch.broadcast_shapes(q_pos.shape[:-1], k_pos.shape[:-1]) + (q_pos.shape[-1], k_pos.shape[-1])
        return torch.ones(shape, dtype=torch.bool, device=q_pos.device)
    q_chunk = torch.div(q_pos, chunk_size, rounding_mode="floor").unsqueeze(-1)
    k_chunk = torch.div(k_pos, chunk_size, rounding_mode="floor").unsqueeze(-2)
    allowed = k_chunk <= q_chunk
    if left_context >= 0:
        allowed = allowed & (k_chunk >= q_chunk - left_context)
    return allowed


def chunk_attention_mask(
    length: int, chunk_size: int, left_context: int = -1, device: torch.device | None = None
) -> Tensor:
    """Full-sequence chunk mask over frames ``0..length-1``.

    Returns:
        (T', T') bool, ``True`` where frame i may attend frame j.
    """
    pos = torch.arange(length, device=device)
    return chunk_mask_from_positions(pos, pos, chunk_size, left_context)


def sample_chunk_size(max_chunk: int, rng: random.Random, *, full_context_prob: float = 0.5) -> int:
    """Dynamic chunk training: draw the chunk size for one batch.

    With probability ``full_context_prob`` returns -1 (full context, the non-streaming mode),
    otherwise a chunk size drawn uniformly from ``1..max_chunk`` (encoder frames). Training on a mix of
    chunk sizes makes one model usable at any chunk size at inference (WeNet's dynamic chunk idea).

    Args:
        max_chunk: largest chunk size in encoder frames (>= 1).
        rng: a ``random.Random`` owned by the caller (so runs are reproducible per rank/epoch).
        full_context_prob: probability of the full-context draw.
    """
    if max_chunk < 1:
        raise ValueError(f"max_chunk must be >= 1, got {max_chunk}")
    if rng.random() < full_context_prob:
        return -1
    return rng.randint(1, max_chunk)


def sample_left_context(max_left_chunks: int, rng: random.Random, *, unlimited_prob: float = 0.5) -> int:
    """Dynamic left context for chunk training: -1 (all left chunks) with ``unlimited_prob``, else
    uniform in ``0..max_left_chunks``. Use together with :func:`sample_chunk_size` when the streaming
    model will run with a bounded left context (bounded attention cache)."""
    if max_left_chunks < 0:
        raise ValueError(f"max_left_chunks must be >= 0, got {max_left_chunks}")
    if rng.random() < unlimited_prob:
        return -1
    return rng.randint(0, max_left_chunks)
