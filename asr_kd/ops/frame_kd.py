"""Fused frame-level knowledge-distillation loss (kernel 1 of ``asr_kd._C``).

The loss behind CTC-posterior distillation and token-level (MLM / attention-decoder) distillation:
for every frame ``(n, t)`` a divergence between the teacher's and the student's distributions over
the vocabulary, weighted per frame and reduced.

Definitions (``tau`` = temperature, ``V`` = vocabulary, ``w`` = per-frame weights)::

    log p_s = log_softmax(z_s / tau)                         student, (N, T, V)
    log p_t = log_softmax(x_t / tau)                         teacher, over V or over the k kept entries
    kl(n, t) = sum_v p_t(v) (log p_t(v) - log p_s(v))        loss_type="kl"
    ce(n, t) = -sum_v p_t(v) log p_s(v) = kl + H(p_t)        loss_type="ce"
    loss(n, t) = w(n, t) * c * {kl | ce}(n, t),   c = tau^2 if scale_by_t2 else 1

Teacher forms (``teacher_type``):

- ``"logits"``: ``(N, T, V)`` logits; ``p_t = softmax(logits / tau)``.
- ``"log_probs"``: ``(N, T, V)`` log-probabilities. The temperature is applied the same way,
  ``p_t = softmax(log_probs / tau)`` (i.e. ``p_t ~ p^(1/tau)``, renormalised). Since
  ``log_probs = logits - lse``, this is *identical* to the ``"logits"`` case for the same model,
  so teachers may be cached either way. At ``tau = 1`` it simply renormalises (a no-op for exact
  log-probs).
- ``"topk"``: a pair ``(values (N, T, K), indices (N, T, K) int64)`` with ``values`` the teacher's
  log-probs of its ``K`` kept tokens. The teacher distribution is **renormalised over the kept
  entries**: ``p_t = softmax(values / tau)`` over ``K`` and 0 elsewhere (the dropped tail mass is
  spread proportionally over the kept tokens instead of being lost). With ``K = V`` this equals the
  dense case exactly. The student side stays dense: ``log p_s`` is normalised over all ``V``.
  Indices are assumed distinct (duplicates count as separate mass).

Gradient only w.r.t. the student logits; the teacher is a target and is detached (a teacher with
``requires_grad=True`` gets no gradient), weights are constants::

    d loss(n, t) / d z_s = w * c / tau * (p_s - p_t)         (= w * tau * (p_s - p_t) when scaled)

Frames of weight 0 contribute exactly 0 loss and 0 gradient, whatever their logits hold (padding).

Blank handling for CTC posteriors: with ``blank_id`` and ``blank_threshold``, frames where the
teacher's blank posterior (at temperature 1, i.e. the teacher's own belief: ``softmax(logits)``,
``exp(log_probs)``, or ``exp(value)`` of the blank among the top-k entries - not renormalised,
0 if the blank is not kept) exceeds the threshold get their weight multiplied by ``blank_weight``
(0.0 = excluded).

Reductions over the ``(N, T)`` weighted per-frame losses: ``"none"`` returns them, ``"sum"`` sums,
``"mean"`` divides the sum by the sum of the weights (0 when all weights are 0),
``"batchmean"`` divides it by ``N``.

Backends: ``"native"`` = the fused kernels of ``asr_kd._C`` (CPU float32/float64; CUDA when built
with it), ``"torch"`` = :func:`frame_kd_loss_reference`, ``"auto"`` = native when importable and it
supports the tensor's device and dtype. ``ASR_KD_NATIVE=0`` in the environment, or
``set_backend("torch")``, forces the reference everywhere.
"""

from __future__ import annotations

import math
import os

import torch

from asr_kd.ops._native import load_native, native_available, native_supports

__all__ = [
    "frame_kd_loss",
    "frame_kd_loss_reference",
    "set_backend",
    "get_backend",
    "TEACHER_TYPES",
    "REDUCTIONS",
    "LOSS_TYPES",
]

TEACHER_TYPES = ("logits", "log_probs", "topk")
REDUCTIONS = ("none", "sum", "mean", "batchmean")
LOSS_TYPES = ("kl", "ce")
BACKENDS = ("auto", "native", "torch")

Teacher = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_GLOBAL_BACKEND = "torch" if os.environ.get("ASR_KD_NATIVE", "1").strip() == "0" else "auto"


def set_backend(backend: str) -> None:
    """Sets the process-wide backend: ``"auto"`` (default), ``"native"`` or ``"torch"``.

    ``"torch"`` forces the pure-PyTorch reference everywhere, whatever a call asks for (the same as
    ``ASR_KD_NATIVE=0`` at import). ``"native"`` makes ``backend="auto"`` calls require the
    extension (an error instead of a silent fallback).
    """
    global _GLOBAL_BACKEND
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _GLOBAL_BACKEND = backend


def get_backend() -> str:
    """The process-wide backend set by :func:`set_backend` / ``ASR_KD_NATIVE``."""
    return _GLOBAL_BACKEND


# ----------------------------------------------------------------------------- input handling


def _prepare(
    student_logits: torch.Tensor,
    teacher: Teacher,
    teacher_type: str,
    temperature: float,
    weights: torch.Tensor | None,
    reduction: str,
    loss_type: str,
    blank_id: int | None,
    blank_threshold: float | None,
    blank_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, float]:
    """Validates the arguments; returns ``(student, teacher_values, teacher_indices, weights, tau)``.

    The teacher is detached and cast to the student's dtype; weights default to ones ``(N, T)``
    and carry the blank down-weighting.
    """
    if teacher_type not in TEACHER_TYPES:
        raise ValueError(f"teacher_type must be one of {TEACHER_TYPES}, got {teacher_type!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    tau = float(temperature)
    if not (math.isfinite(tau) and tau > 0.0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    if not isinstance(student_logits, torch.Tensor) or student_logits.dim() != 3:
        raise ValueError(
            "student_logits must be a (N, T, V) tensor, got "
            f"{tuple(student_logits.shape) if isinstance(student_logits, torch.Tensor) else type(student_logits)}"
        )
    if not student_logits.is_floating_point():
        raise TypeError(f"student_logits must be floating point, got {student_logits.dtype}")
    N, T, V = student_logits.shape
    if V == 0:
        raise ValueError("student_logits has an empty vocabulary (V = 0)")

    indices: torch.Tensor | None = None
    if teacher_type == "topk":
        if not (isinstance(teacher, (tuple, list)) and len(teacher) == 2):
            raise TypeError("teacher_type='topk' needs teacher=(values (N, T, K), indices (N, T, K))")
        values, indices = teacher
        if values.dim() != 3 or values.shape[:2] != (N, T):
            raise ValueError(
                f"top-k teacher values must be (N, T, K) with (N, T) = {(N, T)}, got {tuple(values.shape)}"
            )
        if indices.shape != values.shape:
            raise ValueError(
                f"top-k teacher indices shape {tuple(indices.shape)} != values shape {tuple(values.shape)}"
            )
        if indices.dtype != torch.int64:
            raise TypeError(f"top-k teacher indices must be int64, got {indices.dtype}")
        K = values.shape[2]
        if not 1 <= K <= V:
            raise ValueError(f"top-k needs 1 <= k <= V, got k = {K}, V = {V}")
        if indices.device != student_logits.device:
            raise ValueError(f"teacher indices on {indices.device}, student on {student_logits.device}")
        indices = indices.detach()
    else:
        if not isinstance(teacher, torch.Tensor):
            raise TypeError(f"teacher_type={teacher_type!r} needs a (N, T, V) tensor teacher")
        values = teacher
        if values.shape != student_logits.shape:
            raise ValueError(f"teacher shape {tuple(values.shape)} != student shape {tuple(student_logits.shape)}")
    if values.device != student_logits.device:
        raise ValueError(f"teacher on {values.device}, student on {student_logits.device}")
    values = values.detach().to(student_logits.dtype)

    if weights is None:
        w = torch.ones((N, T), dtype=student_logits.dtype, device=student_logits.device)
    else:
        if weights.shape != (N, T):
            raise ValueError(f"weights must be (N, T) = {(N, T)}, got {tuple(weights.shape)}")
        w = weights.detach().to(device=student_logits.device, dtype=student_logits.dtype)

    if blank_threshold is not None or blank_id is not None:
        if blank_id is None or blank_threshold is None:
            raise ValueError("blank handling needs both blank_id and blank_threshold")
        if not 0 <= int(blank_id) < V:
            raise ValueError(f"blank_id must be in [0, V = {V}), got {blank_id}")
        if not 0.0 <= float(blank_threshold) <= 1.0:
            raise ValueError(f"blank_threshold must be in [0, 1], got {blank_threshold}")
        if not (math.isfinite(float(blank_weight)) and float(blank_weight) >= 0.0):
            raise ValueError(f"blank_weight must be finite and >= 0, got {blank_weight}")
        p_blank = _teacher_blank_prob(values, indices, teacher_type, int(blank_id))
        w = w * torch.where(p_blank > float(blank_threshold), float(blank_weight), 1.0).to(w.dtype)
    return student_logits, values, indices, w, tau


def _teacher_blank_prob(
    values: torch.Tensor, indices: torch.Tensor | None, teacher_type: str, blank_id: int
) -> torch.Tensor:
    """(N, T) teacher posterior of the blank at temperature 1 (see the module docstring)."""
    with torch.no_grad():
        if teacher_type == "logits":
            return (values[..., blank_id] - torch.logsumexp(values, dim=-1)).exp()
        if teacher_type == "log_probs":
            return values[..., blank_id].exp()
        assert indices is not None
        return torch.where(indices == blank_id, values.exp(), 0.0).sum(dim=-1)


def _reduce(per_frame: torch.Tensor, w: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduces the (N, T) weighted per-frame losses."""
    if reduction == "none":
        return per_frame
    total = per_frame.sum()
    if reduction == "sum":
        return total
    if reduction == "batchmean":
        return total / per_frame.shape[0] if per_frame.shape[0] > 0 else total
    wsum = w.sum()
    # All weights 0 -> all frame losses 0 -> 0 / 1 = 0, with a finite gradient.
    return total / torch.where(wsum != 0, wsum, torch.ones_like(wsum))


# ----------------------------------------------------------------------------- reference


def frame_kd_loss_reference(
    student_logits: torch.Tensor,
    teacher: Teacher,
    *,
    teacher_type: str = "logits",
    temperature: float = 1.0,
    weights: torch.Tensor | None = None,
    reduction: str = "mean",
    loss_type: str = "kl",
    scale_by_t2: bool = True,
    blank_id: int | None = None,
    blank_threshold: float | None = None,
    blank_weight: float = 0.0,
) -> torch.Tensor:
    """Pure-PyTorch frame-level KD loss: the readable ground truth of :func:`frame_kd_loss`.

    Args:
        student_logits: (N, T, V) student logits.
        teacher: (N, T, V) logits / log-probs, or ``(values (N, T, K), indices (N, T, K))``.
        (the rest): as :func:`frame_kd_loss`.

    Returns:
        (N, T) weighted per-frame losses for ``reduction="none"``, else a scalar.
    """
    s, values, indices, w, tau = _prepare(
        student_logits,
        teacher,
        teacher_type,
        temperature,
        weights,
        reduction,
        loss_type,
        blank_id,
        blank_threshold,
        blank_weight,
    )
    log_ps = torch.log_softmax(s / tau, dim=-1)  # (N, T, V)
    log_pt = torch.log_softmax(values / tau, dim=-1)  # (N, T, V) or (N, T, K)
    if indices is not None:
        log_ps = log_ps.gather(-1, indices)  # (N, T, K)
    pt = log_pt.exp()
    if loss_type == "kl":
        terms = pt * (log_pt - log_ps)
    else:
        terms = -pt * log_ps
    terms = torch.where(pt > 0, terms, torch.zeros_like(terms))  # 0 log 0 = 0
    frame = terms.sum(dim=-1)  # (N, T)
    c = tau * tau if scale_by_t2 else 1.0
    per_frame = torch.where(w != 0, w * c * frame, torch.zeros_like(frame))
    return _reduce(per_frame, w, reduction)


# ----------------------------------------------------------------------------- native


class _FrameKDNative(torch.autograd.Function):
    """Autograd wrapper of ``torch.ops.asr_kd.frame_kd_forward`` / ``frame_kd_backward``.

    Saves the inputs (no copies) and the two (N, T) LSEs; the backward recomputes the softmaxes.
    """

    @staticmethod
    def forward(ctx, student, teacher, indices, weights, temperature, kl, scale_by_t2):
        loss, student_lse, teacher_lse = torch.ops.asr_kd.frame_kd_forward(
            student, teacher, indices, weights, temperature, kl, scale_by_t2
        )
        ctx.save_for_backward(student, teacher, indices, weights, student_lse, teacher_lse)
        ctx.temperature = temperature
        ctx.scale_by_t2 = scale_by_t2
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        student, teacher, indices, weights, student_lse, teacher_lse = ctx.saved_tensors
        grad_student = None
        if ctx.needs_input_grad[0]:
            grad_student = torch.ops.asr_kd.frame_kd_backward(
                grad_loss.contiguous(),
                student,
                teacher,
                indices,
                weights,
                student_lse,
                teacher_lse,
                ctx.temperature,
                ctx.scale_by_t2,
            )
        return grad_student, None, None, None, None, None, None


def _resolve_backend(backend: str, student: torch.Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if _GLOBAL_BACKEND == "torch":
        return "torch"
    if backend == "auto":
        backend = _GLOBAL_BACKEND
    if backend == "torch":
        return "torch"
    if native_supports(student):
        return "native"
    if backend == "native":
        why = (
            "asr_kd._C is not built (pip install --no-build-isolation -e .)"
            if not native_available()
            else f"no native kernel for {student.dtype} on {student.device}"
        )
        raise RuntimeError(f"frame_kd_loss(backend='native'): {why}")
    return "torch"


def frame_kd_loss(
    student_logits: torch.Tensor,
    teacher: Teacher,
    *,
    teacher_type: str = "logits",
    temperature: float = 1.0,
    weights: torch.Tensor | None = None,
    reduction: str = "mean",
    loss_type: str = "kl",
    scale_by_t2: bool = True,
    blank_id: int | None = None,
    blank_threshold: float | None = None,
    blank_weight: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Frame-level distillation loss between teacher and student posteriors (see module docs).

    Args:
        student_logits: (N, T, V) student logits; the only input that receives a gradient.
        teacher: (N, T, V) logits (``teacher_type="logits"``) or log-probs (``"log_probs"``), or
            ``(values (N, T, K), indices (N, T, K) int64)`` top-k teacher log-probs (``"topk"``).
            Detached and cast to the student's dtype.
        teacher_type: ``"logits"`` | ``"log_probs"`` | ``"topk"``.
        temperature: tau > 0, applied to the student and to the teacher.
        weights: (N, T) per-frame weights (a {0, 1} mask for padding); default all ones.
        reduction: ``"none"`` -> (N, T), ``"sum"``, ``"mean"`` (/ sum of weights),
            ``"batchmean"`` (/ N).
        loss_type: ``"kl"`` = KL(p_t || p_s), ``"ce"`` = -sum p_t log p_s.
        scale_by_t2: multiply by tau^2 (Hinton) so gradient magnitudes do not shrink with tau.
        blank_id, blank_threshold, blank_weight: CTC blank handling (frames whose teacher blank
            posterior exceeds the threshold get weight * blank_weight).
        backend: ``"auto"`` | ``"native"`` | ``"torch"``.

    Returns:
        (N, T) weighted per-frame losses for ``reduction="none"``, else a scalar tensor.
    """
    if _resolve_backend(backend, student_logits) == "torch":
        return frame_kd_loss_reference(
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
        )
    s, values, indices, w, tau = _prepare(
        student_logits,
        teacher,
        teacher_type,
        temperature,
        weights,
        reduction,
        loss_type,
        blank_id,
        blank_threshold,
        blank_weight,
    )
    load_native()
    per_frame = _FrameKDNative.apply(
        s.contiguous(),
        values.contiguous(),
        None if indices is None else indices.contiguous(),
        w.contiguous(),
        tau,
        loss_type == "kl",
        bool(scale_by_t2),
    )
    return _reduce(per_frame, w, reduction)
