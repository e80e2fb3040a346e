"""Autoregressive Transformer attention decoder (joint CTC/attention, attention rescoring).

Dimension legend (docs/DESIGN.md): N batch, B hypotheses, L decoder positions, T' encoder frames,
D model dim, V vocabulary. ``sos == eos`` (``tokenizer.sos_id``); label padding is -1.
"""

from __future__ import annotations

from collections.abc import Sequence

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

    Teacher-forced :meth:`forward` and incremental :meth:`forward_one_step` (cached cross- and
    self-attention keys/values) give the same outputs (tested). Pre-LayerNorm layers, sinusoidal
    absolute positions, final LayerNorm + linear.
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
        memory: Tensor | list[tuple[Tensor, Tensor]],
        memory_mask: Tensor,
        ys: Tensor,
        cache: dict | None = None,
    ) -> tuple[Tensor, dict]:
        """Incremental decoding step for B hypotheses: only the new positions of ``ys`` are computed.

        The cross-attention keys/values of the memory are computed once (by
        :meth:`~asr_kd.models.heads.transformer.DecoderStack.precompute_memory`, or on the first
        step and then kept in the cache), and each layer caches the self-attention keys/values of
        the positions already decoded, so a step costs O(l + T') attention, not O(l * T') projections.
        Equal (up to rounding) to the teacher-forced :meth:`forward` at the last position.

        Args:
          memory: (B, T', D_enc) encoder output (repeated per hypothesis), or
            ``precompute_memory(enc)`` of enc (G, T', D_enc) with B = G * W: hypotheses
            ``g * W .. g * W + W - 1`` attend to utterance g (G = N utterances, W beams: each
            utterance's keys/values are read once for its W hypotheses; G = B also works). It is
            not kept in the cache: the caller keeps each hypothesis in its utterance's rows.
          memory_mask: (B, T') or (B, 1, T') bool, True at valid frames.
          ys: (B, l) the hypotheses so far, starting with sos.
          cache: None (every position of ``ys`` is computed), else the cache returned by the
            previous call, its rows following the hypotheses (reorder it with
            :func:`~asr_kd.decoding.common.index_select_tree`); the positions it does not cover
            (usually the last one) are computed. Layout: ``{"self": per layer (k, v) each
            (B, H, l_cached, Dh), "memory": per layer (k, v) each (B, H, T', Dh)}`` ("memory" only
            when ``memory`` was given as a tensor).
        Returns:
          ``(logp (B, V) log-softmax of the next token, new cache covering all l positions)``.
        """
        if not isinstance(memory, Tensor):
            mem_kv = memory
        elif cache is not None and "memory" in cache:
            mem_kv = cache["memory"]  # computed on the first step, reordered with the cache
        else:
            mem_kv = self.precompute_memory(memory)
        if memory_mask.dim() == 2:
            memory_mask = memory_mask.unsqueeze(1)  # (B, 1, T')
        past_kv = cache["self"] if cache is not None else [None] * self.num_layers
        past = past_kv[0][0].size(2) if cache is not None and self.num_layers else 0
        l = ys.size(1)
        if not 0 <= past < l:
            raise ValueError(f"the cache covers {past} positions, ys has {l}: nothing to compute")
        lq = l - past
        x = self.embed(ys[:, past:], start=past)  # (B, Lq, D): layer-0 input at the new positions
        # new position past + i sees positions <= past + i; a single new position sees everything
        self_mask = None
        if lq > 1:
            self_mask = (
                torch.arange(lq, device=ys.device)[:, None] + past >= torch.arange(l, device=ys.device)[None, :]
            ).unsqueeze(0)  # (1, Lq, l)
        new_self = []
        for layer, kv_l, mkv in zip(self.layers, past_kv, mem_kv):
            x, kv = layer.forward_cached(x, self_mask, kv_l, mkv, memory_mask)
            new_self.append(kv)
        logits = self.output(self.norm(x[:, -1]))
        new_cache: dict = {"self": new_self}
        if isinstance(memory, Tensor):
            new_cache["memory"] = mem_kv
        return logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(dim=-1), new_cache
