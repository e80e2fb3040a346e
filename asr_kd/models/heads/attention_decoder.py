"""Autoregressive Transformer attention decoder (joint CTC/attention, attention rescoring).

Dimension legend (docs/DESIGN.md): N batch, B hypotheses, L decoder positions, T' encoder frames,
D model dim, V vocabulary. ``sos == eos`` (``tokenizer.sos_id``); label padding is -1.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from asr_kd.models.heads.transformer import DecoderStack

__all__ = ["AttentionDecoder", "add_sos_eos", "causal_mask"]


def causal_mask(length: int, device=None) -> Tensor:
    """(1, L, L) bool, True on and below the diagonal (position i sees positions <= i)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril().unsqueeze(0)


def add_sos_eos(
    tokens: Sequence[Sequence[int]],
    sos: int,
    eos: int,
    *,
    ignore_id: int = -1,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Teacher-forcing input/output pair.

    Returns ``ys_in (N, S_max + 1)`` = ``[sos, y_1..y_S]`` padded with ``eos`` and
    ``ys_out (N, S_max + 1)`` = ``[y_1..y_S, eos]`` padded with ``ignore_id``.
    """
    n = len(tokens)
    width = max([len(t) for t in tokens] + [0]) + 1
    ys_in = torch.full((n, width), eos, dtype=torch.int64)
    ys_out = torch.full((n, width), ignore_id, dtype=torch.int64)
    for i, t in enumerate(tokens):
        y = torch.as_tensor(list(t), dtype=torch.int64)
        ys_in[i, 0] = sos
        ys_in[i, 1 : len(t) + 1] = y
        ys_out[i, : len(t)] = y
        ys_out[i, len(t)] = eos
    return ys_in.to(device), ys_out.to(device)


class AttentionDecoder(DecoderStack):
    """Transformer decoder: causal self-attention over tokens + cross-attention to the encoder.

    Teacher-forced :meth:`forward` and incremental :meth:`forward_one_step` give the same outputs
    (tested). Pre-LayerNorm layers, sinusoidal absolute positions, final LayerNorm + linear.
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
    ):
        super().__init__(vocab_size, vocab_size, d_model, num_layers, heads, d_ff, dropout, d_memory)

    def forward(self, memory: Tensor, memory_lens: Tensor, ys_in: Tensor) -> Tensor:
        """memory (N, T', D_enc), memory_lens (N,), ys_in (N, L) -> logits (N, L, V).

        Position i depends on ``ys_in[:, :i + 1]`` only, so padding at the end needs no mask.
        """
        self_mask = causal_mask(ys_in.size(1), ys_in.device)
        return self._decode(self.embed(ys_in), self_mask, self._memory(memory), memory_lens)

    def forward_one_step(
        self,
        memory: Tensor,
        memory_mask: Tensor,
        ys: Tensor,
        cache: list[Tensor] | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """One decoding step for B hypotheses.

        Args:
          memory: (B, T', D_enc) encoder output (repeated per hypothesis).
          memory_mask: (B, T') or (B, 1, T') bool, True at valid frames.
          ys: (B, l) the hypotheses so far, starting with sos.
          cache: None (then every position of ``ys`` is computed), else the cache returned by
            the previous step: one (B, l - 1, D) tensor per layer, that layer's outputs at
            positions < l - 1 (reorder its batch dim with the surviving hypotheses).
        Returns:
          ``(logp (B, V) log-softmax of the next token, new cache (per layer (B, l, D)))``.
        """
        memory = self._memory(memory)
        if memory_mask.dim() == 2:
            memory_mask = memory_mask.unsqueeze(1)
        x = self.embed(ys)  # (B, l, D): layer-0 input at every position
        new_cache: list[Tensor] = []
        causal = causal_mask(ys.size(1), ys.device) if cache is None else None
        for i, layer in enumerate(self.layers):
            if cache is None:  # no cache yet: run every position (causally)
                y = layer(x, causal, memory, memory_mask)
            else:  # queries: the last position; keys/values: this layer's input, all positions
                y = torch.cat([cache[i], layer(x[:, -1:], None, memory, memory_mask, kv=x)], 1)
            new_cache.append(y)
            x = y
        logits = self.output(self.norm(x[:, -1]))
        return logits.float().log_softmax(dim=-1), new_cache
