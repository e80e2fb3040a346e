"""RNN-T (transducer) losses: pruned RNN-T through ``fast_rnnt`` or ``k2``, full RNN-T (``fast_rnnt``,
``k2`` or a pure-PyTorch reference), and the icefall-style warm-up of the pruned-loss scales.

``fast_rnnt`` is k2's RNN-T code split out as a standalone package: both expose the same functions
(``rnnt_loss_smoothed``, ``get_rnnt_prune_ranges``, ``do_rnnt_pruning``, ``rnnt_loss_pruned``,
``rnnt_loss``), so the ``backend`` argument only picks the module (``tests/losses/test_k2_cross.py``
checks that they agree, values and gradients). Both are imported lazily; neither is needed at import time.

Dimension legend (docs/DESIGN.md): N batch, T' encoder frames, S label length, U = S + 1 predictor
steps (blank-prepended), V vocabulary (blank = 0), J joiner dim, R prune range.

Lattice convention (the "regular" RNN-T of Graves 2012): node (t, u) means "t frames consumed,
u labels emitted"; from (t, u) a blank moves to (t + 1, u), label ``y[u]`` moves to (t, u + 1);
``p(y | x)`` is the sum over paths from (0, 0) to (T' - 1, S) followed by a final blank.

All losses here are ``-log p(y | x)`` summed over the batch (``reduction="sum"``), in float32 unless
the reference is given float64 inputs; the caller normalises.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "fast_rnnt_available",
    "RNNT_BACKENDS",
    "make_boundary",
    "transducer_loss_scales",
    "rnnt_loss_reference",
    "rnnt_loss_full",
    "pruned_rnnt_loss",
]

_NEG = -1.0e30  # "minus infinity" that keeps gradients finite in the reference recursion


def fast_rnnt_available() -> bool:
    """True when ``import fast_rnnt`` works."""
    try:
        import fast_rnnt  # noqa: F401
    except Exception:
        return False
    return True


#: ``backend`` values of :func:`pruned_rnnt_loss` (and, with ``"torch"`` / ``"auto"``, :func:`rnnt_loss_full`)
RNNT_BACKENDS = ("fast_rnnt", "k2")


def _rnnt_module(backend: str):
    """The module implementing the k2-family RNN-T functions for ``backend`` (imported here)."""
    if backend not in RNNT_BACKENDS:
        raise ValueError(f"unknown RNN-T backend {backend!r} (expected one of {', '.join(RNNT_BACKENDS)})")
    try:
        return importlib.import_module(backend)
    except Exception as e:  # ImportError, or a build against another torch
        hint = "see README (Optional: k2)" if backend == "k2" else "scripts/install.sh builds it"
        raise RuntimeError(f"RNN-T backend {backend!r} was requested but is not importable ({e}); {hint}") from e


def make_boundary(target_lens: Tensor, logit_lens: Tensor) -> Tensor:
    """(N, 4) int64 ``[0, 0, S_n, T'_n]`` rows, the ``boundary`` argument of ``fast_rnnt``."""
    n = target_lens.size(0)
    boundary = torch.zeros(n, 4, dtype=torch.int64, device=logit_lens.device)
    boundary[:, 2] = target_lens.to(boundary)
    boundary[:, 3] = logit_lens.to(boundary)
    return boundary


def transducer_loss_scales(step: int, warm_step: int, simple_loss_scale: float = 0.5) -> tuple[float, float]:
    """Scales ``(simple, pruned)`` for the pruned RNN-T losses at training ``step`` (icefall-style).

    During the first ``warm_step`` steps the simple-loss scale goes linearly from 1.0 to
    ``simple_loss_scale`` and the pruned-loss scale from 0.1 to 1.0 (the pruning bounds come from
    the simple loss, so it dominates early). From ``warm_step`` on: ``(simple_loss_scale, 1.0)``.
    ``warm_step <= 0`` disables the warm-up.
    """
    if warm_step <= 0 or step >= warm_step:
        return float(simple_loss_scale), 1.0
    frac = max(step, 0) / warm_step
    simple = 1.0 - frac * (1.0 - simple_loss_scale)
    pruned = 0.1 + 0.9 * frac
    return simple, pruned


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}")


def rnnt_loss_reference(
    logits: Tensor,
    targets: Tensor,
    logit_lens: Tensor,
    target_lens: Tensor,
    *,
    blank: int = 0,
    reduction: str = "sum",
) -> Tensor:
    """Full RNN-T loss in pure PyTorch (forward algorithm in log space), differentiable by autograd.

    The recursion ``alpha[t, u] = logaddexp(alpha[t-1, u] + blank[t-1, u], alpha[t, u-1] +
    emit[t, u-1])`` runs over the anti-diagonals ``d = t + u`` of the (T', U) lattice, each one
    vectorised over the batch and over t. Padded cells never feed cells of the valid region, so
    utterances of different lengths share one padded lattice; the loss of utterance n is
    ``-(alpha[T'_n - 1, S_n] + blank[T'_n - 1, S_n])``.

    Meant as a reference for tests and small sizes (O(T' + U) Python steps, O(N T' U V) memory).

    Args:
      logits: (N, T', U, V) unnormalised joiner outputs (``log_softmax`` is taken here).
      targets: (N, S) int64 labels, padded with anything in [0, V).
      logit_lens: (N,) valid frames T'_n (>= 1).
      target_lens: (N,) valid labels S_n (U_n = S_n + 1 <= U).
      blank: blank id.
      reduction: ``"sum"`` or ``"none"``.
    Returns:
      scalar or (N,) loss, dtype of ``logits``.
    """
    n, t_max, u_max, _ = logits.shape
    logp = logits.log_softmax(dim=-1)
    blank_lp = logp[..., blank]  # (N, T', U)
    s_max = u_max - 1
    if s_max > 0:
        idx = targets[:, :s_max].to(torch.int64)  # (N, S)
        idx = idx.unsqueeze(1).expand(n, t_max, s_max).unsqueeze(-1)
        emit_lp = logp[:, :, :s_max, :].gather(-1, idx).squeeze(-1)  # (N, T', S)
    else:
        emit_lp = logp.new_zeros(n, t_max, 0)
    neg = logp.new_full((n, 1), _NEG)
    t_idx = torch.arange(t_max, device=logits.device)

    # diagonal d holds alpha[t, d - t] for t = 0..T'-1 (NEG where d - t is outside [0, U)).
    diag = torch.where(t_idx == 0, logp.new_zeros(()), logp.new_full((), _NEG)).expand(n, t_max)
    diags = [diag]
    t_ge1 = (t_idx >= 1).unsqueeze(0)
    for d in range(1, t_max + u_max - 1):
        u_idx = d - t_idx  # (T',)
        valid = ((u_idx >= 0) & (u_idx < u_max)).unsqueeze(0)
        # from (t-1, u) by a blank: alpha[t-1, u] = diag[t-1], weight blank_lp[t-1, u]
        u_b = u_idx[1:].clamp(0, u_max - 1).view(1, t_max - 1, 1).expand(n, t_max - 1, 1)
        blank_prev = blank_lp[:, :-1, :].gather(2, u_b).squeeze(-1)  # (N, T'-1)
        from_blank = torch.cat([neg, diag[:, :-1] + blank_prev], dim=1)
        from_blank = torch.where(valid & t_ge1, from_blank, neg)
        # from (t, u-1) by emitting y[u-1]: alpha[t, u-1] = diag[t], weight emit_lp[t, u-1]
        if s_max > 0:
            u_e = (u_idx - 1).clamp(0, s_max - 1).view(1, t_max, 1).expand(n, t_max, 1)
            emit_prev = emit_lp.gather(2, u_e).squeeze(-1)  # (N, T')
            from_emit = torch.where(valid & (u_idx >= 1).unsqueeze(0), diag + emit_prev, neg)
        else:
            from_emit = neg.expand(n, t_max)
        diag = torch.where(valid, torch.logaddexp(from_blank, from_emit), neg)
        diags.append(diag)
    alphas = torch.stack(diags, dim=1)  # (N, T' + U - 1, T')
    t_last = logit_lens.to(torch.int64) - 1
    u_last = target_lens.to(torch.int64)
    batch = torch.arange(n, device=logits.device)
    final = alphas[batch, t_last + u_last, t_last] + blank_lp[batch, t_last, u_last]
    return _reduce(-final, reduction)


def rnnt_loss_full(
    logits: Tensor,
    targets: Tensor,
    logit_lens: Tensor,
    target_lens: Tensor,
    *,
    blank: int = 0,
    reduction: str = "sum",
    backend: str = "auto",
) -> Tensor:
    """Full (unpruned) RNN-T loss over the whole (T', U) lattice; small sizes only.

    Args: as :func:`rnnt_loss_reference`. ``backend``: ``"fast_rnnt"`` (``fast_rnnt.rnnt_loss``),
    ``"k2"`` (``k2.rnnt_loss``), ``"torch"`` (:func:`rnnt_loss_reference`) or ``"auto"`` (fast_rnnt
    when importable, else torch).
    Returns scalar or (N,) float32 loss.
    """
    if backend == "auto":
        backend = "fast_rnnt" if fast_rnnt_available() else "torch"
    if backend == "torch":
        return rnnt_loss_reference(logits.float(), targets, logit_lens, target_lens, blank=blank, reduction=reduction)
    mod = _rnnt_module(backend)
    loss = mod.rnnt_loss(
        logits=logits.float(),
        symbols=targets.to(torch.int64),
        termination_symbol=blank,
        boundary=make_boundary(target_lens, logit_lens),
        reduction="none",
    )
    return _reduce(loss, reduction)


def pruned_rnnt_loss(
    am: Tensor,
    lm: Tensor,
    enc_proj: Tensor,
    pred_proj: Tensor,
    joint: Callable[[Tensor, Tensor], Tensor],
    targets: Tensor,
    logit_lens: Tensor,
    target_lens: Tensor,
    *,
    prune_range: int = 5,
    lm_only_scale: float = 0.25,
    am_only_scale: float = 0.0,
    blank: int = 0,
    reduction: str = "sum",
    backend: str = "fast_rnnt",
) -> tuple[Tensor, Tensor]:
    """Pruned RNN-T (Kuang et al., 2022) via ``fast_rnnt`` or ``k2``: ``(simple_loss, pruned_loss)``.

    1. simple loss: a "trivial joiner" ``am[t] + lm[u]`` (log-softmax over V of the sum), smoothed
       with LM-only / AM-only terms (``fast_rnnt.rnnt_loss_smoothed``; with both scales 0 it is
       ``rnnt_loss_simple``); its gradients w.r.t. the lattice give, per frame, the ``prune_range``
       label positions that matter most;
    2. pruned loss: the real joiner on those (T', R) cells only (``rnnt_loss_pruned``).

    Args:
      am: (N, T', V) encoder projected to the vocabulary (simple loss).
      lm: (N, U, V) predictor projected to the vocabulary (simple loss).
      enc_proj: (N, T', J) encoder output through the joiner's ``enc_proj``.
      pred_proj: (N, U, J) predictor output through the joiner's ``pred_proj``.
      joint: ``joint(enc (N, T', R, J), pred (N, T', R, J)) -> logits (N, T', R, V)``, the joiner
        without its input projections.
      targets: (N, S) int64 labels padded with blank; logit_lens (N,); target_lens (N,).
      prune_range: R, label positions kept per frame (raised by fast_rnnt to the minimum that
        still admits a path; capped at S + 1, where pruning keeps everything).
      backend: ``"fast_rnnt"`` or ``"k2"`` (same algorithm and functions; see the module docstring).
    Returns:
      ``(simple, pruned)``, scalars (``"sum"``) or (N,) (``"none"``), float32.
    """
    mod = _rnnt_module(backend)
    targets = targets.to(torch.int64)
    boundary = make_boundary(target_lens, logit_lens)
    simple, (px_grad, py_grad) = mod.rnnt_loss_smoothed(
        lm=lm.float(),
        am=am.float(),
        symbols=targets,
        termination_symbol=blank,
        lm_only_scale=lm_only_scale,
        am_only_scale=am_only_scale,
        boundary=boundary,
        reduction="none",
        return_grad=True,
    )
    ranges = mod.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=prune_range)
    am_pruned, lm_pruned = mod.do_rnnt_pruning(am=enc_proj, lm=pred_proj, ranges=ranges)
    logits = joint(am_pruned, lm_pruned)  # (N, T', R, V)
    pruned = mod.rnnt_loss_pruned(
        logits=logits.float(),
        symbols=targets,
        ranges=ranges,
        termination_symbol=blank,
        boundary=boundary,
        reduction="none",
    )
    return _reduce(simple, reduction), _reduce(pruned, reduction)
