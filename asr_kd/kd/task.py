"""The KD training loss: the student's ASR losses plus the configured KD methods.

``total = combine_losses(asr_losses) + sum_m weight_m * schedule_m(step, total_steps) * sum(losses_m)``,
everything a batch sum divided by one normaliser (:class:`~asr_kd.training.asr_task.AsrLossFn`'s
``normalize``: frames, tokens or utterances), so a per-frame KD loss and the per-frame CTC loss are on
the same scale. The teacher runs first, frozen and without gradients (online), or its targets come
with the batch (offline).

Usage (what ``asr_kd.bin.train`` does when the config has a ``kd`` section)::

    loss_fn = build_kd_loss_fn(cfg["kd"], model, device, normalize="frames", max_steps=2000)
    trainer = Trainer(model, optimizer, loss_fn, ...)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from asr_kd.kd.methods import KdContext, KdMethod, build_kd_method
from asr_kd.kd.schedules import Schedule, build_schedule
from asr_kd.kd.teachers import AsrTeacher, Teacher, build_teacher
from asr_kd.training.asr_task import _COUNTS, _NORMALISERS, AsrLossFn
from asr_kd.training.trainer import LossOutput

__all__ = ["KdEntry", "KdLossFn", "build_kd_loss_fn"]

log = logging.getLogger(__name__)


@dataclass
class KdEntry:
    """One configured method: its registry name, module, weight and schedule."""

    name: str
    method: KdMethod
    weight: float
    schedule: Schedule


class KdLossFn(AsrLossFn):
    """``(model, batch, step) -> LossOutput``: ASR losses + weighted, scheduled KD losses.

    Args:
        entries: the configured methods.
        teacher: the teacher (None: teacher-free methods only, e.g. self-KD).
        total_steps: planned run length for the schedules.
        (the rest): as :class:`~asr_kd.training.asr_task.AsrLossFn`.

    Logged parts: the ASR losses, each KD loss (unweighted, normalised) and ``kd_w_<name>`` (its
    current effective weight).
    """

    def __init__(
        self,
        entries: Sequence[KdEntry],
        teacher: Teacher | None = None,
        total_steps: int | None = None,
        **asr_kwargs: Any,
    ):
        super().__init__(**asr_kwargs)
        if not entries:
            raise ValueError("KdLossFn needs at least one KD method")
        self.entries = list(entries)
        self.teacher = teacher
        self.total_steps = total_steps
        self.needs_teacher = set().union(*(e.method.needs_teacher for e in self.entries))
        self.needs_student = set().union(*(e.method.needs_student for e in self.entries))
        if self.needs_teacher and teacher is None:
            raise ValueError(
                f"KD methods {[e.name for e in self.entries if e.method.needs_teacher]} need a teacher (kd.teacher)"
            )
        for e in self.entries:  # fail at start-up, not at the first step
            e.schedule(0, total_steps)

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], step: int) -> LossOutput | None:
        from asr_kd.training.checkpoint import unwrap_model

        x, x_lens, tokens, cut_ids = self.unpack(batch)
        if x.size(0) == 0:
            return None
        student = unwrap_model(model)
        self._ensure_checked(model, step)
        t_out = self.teacher(batch, self.needs_teacher) if self.teacher is not None else None
        enc_kwargs = {"return_attn": "attn" in self.needs_student, "return_qkv": "qkv" in self.needs_student}
        losses = model(
            x,
            x_lens,
            tokens,
            return_encoder_output=True,
            encoder_kwargs={k: v for k, v in enc_kwargs.items() if v},
            return_head_outputs="heads" in self.needs_student,
            **self.model_kwargs,
        )
        enc = losses.pop("encoder_out")
        heads = losses.pop("head_outputs", {})
        weights = self.weights if self.weights is not None else student.loss_weights
        total = self.combine(losses, weights, step)
        ctx = KdContext(
            model=student, batch=batch, tokens=tokens, enc=enc, losses=losses, teacher=t_out, step=step, heads=heads
        )
        norm = losses[_NORMALISERS[self.normalize]].clamp(min=1).to(total.dtype)
        parts = {
            k: (v.detach().float() / norm)
            for k, v in losses.items()
            if k not in _COUNTS and isinstance(v, torch.Tensor) and v.dim() == 0
        }
        for e in self.entries:
            w = e.weight * e.schedule(step, self.total_steps)
            kd_losses = e.method(ctx)
            for k, v in kd_losses.items():
                parts[k] = v.detach().float() / norm
                if w != 0:
                    total = total + w * v
            parts[f"kd_w_{e.name}"] = torch.tensor(float(w))
        return LossOutput(loss=total / norm, parts=parts, num_frames=float(norm), cut_ids=cut_ids)


def check_teacher_vocab(teacher: AsrTeacher, student: nn.Module, tokenizer: Any = None, lang_dir: Any = None) -> None:
    """Raise :class:`~asr_kd.data.tokenizer.VocabMismatchError` when the teacher's vocabulary is not
    the student's: output sizes differ, or the teacher's stored pieces differ from ``tokenizer``'s."""
    from asr_kd.data.tokenizer import VocabMismatchError, check_vocab
    from asr_kd.training.checkpoint import unwrap_model

    name = teacher.checkpoint or type(teacher.model).__name__
    v_teacher = int(teacher.model.vocab_size)
    v_student = getattr(unwrap_model(student), "vocab_size", None)
    if v_student is not None and int(v_student) != v_teacher:
        raise VocabMismatchError(
            f"vocabulary mismatch: the KD teacher {name} outputs {v_teacher} tokens but the student outputs "
            f"{int(v_student)} (lang dir {lang_dir}): teacher and student need the same BPE model"
        )
    if tokenizer is not None:
        check_vocab(
            tokenizer,
            v_teacher,
            getattr(teacher.model, "trained_tokens", None),
            lang_dir=lang_dir,
            model=f"{name} (the KD teacher)",
        )


def build_kd_loss_fn(
    kd_config: Mapping[str, Any],
    model: nn.Module,
    device: str | torch.device = "cpu",
    *,
    max_steps: int | None = None,
    tokenizer: Any = None,
    lang_dir: str | None = None,
    **asr_kwargs: Any,
) -> KdLossFn:
    """Build the teacher and methods of a ``kd`` config section for the student ``model``.

    Methods with parameters are registered in ``model.kd_aux`` (call this before building the
    optimiser and wrapping the model in DDP). Bad settings fail here, naming the field: a method's
    options or an encoder capability it needs (``kd.methods[i]``), and a chunk config the student's
    encoder cannot use (``training.chunk``, :meth:`AsrLossFn.check_model`).

    An ``asr`` teacher must share the student's vocabulary (KD targets are compared token id by token
    id): its output size must equal the student's, and its pieces (when its checkpoint stores them)
    those of the student's ``tokenizer`` (from ``lang_dir``); otherwise
    :class:`~asr_kd.data.tokenizer.VocabMismatchError` names both.
    """
    cfg = dict(kd_config)
    unknown = set(cfg) - {"teacher", "methods", "total_steps"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in the kd config; known: teacher, methods, total_steps")
    methods_cfg = cfg.get("methods") or []
    if isinstance(methods_cfg, Mapping):
        methods_cfg = [methods_cfg]
    teacher = build_teacher(cfg.get("teacher"), device=device)
    if isinstance(teacher, AsrTeacher):
        check_teacher_vocab(teacher, model, tokenizer, lang_dir)
    total_steps = cfg.get("total_steps", max_steps)
    entries = []
    for i, mc in enumerate(methods_cfg):
        mc = dict(mc)
        name = mc.pop("name", None)
        if name is None:
            raise ValueError(f"kd.methods[{i}] has no 'name'")
        weight = float(mc.pop("weight", 1.0))
        schedule = build_schedule(mc.pop("schedule", None))
        try:
            method = build_kd_method(name, model, **mc).to(device)
        except ValueError as e:  # MissingCapabilityError included
            raise type(e)(f"kd.methods[{i}] ({name}): {e}") from e
        entries.append(KdEntry(name, method, weight, schedule))
        log.info("kd method %s: weight %.3g, options %s", name, weight, mc)
    if teacher is not None:
        log.info("kd teacher: %s (%s)", type(teacher).__name__, "online" if teacher.online else "offline")
    for i, e in enumerate(entries):  # a method that needs a particular teacher says so now
        check = getattr(e.method, "check_teacher", None)
        if check is not None:
            try:
                check(teacher)
            except ValueError as err:
                raise type(err)(f"kd.methods[{i}] ({e.name}): {err}") from err
    for i, e in enumerate(entries):  # after check_teacher: a method may build modules of the teacher's dims there
        if any(True for _ in e.method.parameters()):
            model.kd_aux[f"{i}_{e.name}"] = e.method.to(device)
    loss_fn = KdLossFn(entries, teacher, total_steps=total_steps, **asr_kwargs)
    loss_fn.check_model(model)
    return loss_fn
