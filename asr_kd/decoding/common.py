"""Result objects and small helpers shared by the search functions.

Dimension legend (see ``docs/DESIGN.md``): N batch (utterances), T' encoder frames, V vocabulary,
B hypotheses (all utterances' beams stacked), K n-best size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["NBest", "best_paths", "index_select_tree", "valid_mask"]


@dataclass
class NBest:
    """The n-best list of one utterance, best first.

    Attributes:
        tokens: K token-id sequences (no blank, sos or eos).
        scores: K ranking scores (log domain), ``scores[0]`` is the largest.
        components: optional per-hypothesis parts of the score by name (e.g. ``"ctc"``,
            ``"att"``, ``"bias"``), each a list of K floats aligned with ``tokens``.
    """

    tokens: list[list[int]]
    scores: list[float]
    components: dict[str, list[float]] = field(default_factory=dict)

    @property
    def best(self) -> list[int]:
        """The best hypothesis (empty list when the n-best list is empty)."""
        return list(self.tokens[0]) if self.tokens else []

    def __len__(self) -> int:
        return len(self.tokens)


def best_paths(results: list[NBest]) -> list[list[int]]:
    """The best hypothesis of each utterance's n-best list: ``list[list[int]]`` of length N."""
    return [r.best for r in results]


def valid_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(N, max_len)`` bool mask, True where the frame index is below ``lens[n]``."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


def index_select_tree(tree: Any, index: torch.Tensor) -> Any:
    """Reorder a decoder cache along its first (hypothesis) dimension.

    ``tree`` may be ``None``, a tensor (``(B, ...)``), or a list / tuple / dict of such trees; every
    tensor is indexed with ``index`` ``(B',)`` along dim 0. Used by beam searches to follow the
    surviving hypotheses of a step.
    """
    if tree is None:
        return None
    if isinstance(tree, torch.Tensor):
        return tree.index_select(0, index.to(tree.device))
    if isinstance(tree, (list, tuple)):
        return type(tree)(index_select_tree(t, index) for t in tree)
    if isinstance(tree, dict):
        return {k: index_select_tree(v, index) for k, v in tree.items()}
    raise TypeError(f"cannot reorder a cache of type {type(tree).__name__}")
