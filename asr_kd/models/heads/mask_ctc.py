"""Mask-CTC decoder: a conditional masked language model over tokens (Higuchi et al., 2020).

Dimension legend (docs/DESIGN.md): N batch, L token positions, T' encoder frames, D model dim,
V vocabulary. The ``<mask>`` token has id V (the embedding has V + 1 rows, the output V classes);
input padding is -1 (``ignore_id``), masked out of self-attention.
"""

from __future__ import annotations

from torch import Tensor

from asr_kd.models.heads.transformer import DecoderStack

__all__ = ["MaskCtcDecoder"]


class MaskCtcDecoder(DecoderStack):
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
        super().__init__(vocab_size + 1, vocab_size, d_model, num_layers, heads, d_ff, dropout, d_memory)
        self.mask_id = vocab_size
        self.ignore_id = ignore_id

    def forward(self, memory: Tensor, memory_lens: Tensor, ys_masked: Tensor) -> Tensor:
        valid = ys_masked != self.ignore_id  # (N, L)
        self_mask = valid.unsqueeze(1)  # (N, 1, L): every query sees all valid tokens
        x = self.embed(ys_masked.masked_fill(~valid, self.mask_id))
        return self._decode(x, self_mask, self._memory(memory), memory_lens)
