"""Relative-positional multi-head self-attention (Transformer-XL / Conformer style).

Score between query i and key j, per head (Dh = D / H):

    s_ij = [ (q_i + u)^T k_j  +  (q_i + v)^T W_pos r_(i-j) ] / sqrt(Dh)

with r_d a sinusoidal embedding of the signed distance d = pos(i) - pos(j), learned biases ``u``
(``pos_bias_u``, content) and ``v`` (``pos_bias_v``, position), and ``W_pos`` (``linear_pos``). The
position term is computed for every distance once, (Tq, R) with R = Tk + Tq - 1, and moved to (Tq, Tk)
with the "relative shift" (:func:`rel_shift`).

Queries are the last Tq of the Tk keys (a key/value cache of ``Tk - Tq`` earlier frames may precede
them), so the distance depends only on the slot indices: d = (Tk - Tq + i) - j. Because of that the same
code serves the full sequence (Tk = Tq) and streaming (keys = cache + new block).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn


def rel_positional_encoding(
    q_len: int, k_len: int, d_model: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Sinusoidal embeddings of the distances ``k_len - 1, k_len - 2, ..., -(q_len - 1)`` (descending).

    Returns:
        (R, D) with R = k_len + q_len - 1; row c is the distance ``k_len - 1 - c``.
    """
    if d_model % 2 != 0:
        raise ValueError(f"d_model must be even, got {d_model}")
    dtype = dtype or torch.get_default_dtype()
    num = max(k_len + q_len - 1, 0)
    dist = (k_len - 1 - torch.arange(num, device=device, dtype=dtype)).unsqueeze(1)  # (R, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=dtype) * (-math.log(10000.0) / d_model))
    pe = torch.empty(dist.size(0), d_model, device=device, dtype=dtype)
    pe[:, 0::2] = torch.sin(dist * inv_freq)
    pe[:, 1::2] = torch.cos(dist * inv_freq)
    return pe


def rel_shift(x: Tensor, k_len: int) -> Tensor:
    """Relative shift: (..., Tq, R) scores per distance -> (..., Tq, Tk) scores per key.

    ``out[..., i, j] = x[..., i, Tq - 1 - i + j]`` where column c of ``x`` holds distance ``Tk - 1 - c``
    (see :func:`rel_positional_encoding`), i.e. ``out[..., i, j]`` is the score for distance
    ``Tk - Tq + i - j``. Implemented as a strided view (no copy, no gather index).
    """
    *lead, tq, r = x.shape
    if tq == 0:
        return x.new_zeros(*lead, 0, k_len)
    if r != k_len + tq - 1:
        raise ValueError(f"expected {k_len + tq - 1} distances, got {r}")
    x = x.contiguous()
    lead_strides = list(x.stride()[:-2])
    return x.as_strided((*lead, tq, k_len), (*lead_strides, r - 1, 1), storage_offset=x.storage_offset() + tq - 1)


class AttentionResult(NamedTuple):
    """Output of :class:`RelPositionMultiHeadAttention`.

    out: (N, Tq, D). weights: (N, H, Tq, Tk), exactly 0 where the mask disallows. qkv: (q, k, v) of the
    Tq new frames, each (N, H, Tq, Dh), or None. kv: (k, v) over all Tk keys (cache + new), each
    (N, H, Tk, Dh), for the caller to update its cache.
    """

    out: Tensor
    weights: Tensor
    qkv: tuple[Tensor, Tensor, Tensor] | None
    kv: tuple[Tensor, Tensor]


class RelPositionMultiHeadAttention(nn.Module):
    """Multi-head self-attention with relative positional encoding.

    Args:
        d_model: D.
        num_heads: H (D divisible by H).
        dropout: dropout on the attention weights.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} not divisible by num_heads={num_heads}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.empty(num_heads, self.head_dim))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        """(N, T, D) -> (N, H, T, Dh)."""
        n, t, _ = x.shape
        return x.view(n, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        pos_emb: Tensor,
        attn_mask: Tensor | None = None,
        *,
        cache: tuple[Tensor, Tensor] | None = None,
        need_qkv: bool = False,
    ) -> AttentionResult:
        """
        Args:
            x: (N, Tq, D) the new frames (queries; their keys/values are appended to the cache).
            pos_emb: (R, D) from :func:`rel_positional_encoding` with ``q_len=Tq, k_len=Tk``.
            attn_mask: (N or 1, Tq, Tk) bool, True = may attend; None = everything allowed.
                Every row that matters should allow at least one key (rows allowing none get weights 0).
            cache: (k, v) of L earlier frames, each (N, H, L, Dh); Tk = L + Tq.
            need_qkv: also return q, k, v of the new frames (for attention-relation distillation).

        Returns:
            :class:`AttentionResult`.
        """
        n, tq, _ = x.shape
        q = self._heads(self.linear_q(x))
        k_new = self._heads(self.linear_k(x))
        v_new = self._heads(self.linear_v(x))
        if cache is not None:
            k = torch.cat([cache[0], k_new], dim=2)
            v = torch.cat([cache[1], v_new], dim=2)
        else:
            k, v = k_new, v_new
        tk = k.size(2)

        p = self.linear_pos(pos_emb).view(-1, self.num_heads, self.head_dim).transpose(0, 1)  # (H, R, Dh)
        content = torch.matmul(q + self.pos_bias_u.unsqueeze(1), k.transpose(-2, -1))  # (N, H, Tq, Tk)
        position = torch.matmul(q + self.pos_bias_v.unsqueeze(1), p.transpose(-2, -1))  # (N, H, Tq, R)
        scores = (content + rel_shift(position, tk)) / math.sqrt(self.head_dim)

        if attn_mask is not None:
            blocked = ~attn_mask.unsqueeze(1)  # (N|1, 1, Tq, Tk)
            # finfo.min instead of -inf: rows with no allowed key stay finite (no NaN in backward).
            scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1).masked_fill(blocked, 0.0)
        else:
            weights = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(self.dropout(weights), v)  # (N, H, Tq, Dh)
        out = self.linear_out(ctx.transpose(1, 2).reshape(n, tq, self.d_model))
        qkv = (q, k_new, v_new) if need_qkv else None
        return AttentionResult(out, weights, qkv, (k, v))
