"""Transformer decoder building blocks shared by the attention decoder and the Mask-CTC decoder.

Dimension legend (docs/DESIGN.md): N batch, L decoder positions, T' encoder frames, D model dim,
H heads, Dh = D / H. Masks are boolean with True = "may attend".
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "MultiHeadAttention",
    "DecoderLayer",
    "DecoderStack",
    "TokenEmbedding",
    "sinusoidal_positions",
    "lengths_to_mask",
]


def lengths_to_mask(lens: Tensor, max_len: int | None = None) -> Tensor:
    """(N,) lengths -> (N, max_len) bool, True at valid positions."""
    max_len = int(lens.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lens.device).unsqueeze(0) < lens.unsqueeze(1)


def sinusoidal_positions(length: int, d_model: int, device=None, dtype=None, *, start: int = 0) -> Tensor:
    """(length, D) absolute sinusoidal position encodings (sin on even, cos on odd dims) of positions
    ``start .. start + length - 1`` (row i equals row ``start + i`` of the table from position 0)."""
    pos = torch.arange(start, start + length, device=device, dtype=torch.float32).unsqueeze(1)
    inv = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model, device=device)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)[:, : d_model // 2]
    return pe.to(dtype) if dtype is not None else pe


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention with a boolean mask.

    ``forward(q (N, Lq, D), k (N, Lk, D), v (N, Lk, D), mask (N | 1, Lq | 1, Lk) or None)``
    -> (N, Lq, D). Rows with no allowed key produce zeros (not NaN).

    ``forward`` is :meth:`project_kv` followed by :meth:`attend`; incremental decoding calls them
    separately so that projected keys/values (of the encoder memory, of earlier positions) are
    computed once and reused.
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
        return self.attend(q, *self.project_kv(k, v), mask)

    def project_kv(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Key/value inputs (N, Lk, D) -> projected per-head keys and values, each (N, H, Lk, Dh)."""
        n = k.size(0)
        k = self.k_proj(k).view(n, -1, self.h, self.dh).transpose(1, 2)  # (N, H, Lk, Dh)
        v = self.v_proj(v).view(n, -1, self.h, self.dh).transpose(1, 2)
        return k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Query input q (N, Lq, D), projected k, v (N, H, Lk, Dh) from :meth:`project_kv`,
        mask (N | 1, Lq | 1, Lk) or None -> (N, Lq, D).

        Grouped form: k, v (G, H, Lk, Dh) with N = G * W: query rows ``g * W .. g * W + W - 1`` all
        attend to keys/values row g (the W beam hypotheses of one utterance share its memory),
        which reads each utterance's keys/values once instead of W times.
        """
        n, lq, d = q.shape
        g = k.size(0)
        if g != n:
            if n % g:
                raise ValueError(f"{n} query rows cannot share {g} key/value rows")
            if mask is not None:
                mask = mask.expand(n, lq, mask.size(-1)).reshape(g, n // g * lq, -1)
            return self.attend(q.reshape(g, n // g * lq, d), k, v, mask).view(n, lq, d)
        q = self.q_proj(q).view(n, lq, self.h, self.dh).transpose(1, 2)  # (N, H, Lq, Dh)
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

    ``forward(x (N, L, D), self_mask (N | 1, L, L) or None, memory (N, T', D), memory_mask (N, 1, T'))``
    -> (N, L, D). :meth:`forward_cached` is the incremental form (projected keys/values of the
    memory and of the earlier positions given, only new positions computed).
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1):
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.norm_src = nn.LayerNorm(d_model)
        self.src_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, self_mask: Tensor | None, memory: Tensor, memory_mask: Tensor | None) -> Tensor:
        return self.forward_cached(x, self_mask, None, self.memory_kv(memory), memory_mask)[0]

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of the memory (N, T', D): each (N, H, T', Dh)."""
        return self.src_attn.project_kv(memory, memory)

    def forward_cached(
        self,
        x: Tensor,
        self_mask: Tensor | None,
        self_kv: tuple[Tensor, Tensor] | None,
        memory_kv: tuple[Tensor, Tensor],
        memory_mask: Tensor | None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The layer on Lq new positions after Lp earlier ones whose self-attention keys/values are cached.

        Args:
          x: (N, Lq, D) layer input at the new positions.
          self_mask: (N | 1, Lq, Lp + Lq) bool or None (every query sees every key).
          self_kv: None (Lp = 0) or the (k, v) returned for the earlier positions, each (N, H, Lp, Dh).
          memory_kv: :meth:`memory_kv` of the memory, each (N, H, T', Dh).
          memory_mask: (N | 1, 1, T') bool or None.
        Returns:
          ``(y (N, Lq, D), (k, v))`` with the self-attention keys/values of all Lp + Lq positions.
        """
        q = self.norm_self(x)
        k, v = self.self_attn.project_kv(q, q)
        if self_kv is not None:
            k = torch.cat([self_kv[0], k], dim=2)
            v = torch.cat([self_kv[1], v], dim=2)
        x = x + self.dropout(self.self_attn.attend(q, k, v, self_mask))
        q = self.norm_src(x)
        x = x + self.dropout(self.src_attn.attend(q, *memory_kv, memory_mask))
        return x + self.dropout(self.ff(self.norm_ff(x))), (k, v)


class TokenEmbedding(nn.Module):
    """Token embedding scaled by sqrt(D) plus sinusoidal positions: (N, L) -> (N, L, D).

    ``forward(ys, start=s)`` embeds tokens at positions ``s .. s + L - 1`` (incremental decoding).
    """

    def __init__(self, num_embeddings: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(num_embeddings, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ys: Tensor, start: int = 0) -> Tensor:
        x = self.embed(ys) * math.sqrt(self.d_model)
        pe = sinusoidal_positions(ys.size(1), self.d_model, device=x.device, dtype=x.dtype, start=start)
        return self.dropout(x + pe.unsqueeze(0))


class DecoderStack(nn.Module):
    """Token embedding, ``num_layers`` :class:`DecoderLayer` cross-attending to the encoder memory
    (projected to D when ``d_memory`` differs), final LayerNorm and a linear layer to V classes.

    The base of :class:`~asr_kd.models.heads.AttentionDecoder` (causal self-attention) and
    :class:`~asr_kd.models.heads.MaskCtcDecoder` (bidirectional); they differ in the self-attention
    mask and the embedding size (``num_embeddings``: V, or V + 1 with ``<mask>``).
    """

    def __init__(
        self,
        num_embeddings: int,
        vocab_size: int,
        d_model: int,
        num_layers: int,
        heads: int,
        d_ff: int,
        dropout: float,
        d_memory: int | None,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.num_layers = num_layers
        self.embed = TokenEmbedding(num_embeddings, d_model, dropout)
        self.memory_proj = nn.Linear(d_memory, d_model) if d_memory is not None and d_memory != d_model else None
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, d_ff, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size)

    def _memory(self, memory: Tensor) -> Tensor:
        """(N, T', D_enc) -> (N, T', D)."""
        return memory if self.memory_proj is None else self.memory_proj(memory)

    def precompute_memory(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Encoder memory (N, T', D_enc) -> per layer the cross-attention (keys, values), each
        (N, H, T', Dh): the part of the decoder that depends on the memory only, computed once per
        utterance batch for incremental decoding. A tree of tensors with the batch first: pass it as
        is (grouped: W hypotheses per utterance, see :meth:`MultiHeadAttention.attend`) or expanded
        to hypotheses with :func:`asr_kd.decoding.common.index_select_tree`."""
        memory = self._memory(memory)
        return [layer.memory_kv(memory) for layer in self.layers]

    def _decode(self, x: Tensor, self_mask: Tensor | None, memory: Tensor, memory_lens: Tensor) -> Tensor:
        """Embedded tokens x (N, L, D), projected memory (N, T', D), memory_lens (N,) -> logits (N, L, V)."""
        mem_mask = lengths_to_mask(memory_lens, memory.size(1)).unsqueeze(1)  # (N, 1, T')
        for layer in self.layers:
            x = layer(x, self_mask, memory, mem_mask)
        return self.output(self.norm(x))
