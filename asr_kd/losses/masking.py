"""ESPnet-style token masking for training the Mask-CTC conditional masked LM.

For each utterance of length L >= 1: draw ``k ~ Uniform{1, ..., L}``, then mask ``k`` distinct
positions chosen uniformly at random. Inputs get the ``<mask>`` id at masked positions; targets
keep the true token there and ``ignore_id`` everywhere else (unmasked and padded positions), so the
loss is computed on masked positions only. Utterances with L = 0 get no mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MaskedTokens", "mask_tokens"]


@dataclass
class MaskedTokens:
    """Result of :func:`mask_tokens`.

    ys_in: (N, L_max) int64 decoder input, ``mask_id`` at masked positions, ``ignore_id`` padding.
    ys_out: (N, L_max) int64 targets, the true token at masked positions, ``ignore_id`` elsewhere.
    num_masked: (N,) int64 masks per utterance (in [1, L_n] when L_n >= 1).
    """

    ys_in: Tensor
    ys_out: Tensor
    num_masked: Tensor


def mask_tokens(
    tokens: Sequence[Sequence[int]],
    mask_id: int,
    *,
    ignore_id: int = -1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MaskedTokens:
    """Mask a batch of token sequences (see the module docstring).

    Sampling happens on CPU with ``generator`` (``torch.Generator``; the global RNG when None), so a
    seeded generator gives the same masks on any device. Returns tensors on ``device``.
    """
    n = len(tokens)
    l_max = max([len(t) for t in tokens] + [1])
    ys_in = torch.full((n, l_max), ignore_id, dtype=torch.int64)
    ys_out = torch.full((n, l_max), ignore_id, dtype=torch.int64)
    counts = torch.zeros(n, dtype=torch.int64)
    for i, seq in enumerate(tokens):
        length = len(seq)
        if length == 0:
            continue
        y = torch.as_tensor(list(seq), dtype=torch.int64)
        k = int(torch.randint(1, length + 1, (1,), generator=generator))
        pos = torch.randperm(length, generator=generator)[:k]
        ys_in[i, :length] = y
        ys_in[i, pos] = mask_id
        ys_out[i, pos] = y[pos]
        counts[i] = k
    return MaskedTokens(ys_in.to(device), ys_out.to(device), counts.to(device))
