"""Knowledge-distillation losses: posterior, sequence-level, feature and attention distillation.

Dimension legend (docs/DESIGN.md): N batch, T frames (encoder frames T' or decoder positions L),
V vocabulary (blank = 0), D feature dim, H heads, Dh head dim, K n-best size.

Every loss here is a pure-PyTorch function (its own reference), except :func:`frame_kd`, which
builds per-frame weights and delegates to the fused op :func:`asr_kd.ops.frame_kd_loss` (whose
reference is :func:`asr_kd.ops.frame_kd_loss_reference`).

Conventions shared by all losses:

- The teacher is a target: it is detached (a teacher tensor with ``requires_grad=True`` never gets
  a gradient) and cast to the student's compute dtype (at least float32).
- ``lens`` (N,) marks frames ``t >= lens[n]`` as padding; ``mask`` (N, T) (bool, or float weights)
  multiplies in. Padding contributes exactly 0 loss and 0 gradient, even when it holds NaN / inf
  garbage (inputs are sanitised with ``torch.where``, never by multiplication).
- ``reduction="sum"`` (default) sums over the valid items of the batch (the caller divides by its
  own normaliser); ``"mean"`` divides that sum by the number of valid items (the sum of the
  weights; 0 when there are none); ``"none"`` returns the per-item tensor (0 at padding), so that
  ``sum == none.sum()`` and ``mean == sum / count``.

Functions:

- :func:`frame_kd`: frame-level KL / CE between teacher and student posteriors (CTC-posterior KD,
  masked-position decoder KD), dense or top-k teacher, temperature, CTC blank masking.
- :func:`nbest_weights`: hypothesis probabilities of a teacher n-best (softmax of scores / tau).
- :func:`sequence_kd_ctc`: sequence-level KD: n-best-weighted CTC on teacher hypotheses.
- :func:`feature_distance`: L1 / L2 (MSE) / cosine distance between hidden features.
- :func:`attention_map_kl`: KL(teacher || student) between self-attention maps.
- :func:`attention_relation_kl`: MiniLM-v2 self-attention relation distillation (Q-Q, K-K, V-V
  relations with relation heads, so student and teacher dims / head counts may differ).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from asr_kd.losses.ctc import pad_token_lists
from asr_kd.ops import frame_kd_loss

__all__ = [
    "frame_kd",
    "nbest_weights",
    "sequence_kd_ctc",
    "feature_distance",
    "attention_map_kl",
    "attention_relation_kl",
    "FEATURE_DISTANCES",
]

logger = logging.getLogger(__name__)

Teacher = Tensor | tuple[Tensor, Tensor]

REDUCTIONS = ("sum", "mean", "none")
FEATURE_DISTANCES = ("l1", "l2", "mse", "cosine")


# ----------------------------------------------------------------------------- helpers


def _check_reduction(reduction: str, allowed: Sequence[str] = REDUCTIONS) -> None:
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {tuple(allowed)}, got {reduction!r}")


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float64 stays float64; float32 / float16 / bfloat16 are computed in float32."""
    if not x.is_floating_point():
        raise TypeError(f"expected a floating point tensor, got {x.dtype}")
    return torch.promote_types(x.dtype, torch.float32)


def _frame_weights(
    N: int,
    T: int,
    lens: Tensor | None,
    mask: Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """(N, T) per-frame weights: ``1[t < lens[n]] * mask[n, t]`` (ones when both are None)."""
    w = torch.ones((N, T), dtype=dtype, device=device)
    if lens is not None:
        lens = torch.as_tensor(lens, device=device)
        if lens.shape != (N,):
            raise ValueError(f"lens must be (N,) = ({N},), got {tuple(lens.shape)}")
        valid = torch.arange(T, device=device)[None, :] < lens.to(torch.int64)[:, None]
        w = torch.where(valid, w, torch.zeros_like(w))
    if mask is not None:
        if mask.shape != (N, T):
            raise ValueError(f"mask must be (N, T) = {(N, T)}, got {tuple(mask.shape)}")
        m = mask.detach().to(device=device)
        w = torch.where(m, w, torch.zeros_like(w)) if m.dtype == torch.bool else w * m.to(dtype)
    return w


def _reduce(per_item: Tensor, count: Tensor, reduction: str) -> Tensor:
    """``none`` -> per_item; ``sum`` -> sum; ``mean`` -> sum / count (0 when count is 0)."""
    if reduction == "none":
        return per_item
    total = per_item.sum()
    if reduction == "sum":
        return total
    count = count.to(total.dtype)
    return total / torch.where(count != 0, count, torch.ones_like(count))


def _check_time(name: str, student_T: int, teacher_T: int) -> None:
    if student_T != teacher_T:
        raise ValueError(
            f"{name}: the teacher has {teacher_T} frames and the student {student_T}; "
            "frame-level distillation needs both at the same frame rate and padded length "
            "(check the subsampling factors / padding, and trim or pad explicitly)"
        )


# ----------------------------------------------------------------------------- posterior KD


def frame_kd(
    student_logits: Tensor,
    teacher: Teacher,
    lens: Tensor | None = None,
    *,
    teacher_type: str = "logits",
    temperature: float = 1.0,
    mask: Tensor | None = None,
    loss_type: str = "kl",
    scale_by_t2: bool = True,
    blank_id: int | None = None,
    blank_threshold: float | None = None,
    blank_weight: float = 0.0,
    reduction: str = "sum",
    backend: str = "auto",
) -> Tensor:
    """Frame-level KL / CE between teacher and student posteriors (CTC-posterior / decoder KD).

    Builds the per-frame weights ``w = 1[t < lens[n]] * mask[n, t]`` and calls
    :func:`asr_kd.ops.frame_kd_loss` (see its module docs for the exact definitions)::

        loss(n, t) = w(n, t) * tau^2 * KL(softmax(x_t / tau) || softmax(z_s / tau))

    For masked-position decoder KD pass ``mask`` = the masked positions and ``reduction="mean"``
    (normalised by the number of masks).

    Args:
        student_logits: (N, T, V) student logits; the only input that receives a gradient.
        teacher: (N, T, V) logits (``teacher_type="logits"``) or log-probs (``"log_probs"``), or
            ``(values (N, T, K), indices (N, T, K) int64)`` top-k log-probs (``"topk"``; the teacher
            distribution is renormalised over the kept entries). Detached.
        lens: (N,) valid frames per utterance (frames ``t >= lens[n]`` get weight 0); None = all.
        teacher_type: ``"logits"`` | ``"log_probs"`` | ``"topk"``.
        temperature: tau > 0 applied to teacher and student.
        mask: (N, T) bool, or float per-frame weights, multiplied into the weights.
        loss_type: ``"kl"`` = KL(p_t || p_s) or ``"ce"`` = -sum p_t log p_s.
        scale_by_t2: multiply by tau^2 (Hinton), default True.
        blank_id, blank_threshold, blank_weight: CTC blank masking: frames whose teacher blank
            posterior (at tau = 1) exceeds ``blank_threshold`` get weight * ``blank_weight``
            (0.0 = excluded, and not counted by ``"mean"``).
        reduction: ``"sum"`` (default), ``"mean"`` (sum / sum of the final frame weights = the
            number of counted frames for 0/1 weights; 0 when none), ``"none"`` -> (N, T)
            weighted per-frame losses (``"batchmean"`` = sum / N is passed through too).
        backend: ``"auto"`` | ``"native"`` | ``"torch"`` (see :func:`asr_kd.ops.frame_kd_loss`).

    Returns:
        scalar, or (N, T) for ``reduction="none"``.

    Raises:
        ValueError: teacher and student differ in batch size or number of frames (a clear error
            instead of a silent misalignment when, e.g., the subsampling differs by a few frames).
    """
    _check_reduction(reduction, REDUCTIONS + ("batchmean",))
    if not isinstance(student_logits, Tensor) or student_logits.dim() != 3:
        raise ValueError("student_logits must be a (N, T, V) tensor")
    N, T, _ = student_logits.shape
    if teacher_type == "topk" and isinstance(teacher, (tuple, list)) and len(teacher) == 2:
        t_shape = tuple(teacher[0].shape)
    elif isinstance(teacher, Tensor):
        t_shape = tuple(teacher.shape)
    else:
        t_shape = None  # frame_kd_loss reports the type error
    if t_shape is not None:
        if len(t_shape) != 3:
            raise ValueError(f"frame_kd: the teacher must be 3-D (N, T, V | K), got {t_shape}")
        if t_shape[0] != N:
            raise ValueError(f"frame_kd: teacher batch size {t_shape[0]} != student batch size {N}")
        _check_time("frame_kd", T, t_shape[1])
    weights = None
    if lens is not None or mask is not None:
        weights = _frame_weights(N, T, lens, mask, _compute_dtype(student_logits), student_logits.device)
    return frame_kd_loss(
        student_logits,
        teacher,
        teacher_type=teacher_type,
        temperature=temperature,
        weights=weights,
        reduction=reduction,
        loss_type=loss_type,
        scale_by_t2=scale_by_t2,
        blank_id=blank_id,
        blank_threshold=blank_threshold,
        blank_weight=blank_weight,
        backend=backend,
    )


# ----------------------------------------------------------------------------- sequence KD


def nbest_weights(
    scores: Sequence[Sequence[float] | Tensor],
    temperature: float = 1.0,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """Hypothesis weights of teacher n-best lists: ``softmax(scores_n / tau)`` per utterance.

    The n-best log-scores are renormalised over the n-best (weights sum to 1). ``tau > 1`` flattens
    the distribution towards uniform, ``tau < 1`` sharpens it towards the 1-best. Scores of
    ``-inf`` get weight 0; an n-best whose scores are all ``-inf`` gets uniform weights.

    Args:
        scores: N sequences (lists of floats or 1-D tensors) of K_n log-scores.
        temperature: tau > 0.
        dtype, device: of the returned tensors (float64 on CPU by default).

    Returns:
        list of N tensors (K_n,); an empty n-best gives an empty tensor.
    """
    tau = float(temperature)
    if not (math.isfinite(tau) and tau > 0.0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    out = []
    for n, s in enumerate(scores):
        if isinstance(s, Tensor):
            s = s.detach().to(dtype=torch.float64, device="cpu")
        else:
            s = torch.as_tensor(list(s), dtype=torch.float64)
        if s.dim() != 1:
            raise ValueError(f"n-best scores of utterance {n} must be 1-D, got {tuple(s.shape)}")
        if s.numel() == 0:
            out.append(torch.empty(0, dtype=dtype, device=device))
            continue
        if torch.isnan(s).any() or (s == math.inf).any():
            raise ValueError(f"n-best scores of utterance {n} contain NaN / +inf: {s.tolist()}")
        if (s == -math.inf).all():
            w = torch.full_like(s, 1.0 / s.numel())
        else:
            w = torch.softmax(s / tau, dim=0)
        out.append(w.to(dtype=dtype, device=device))
    return out


def _ctc_min_frames(tokens: Sequence[int]) -> int:
    """Fewest frames a CTC alignment of ``tokens`` needs: S + number of adjacent repeats."""
    return len(tokens) + sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)


def sequence_kd_ctc(
    student_log_probs: Tensor,
    lens: Tensor,
    nbest: Sequence[Sequence[Sequence[int]]],
    nbest_scores: Sequence[Sequence[float] | Tensor],
    *,
    blank_id: int = 0,
    temperature: float = 1.0,
    reduction: str = "sum",
    return_num_infeasible: bool = False,
) -> Tensor | tuple[Tensor, int]:
    """Sequence-level KD with CTC on a teacher n-best.

    For utterance n with teacher hypotheses ``y_n1 .. y_nK`` and weights
    ``w_n = nbest_weights(nbest_scores, temperature)[n]`` (summing to 1)::

        loss_n = sum_i w_ni * CTC(student_n, y_ni)        CTC = -log p_ctc(y | x)

    All hypotheses of the batch go through ONE ``F.ctc_loss`` call (the student rows are repeated
    with ``index_select``, so gradients accumulate on the shared rows). With a 1-best of weight 1
    this is plain CTC training on the teacher's transcript.

    - An empty hypothesis is a valid target (the all-blank path).
    - An infeasible hypothesis (more frames needed than ``lens[n]``: ``S`` + adjacent repeats) has
      ``CTC = inf``; it is zeroed (``zero_infinity=True``: loss 0 and gradient 0, so the
      utterance's weights then sum to less than 1), counted, and reported with a logging warning;
      ``return_num_infeasible=True`` returns the count too. The loss stays finite.
    - An utterance with an empty n-best contributes 0.
    - As for ``F.ctc_loss``, the gradient is the one of a log-softmax output: pass the
      ``log_softmax`` of the student logits (not arbitrary scores).

    Args:
        student_log_probs: (N, T, V) student log-softmax outputs (float16/bfloat16 computed in
            float32).
        lens: (N,) valid frames per utterance.
        nbest: N lists of K_n token lists (ids in [0, V), no blanks).
        nbest_scores: N lists (or 1-D tensors) of K_n teacher log-scores.
        blank_id: the CTC blank.
        temperature: tau of :func:`nbest_weights` (applies to the hypothesis weights only).
        reduction: ``"sum"`` (default), ``"mean"`` (sum / number of utterances with a non-empty
            n-best; 0 when none), ``"none"`` -> (N,) per utterance.
        return_num_infeasible: also return the number of infeasible hypotheses.

    Returns:
        scalar, or (N,) for ``"none"``; ``(loss, num_infeasible)`` with ``return_num_infeasible``.
    """
    _check_reduction(reduction)
    if not isinstance(student_log_probs, Tensor) or student_log_probs.dim() != 3:
        raise ValueError("student_log_probs must be a (N, T, V) tensor")
    N, T, V = student_log_probs.shape
    device = student_log_probs.device
    lp = student_log_probs.to(_compute_dtype(student_log_probs))
    lens = torch.as_tensor(lens, device=device)
    if lens.shape != (N,):
        raise ValueError(f"lens must be (N,) = ({N},), got {tuple(lens.shape)}")
    if len(nbest) != N or len(nbest_scores) != N:
        raise ValueError(
            f"nbest ({len(nbest)}) and nbest_scores ({len(nbest_scores)}) need one entry per utterance (N = {N})"
        )
    if not 0 <= blank_id < V:
        raise ValueError(f"blank_id must be in [0, V = {V}), got {blank_id}")
    weights = nbest_weights(nbest_scores, temperature, dtype=lp.dtype)

    lens_list = [int(x) for x in lens.tolist()]
    utt_idx: list[int] = []
    hyps: list[list[int]] = []
    num_infeasible = 0
    for n in range(N):
        if len(nbest[n]) != weights[n].numel():
            raise ValueError(f"utterance {n}: {len(nbest[n])} hypotheses but {weights[n].numel()} scores")
        for hyp in nbest[n]:
            hyp = [int(x) for x in hyp]
            for tok in hyp:
                if tok == blank_id or not 0 <= tok < V:
                    raise ValueError(f"utterance {n}: hypothesis token {tok} is the blank or outside [0, {V})")
            if _ctc_min_frames(hyp) > min(lens_list[n], T):
                num_infeasible += 1
            utt_idx.append(n)
            hyps.append(hyp)
    if num_infeasible:
        logger.warning(
            "sequence_kd_ctc: %d of %d teacher hypotheses are too long for the student's frames "
            "(CTC infeasible); they contribute 0",
            num_infeasible,
            len(hyps),
        )

    per_utt = lp.new_zeros(N) + lp[:0].sum()  # keeps a graph even without hypotheses
    if hyps:
        idx = torch.tensor(utt_idx, dtype=torch.int64, device=device)
        rows = lp.index_select(0, idx)  # (M, T, V)
        targets, target_lens = pad_token_lists(hyps, pad=blank_id, device=device)
        hyp_loss = F.ctc_loss(
            rows.transpose(0, 1),  # (T, M, V)
            targets,
            lens.to(torch.int64).index_select(0, idx).clamp(max=T),
            target_lens,
            blank=blank_id,
            reduction="none",
            zero_infinity=True,
        )  # (M,)
        w = torch.cat(weights).to(device)  # (M,)
        per_utt = per_utt.index_add(0, idx, w * hyp_loss)
    if reduction == "mean":
        count = torch.tensor(sum(1 for h in nbest if len(h) > 0), dtype=lp.dtype, device=device)
        out = _reduce(per_utt, count, reduction)
    else:
        out = _reduce(per_utt, per_utt.new_ones(()), reduction)
    return (out, num_infeasible) if return_num_infeasible else out


# ----------------------------------------------------------------------------- feature KD


def feature_distance(
    student: Tensor,
    teacher: Tensor,
    lens: Tensor | None = None,
    *,
    kind: str = "l2",
    mask: Tensor | None = None,
    reduction: str = "sum",
    eps: float = 1e-8,
) -> Tensor:
    """Per-frame distance between student and teacher hidden features (hidden-state KD).

    Per frame ``(n, t)`` with ``s, t`` in R^D:

    - ``"l1"``: ``mean_d |s_d - t_d|``
    - ``"l2"`` / ``"mse"``: ``mean_d (s_d - t_d)^2``
    - ``"cosine"``: ``1 - s.t / sqrt(max(|s|^2 |t|^2, eps^2))`` (finite, with a finite gradient,
      for zero vectors)

    weighted by ``1[t < lens[n]] * mask[n, t]``. Both must have the same D: projecting the student
    to the teacher's dim is the caller's job. Padding frames (even NaN / inf garbage) contribute 0
    and get 0 gradient.

    Args:
        student: (N, T, D) student features.
        teacher: (N, T, D) teacher features (detached).
        lens: (N,) valid frames; None = all.
        kind: ``"l1"`` | ``"l2"`` | ``"mse"`` | ``"cosine"``.
        mask: (N, T) bool, or float per-frame weights.
        reduction: ``"sum"`` (default), ``"mean"`` (/ sum of frame weights), ``"none"`` -> (N, T).
        eps: cosine denominator floor.

    Returns:
        scalar, or (N, T) for ``"none"``.
    """
    _check_reduction(reduction)
    if kind not in FEATURE_DISTANCES:
        raise ValueError(f"kind must be one of {FEATURE_DISTANCES}, got {kind!r}")
    if student.dim() != 3 or teacher.dim() != 3:
        raise ValueError(
            f"feature_distance needs (N, T, D) tensors, got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    N, T, D = student.shape
    if teacher.shape[0] != N:
        raise ValueError(f"feature_distance: teacher batch size {teacher.shape[0]} != student {N}")
    _check_time("feature_distance", T, teacher.shape[1])
    if teacher.shape[2] != D:
        raise ValueError(
            f"feature_distance: student dim {D} != teacher dim {teacher.shape[2]} "
            "(project the student to the teacher's dim first)"
        )
    dtype = _compute_dtype(student)
    w = _frame_weights(N, T, lens, mask, dtype, student.device)
    valid = (w != 0)[..., None]  # (N, T, 1)
    s = torch.where(valid, student.to(dtype), torch.zeros((), dtype=dtype, device=student.device))
    t = torch.where(valid, teacher.detach().to(dtype), torch.zeros((), dtype=dtype, device=student.device))
    if kind == "l1":
        dist = (s - t).abs().mean(dim=-1)
    elif kind in ("l2", "mse"):
        dist = (s - t).pow(2).mean(dim=-1)
    else:
        dot = (s * t).sum(dim=-1)
        denom = ((s * s).sum(dim=-1) * (t * t).sum(dim=-1)).clamp_min(eps * eps).rsqrt()
        dist = 1.0 - dot * denom
    per_frame = torch.where(w != 0, w * dist, torch.zeros_like(dist))  # (N, T)
    return _reduce(per_frame, w.sum(), reduction)


# ----------------------------------------------------------------------------- attention KD


def _valid_frames(N: int, T: int, lens: Tensor | None, device: torch.device) -> Tensor:
    """(N, T) bool: ``t < lens[n]`` (all True when lens is None)."""
    if lens is None:
        return torch.ones((N, T), dtype=torch.bool, device=device)
    lens = torch.as_tensor(lens, device=device)
    if lens.shape != (N,):
        raise ValueError(f"lens must be (N,) = ({N},), got {tuple(lens.shape)}")
    return torch.arange(T, device=device)[None, :] < lens.to(torch.int64)[:, None]


def attention_map_kl(
    student_attn: Tensor,
    teacher_attn: Tensor,
    lens: Tensor | None = None,
    *,
    reduction: str = "sum",
    eps: float = 1e-8,
) -> Tensor:
    """KL(teacher || student) between self-attention weight maps, per query row.

    Each row ``(n, h, i, :)`` is a distribution over keys (the maps are assumed computed with the
    key-padding mask, i.e. they already sum to 1 over the valid keys; no renormalisation here)::

        kl(n, h, i) = sum_{j < lens[n]} a_t (log(a_t + eps) - log(a_s + eps))

    over valid query rows ``i < lens[n]`` only (exactly 0 when the maps agree; ``eps`` keeps zero
    student weights, e.g. chunk-masked keys, finite). Padded rows and keys (even garbage)
    contribute 0 and get 0 gradient.

    Args:
        student_attn: (N, H, T, T) student attention weights (query x key).
        teacher_attn: (N, H, T, T) teacher attention weights (detached); same H as the student
            (distil relations with :func:`attention_relation_kl` when head counts differ).
        lens: (N,) valid frames; None = all.
        reduction: ``"sum"`` (over heads and valid rows), ``"mean"`` (/ H * valid rows),
            ``"none"`` -> (N, H, T) per row (0 at padded rows).
        eps: added inside both logs.

    Returns:
        scalar, or (N, H, T) for ``"none"``.
    """
    _check_reduction(reduction)
    if student_attn.dim() != 4 or teacher_attn.dim() != 4:
        raise ValueError(
            f"attention maps must be (N, H, T, T), got {tuple(student_attn.shape)} and {tuple(teacher_attn.shape)}"
        )
    N, H, T, Tk = student_attn.shape
    if Tk != T:
        raise ValueError(f"self-attention maps must be square (T, T), got {(T, Tk)}")
    if teacher_attn.shape[:2] != (N, H):
        raise ValueError(f"attention_map_kl: teacher (N, H) = {tuple(teacher_attn.shape[:2])} != student {(N, H)}")
    _check_time("attention_map_kl", T, teacher_attn.shape[2])
    _check_time("attention_map_kl", T, teacher_attn.shape[3])
    dtype = _compute_dtype(student_attn)
    device = student_attn.device
    valid = _valid_frames(N, T, lens, device)  # (N, T)
    cell = (valid[:, :, None] & valid[:, None, :])[:, None]  # (N, 1, T, T) valid query & key
    zero = torch.zeros((), dtype=dtype, device=device)
    a_s = torch.where(cell, student_attn.to(dtype), zero)
    a_t = torch.where(cell, teacher_attn.detach().to(dtype), zero)
    terms = a_t * (torch.log(a_t + eps) - torch.log(a_s + eps))
    terms = torch.where(cell, terms, zero)
    per_row = terms.sum(dim=-1)  # (N, H, T)
    row_valid = valid[:, None, :].expand(N, H, T)
    per_row = torch.where(row_valid, per_row, zero)
    return _reduce(per_row, row_valid.sum(), reduction)


def _relation_heads(x: Tensor, num_heads: int, name: str) -> Tensor:
    """(N, H, T, Dh) or (N, T, D) -> (N, Hr, T, D / Hr) (heads concatenated, then re-split)."""
    if x.dim() == 4:
        N, H, T, Dh = x.shape
        x = x.permute(0, 2, 1, 3).reshape(N, T, H * Dh)
    elif x.dim() != 3:
        raise ValueError(f"{name} must be (N, H, T, Dh) or (N, T, D), got {tuple(x.shape)}")
    N, T, D = x.shape
    if D % num_heads:
        raise ValueError(f"{name} dim {D} is not divisible by num_relation_heads = {num_heads}")
    return x.reshape(N, T, num_heads, D // num_heads).permute(0, 2, 1, 3)


def attention_relation_kl(
    student: Tensor,
    teacher: Tensor,
    lens: Tensor | None = None,
    *,
    num_relation_heads: int | None = None,
    reduction: str = "sum",
) -> Tensor:
    """MiniLM-v2 self-attention relation distillation, KL(R_teacher || R_student) per row.

    ``student`` / ``teacher`` are one kind of vectors (queries, keys or values) of one layer. Both
    are turned into ``Hr`` relation heads (heads concatenated to ``(N, T, D)`` and re-split into
    ``(N, Hr, T, D / Hr)``), and per relation head::

        R = softmax_j(A_i . A_j / sqrt(d_r))      over valid keys j < lens[n], d_r = D / Hr
        kl(n, r, i) = sum_j R_t(i, j) (log R_t(i, j) - log R_s(i, j))

    over valid query rows ``i < lens[n]``. Student and teacher may have different D and different
    numbers of attention heads (both D divisible by ``Hr``), which is how a small student distils
    the teacher's Q-Q, K-K and V-V relations. Padded keys are masked with the dtype's finite
    minimum; padded rows / keys (even garbage) contribute 0 and get 0 gradient.

    Args:
        student: (N, H_s, T, Dh_s) or (N, T, D_s).
        teacher: (N, H_t, T, Dh_t) or (N, T, D_t), detached.
        lens: (N,) valid frames; None = all.
        num_relation_heads: Hr; default the teacher's H (required for a (N, T, D) teacher).
        reduction: ``"sum"`` (over relation heads and valid rows), ``"mean"`` (/ Hr * valid
            rows), ``"none"`` -> (N, Hr, T) per row (0 at padded rows).

    Returns:
        scalar, or (N, Hr, T) for ``"none"``.
    """
    _check_reduction(reduction)
    if num_relation_heads is None:
        if teacher.dim() != 4:
            raise ValueError("attention_relation_kl: num_relation_heads is required for a (N, T, D) teacher")
        num_relation_heads = int(teacher.shape[1])
    hr = int(num_relation_heads)
    if hr < 1:
        raise ValueError(f"num_relation_heads must be >= 1, got {num_relation_heads}")
    dtype = _compute_dtype(student)
    device = student.device
    s = _relation_heads(student.to(dtype), hr, "student")  # (N, Hr, T, ds)
    t = _relation_heads(teacher.detach().to(dtype), hr, "teacher")  # (N, Hr, T, dt)
    N, _, T, _ = s.shape
    if t.shape[0] != N:
        raise ValueError(f"attention_relation_kl: teacher batch size {t.shape[0]} != student {N}")
    _check_time("attention_relation_kl", T, t.shape[2])

    valid = _valid_frames(N, T, lens, device)  # (N, T)
    zero = torch.zeros((), dtype=dtype, device=device)
    vf = valid[:, None, :, None]  # (N, 1, T, 1)
    s = torch.where(vf, s, zero)
    t = torch.where(vf, t, zero)
    key_ok = valid[:, None, None, :]  # (N, 1, 1, T)
    neg = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=device)

    def log_relation(a: Tensor) -> Tensor:
        scores = a @ a.transpose(-1, -2) / math.sqrt(a.shape[-1])  # (N, Hr, T, T)
        return torch.log_softmax(torch.where(key_ok, scores, neg), dim=-1)

    log_rs = log_relation(s)
    with torch.no_grad():
        log_rt = log_relation(t)
    cell = valid[:, None, :, None] & key_ok  # (N, 1, T, T)
    terms = torch.where(cell, log_rt.exp() * (log_rt - log_rs), zero)
    per_row = terms.sum(dim=-1)  # (N, Hr, T)
    row_valid = valid[:, None, :].expand(N, hr, T)
    per_row = torch.where(row_valid, per_row, zero)
    return _reduce(per_row, row_valid.sum(), reduction)
