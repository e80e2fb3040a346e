"""Mask-CTC decoder: a conditional masked language model over tokens (Higuchi et al., 2020).

Dimension legend (docs/DESIGN.md): N batch, L token positions, T' encoder frames, D model dim,
V vocabulary. The ``<mask>`` token has id V (the embedding has V + 1 rows, the output V classes);
input padding is -1 (``ignore_id``), masked out of self-attention.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from asr_kd.models.heads.transformer import DecoderLayer, TokenEmbedding, lengths_to_mask

__all__ = ["MaskCtcDecoder"]


class MaskCtcDecoder(nn.Module):
    """Bidirectional Transformer decoder (no causal mask) with cross-attention to the encoder.

    ``forward(memory (N, T', D_enc), memory_lens (N,), ys_masked (N, L)) -> logits (N, L, V)``,
    ``ys_masked`` holding token ids, ``mask_id`` (= V) at masked positions and ``ignore_id``
    (-1) as padding (build it with :func:`asr_kd.losses.masking.mask_tokens`).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_layers: int = 6,
        heads: int = 4,
        *,
        d_ff: int = 2048,
        dropout: float = 0.1,
        d_memory: int | None = None,
        ignore_id: int = -1,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.mask_id = vocab_size
        self.ignore_id = ignore_id
        self.embed = TokenEmbedding(vocab_size + 1, d_model, dropout)
        self.memory_proj = (
            nn.Linear(d_memory, d_model) if d_memory is not None and d_memory != d_model else None
        )
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, heads, d_ff, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size)

    def forward(self, memory: Tensor, memory_lens: Tensor, ys_masked: Tensor) -> Tensor:
        if self.memory_proj is not None:
            memory = self.memory_proj(memory)
        valid = ys_masked != self.ignore_id  # (N, L)
        self_mask = valid.unsqueeze(1)  # (N, 1, L): every query sees all valid tokens
        mem_mask = lengths_to_mask(memory_lens, memory.size(1)).unsqueeze(1)  # (N, 1, T')
        x = self.embed(ys_masked.masked_fill(~valid, self.mask_id))
        for layer in self.layers:
            x = layer(x, self_mask, memory, mem_mask)
        return self.output(self.norm(x))
