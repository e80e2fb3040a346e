"""Transformer decoder building blocks shared by the attention decoder and the Mask-CTC decoder.

Dimension legend (docs/DESIGN.md): N batch, L decoder positions, T' encoder frames, D model dim,
H heads, Dh = D / H. Masks are boolean with True = "may attend".
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["MultiHeadAttention", "DecoderLayer", "DecoderStack", "TokenEmbedding", "sinusoidal_positions",
           "lengths_to_mask"]


def lengths_to_mask(lens: Tensor, max_len: int | None = None) -> Tensor:
    """(N,) lengths -> (N, max_len) bool, True at valid positions."""
    max_len = int(lens.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lens.device).unsqueeze(0) < lens.unsqueeze(1)


def sinusoidal_positions(length: int, d_model: int, device=None, dtype=None) -> Tensor:
    """(length, D) absolute sinusoidal position encodings (sin on even, cos on odd dims)."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    inv = torch.exp(
        torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
        * (-math.log(10000.0) / d_model)
    )
    pe = torch.zeros(length, d_model, device=device)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)[:, : d_model // 2]
    return pe.to(dtype) if dtype is not None else pe


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention with a boolean mask.

    ``forward(q (N, Lq, D), k (N, Lk, D), v (N, Lk, D), mask (N | 1, Lq | 1, Lk) or None)``
    -> (N, Lq, D). Rows with no allowed key produce zeros (not NaN).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} not divisible by num_heads={num_heads}")
        self.h = num_heads
        self.dh = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        n, lq, d = q.shape
        q = self.q_proj(q).view(n, lq, self.h, self.dh).transpose(1, 2)  # (N, H, Lq, Dh)
        k = self.k_proj(k).view(n, -1, self.h, self.dh).transpose(1, 2)  # (N, H, Lk, Dh)
        v = self.v_proj(v).view(n, -1, self.h, self.dh).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.dh)  # (N, H, Lq, Lk)
        if mask is not None:
            m = mask.unsqueeze(1)  # (N, 1, Lq, Lk)
            scores = scores.masked_fill(~m, torch.finfo(scores.dtype).min)
            attn = scores.softmax(dim=-1).masked_fill(~m, 0.0)
        else:
            attn = scores.softmax(dim=-1)
        out = torch.matmul(self.dropout(attn), v)  # (N, H, Lq, Dh)
        return self.out_proj(out.transpose(1, 2).reshape(n, lq, d))


class DecoderLayer(nn.Module):
    """Pre-LayerNorm Transformer decoder layer: self-attention, cross-attention, feed-forward.

    ``forward(x (N, Lq, D), self_mask (N | 1, Lq, Lkv), memory (N, T', D), memory_mask (N, 1, T'),
    kv=None)`` -> (N, Lq, D). ``kv`` (N, Lkv, D) is the self-attention key/value input when the
    queries are a suffix of the sequence (incremental decoding); default ``kv = x``.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1):
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.norm_src = nn.LayerNorm(d_model)
        self.src_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        self_mask: Tensor | None,
        memory: Tensor,
        memory_mask: Tensor | None,
        kv: Tensor | None = None,
    ) -> Tensor:
        q = self.norm_self(x)
        kv = q if kv is None else self.norm_self(kv)
        x = x + self.dropout(self.self_attn(q, kv, kv, self_mask))
        q = self.norm_src(x)
        x = x + self.dropout(self.src_attn(q, memory, memory, memory_mask))
        return x + self.dropout(self.ff(self.norm_ff(x)))


class TokenEmbedding(nn.Module):
    """Token embedding scaled by sqrt(D) plus sinusoidal positions: (N, L) -> (N, L, D)."""

    def __init__(self, num_embeddings: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(num_embeddings, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ys: Tensor) -> Tensor:
        x = self.embed(ys) * math.sqrt(self.d_model)
        pe = sinusoidal_positions(ys.size(1), self.d_model, device=x.device, dtype=x.dtype)
        return self.dropout(x + pe.unsqueeze(0))


class DecoderStack(nn.Module):
    """Token embedding, ``num_layers`` :class:`DecoderLayer` cross-attending to the encoder memory
    (projected to D when ``d_memory`` differs), final LayerNorm and a linear layer to V classes.

    The base of :class:`~asr_kd.models.heads.AttentionDecoder` (causal self-attention) and
    :class:`~asr_kd.models.heads.MaskCtcDecoder` (bidirectional); they differ in the self-attention
    mask and the embedding size (``num_embeddings``: V, or V + 1 with ``<mask>``).
    """

    def __init__(self, num_embeddings: int, vocab_size: int, d_model: int, num_layers: int, heads: int,
                 d_ff: int, dropout: float, d_memory: int | None):
        super().__init__()
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.num_layers = num_layers
        self.embed = TokenEmbedding(num_embeddings, d_model, dropout)
        self.memory_proj = (
            nn.Linear(d_memory, d_model) if d_memory is not None and d_memory != d_model else None
        )
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, d_ff, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size)

    def _memory(self, memory: Tensor) -> Tensor:
        """(N, T', D_enc) -> (N, T', D)."""
        return memory if self.memory_proj is None else self.memory_proj(memory)

    def _decode(self, x: Tensor, self_mask: Tensor | None, memory: Tensor, memory_lens: Tensor) -> Tensor:
        """Embedded tokens x (N, L, D), projected memory (N, T', D), memory_lens (N,) -> logits (N, L, V)."""
        mem_mask = lengths_to_mask(memory_lens, memory.size(1)).unsqueeze(1)  # (N, 1, T')
        for layer in self.layers:
            x = layer(x, self_mask, memory, mem_mask)
        return self.output(self.norm(x))
