"""CTC loss wrappers: PyTorch's ``F.ctc_loss`` (default) or ``k2.ctc_loss`` (optional backend).

Dimension legend (docs/DESIGN.md): N batch, T' encoder frames, V vocabulary (blank = 0), S label length.

Both backends compute ``-log p(y | x)`` per utterance, summed over the batch (``reduction="sum"``);
the caller normalises (by frames, utterances, ...). Log-probs are always evaluated in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ctc_loss", "pad_token_lists", "k2_available"]


def k2_available() -> bool:
    """True when ``import k2`` works (k2 is optional in asr_kd and never required)."""
    try:
        import k2  # noqa: F401
    except Exception:  # ImportError, or a k2 built against another torch
        return False
    return True


def pad_token_lists(
    tokens: Sequence[Sequence[int]], pad: int = 0, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Pad a ragged list of token ids.

    Returns ``(padded (N, S_max) int64, lens (N,) int64)``; ``S_max`` is at least 1 so that an
    all-empty batch still gives a valid (N, 1) tensor.
    """
    lens = torch.tensor([len(t) for t in tokens], dtype=torch.int64)
    s_max = max(1, int(lens.max()) if len(tokens) else 1)
    padded = torch.full((len(tokens), s_max), pad, dtype=torch.int64)
    for i, t in enumerate(tokens):
        if len(t):
            padded[i, : len(t)] = torch.as_tensor(list(t), dtype=torch.int64)
    return padded.to(device), lens.to(device)


def ctc_loss(
    log_probs: Tensor,
    log_prob_lens: Tensor,
    tokens: Sequence[Sequence[int]],
    *,
    blank: int = 0,
    zero_infinity: bool = True,
    reduction: str = "sum",
    backend: str = "torch",
) -> Tensor:
    """CTC negative log-likelihood.

    Args:
      log_probs: (N, T', V) log-softmax outputs (any float dtype; computed in float32).
      log_prob_lens: (N,) valid frames per utterance.
      tokens: N label sequences (ids in [1, V), no blanks).
      blank: blank id.
      zero_infinity: replace infinite losses (labels longer than the input allows) by zero, and
        their gradients too. Only for ``backend="torch"``; k2 drops infeasible paths by itself
        (its loss is then ``inf`` unless ``zero_infinity``, handled here the same way).
      reduction: ``"sum"`` (scalar summed over the batch) or ``"none"`` ((N,) per utterance).
      backend: ``"torch"`` (``torch.nn.functional.ctc_loss``) or ``"k2"`` (``k2.ctc_loss``; raises
        ``RuntimeError`` when k2 is not importable).

    Returns:
      scalar (``"sum"``) or (N,) (``"none"``) loss in float32.
    """
    if reduction not in ("sum", "none"):
        raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}")
    log_probs = log_probs.float()
    if backend == "torch":
        return _ctc_loss_torch(log_probs, log_prob_lens, tokens, blank, zero_infinity, reduction)
    if backend == "k2":
        if not k2_available():
            raise RuntimeError(
                "ctc backend 'k2' was requested but k2 is not importable; install k2 matching "
                "your torch (see README) or use backend='torch'"
            )
        return _ctc_loss_k2(log_probs, log_prob_lens, tokens, blank, zero_infinity, reduction)
    raise ValueError(f"unknown CTC backend {backend!r} (expected 'torch' or 'k2')")


def _ctc_loss_torch(log_probs, log_prob_lens, tokens, blank, zero_infinity, reduction) -> Tensor:
    targets, target_lens = pad_token_lists(tokens, pad=blank, device=log_probs.device)
    loss = F.ctc_loss(
        log_probs.transpose(0, 1),  # (T', N, V)
        targets,
        log_prob_lens.to(torch.int64),
        target_lens,
        blank=blank,
        reduction="none",
        zero_infinity=zero_infinity,
    )
    return loss.sum() if reduction == "sum" else loss


def _ctc_loss_k2(log_probs, log_prob_lens, tokens, blank, zero_infinity, reduction) -> Tensor:
    import k2

    if blank != 0:
        raise ValueError("k2 CTC graphs use blank = 0")
    n = log_probs.size(0)
    lens = log_prob_lens.to("cpu", torch.int32)
    # DenseFsaVec wants supervision segments sorted by decreasing duration.
    order = torch.argsort(lens, descending=True, stable=True)
    segments = torch.stack([order.to(torch.int32), torch.zeros(n, dtype=torch.int32), lens[order]], dim=1)
    dense = k2.DenseFsaVec(log_probs, segments)
    graph = k2.ctc_graph([list(tokens[int(i)]) for i in order], modified=False, device=log_probs.device)
    loss_sorted = k2.ctc_loss(graph, dense, output_beam=1e10, reduction="none", use_double_scores=True)
    loss = torch.empty_like(loss_sorted)
    loss[order.to(loss.device)] = loss_sorted
    loss = loss.float()
    if zero_infinity:
        loss = torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss))
    return loss.sum() if reduction == "sum" else loss
