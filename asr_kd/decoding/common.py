"""Result objects and small helpers shared by the search functions.

:class:`NBest` is defined beside the native ops (:mod:`asr_kd.ops.nbest`, which return it) and
re-exported here.

Dimension legend (see ``docs/DESIGN.md``): N batch (utterances), T' encoder frames, V vocabulary,
B hypotheses (all utterances' beams stacked), K n-best size.
"""

from __future__ import annotations

from typing import Any

import torch

from asr_kd.ops.nbest import NBest

__all__ = ["NBest", "best_paths", "index_select_tree", "valid_mask"]


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
