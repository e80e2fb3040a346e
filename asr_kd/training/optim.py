"""Optimisers, learning-rate schedules and gradient clipping, built from a config dict.

Usage::

    from asr_kd.training.optim import build_optimizer, build_scheduler
    opt = build_optimizer(model.parameters(), {"name": "adamw", "lr": 2e-3, "weight_decay": 1e-2})
    sched = build_scheduler(opt, {"name": "noam", "warmup_steps": 500})
    ...
    loss.backward(); grad_norm = clip_grad_norm(model.parameters(), 5.0); opt.step(); sched.step()

Schedules (all step-based, ``scheduler.step()`` once per batch; ``set_epoch(e)`` is called by the
trainer at each epoch start and only matters for ``eden``). ``lr`` in the optimiser config is the
*peak* learning rate; each schedule returns a factor in (0, 1] that multiplies it.

=============  ==================================================================================
 name           factor at step s (s counts from 0; the first update uses s = 0)
=============  ==================================================================================
 ``noam``       linear warm-up ``(s+1)/W`` for ``s < W``, then inverse square root ``sqrt(W/(s+1))``
 ``cosine``     linear warm-up, then cosine from 1 to ``min_ratio`` at ``total_steps`` (flat after)
 ``eden``       ``((s²+B²)/B²)^-¼ · ((e²+E²)/E²)^-¼`` with a linear warm-up from ``warmup_start``
                to 1 over ``W`` steps (icefall's Eden idea: B = ``lr_batches``, E = ``lr_epochs``)
 ``constant``   linear warm-up, then 1
=============  ==================================================================================

Why a short warm-up and a peak of 1e-3..2e-3: with a tiny peak lr (or thousands of warm-up steps) a
CTC model sits in the "all blanks" minimum for a long time; a few hundred warm-up steps to ~2e-3
with AdamW leave it within the first few hundred to thousand steps on the synthetic corpus.

Every scheduler's ``state_dict()`` holds only ints/floats so that checkpoints load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "build_optimizer",
    "build_scheduler",
    "clip_grad_norm",
    "WarmupScheduler",
    "NoamScheduler",
    "CosineScheduler",
    "EdenScheduler",
    "ConstantScheduler",
    "OPTIMIZERS",
    "SCHEDULERS",
    "ScaledAdamLite",
]


# ----------------------------------------------------------------------------------------- optimisers
def _param_groups(params: Iterable, weight_decay: float, no_decay_1d: bool) -> list[dict]:
    """Split parameters into decayed and non-decayed groups (biases, norms' gains: ``ndim <= 1``)."""
    params = list(params)
    if params and isinstance(params[0], dict):  # already groups
        return params
    params = [p for p in params if p.requires_grad]
    if not no_decay_1d or weight_decay == 0.0:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(params: Iterable, cfg: Mapping[str, Any] | None = None) -> torch.optim.Optimizer:
    """Optimiser from a config dict.

    Keys: ``name`` (``adamw`` default, ``adam``, ``sgd``, ``scaled_adam`` = :class:`ScaledAdamLite`, whose
    lr is a relative step, typically 0.03-0.05, with ``scalar_lr_scale``, ``param_min_rms``,
    ``param_max_rms``), ``lr`` (peak lr, default 2e-3),
    ``weight_decay`` (default 1e-2 for AdamW), ``betas`` (default [0.9, 0.98]), ``eps`` (1e-8),
    ``momentum`` (SGD), ``no_decay_1d`` (default True: no weight decay on biases and norm gains).
    Unknown keys are ignored (``grad_clip`` and scheduler keys may live in the same dict).
    """
    cfg = dict(cfg or {})
    name = str(cfg.get("name", "adamw")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    lr = float(cfg.get("lr", 2e-3))
    wd = float(cfg.get("weight_decay", 1e-2 if name == "adamw" else 0.0)) if name != "scaled_adam" else 0.0
    groups = _param_groups(params, wd, bool(cfg.get("no_decay_1d", True)))
    if name == "scaled_adam":  # no weight decay: the clamped RMS bounds each tensor's scale
        return ScaledAdamLite(
            groups, lr=float(cfg.get("lr", 0.045)), betas=tuple(float(b) for b in cfg.get("betas", (0.9, 0.98))),
            eps=float(cfg.get("eps", 1e-8)), scalar_lr_scale=float(cfg.get("scalar_lr_scale", 0.1)),
            param_min_rms=float(cfg.get("param_min_rms", 1e-5)), param_max_rms=float(cfg.get("param_max_rms", 3.0)),
        )
    if name in ("adamw", "adam"):
        betas = tuple(float(b) for b in cfg.get("betas", (0.9, 0.98)))
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return cls(groups, lr=lr, betas=betas, eps=float(cfg.get("eps", 1e-8)))
    return torch.optim.SGD(groups, lr=lr, momentum=float(cfg.get("momentum", 0.9)))


OPTIMIZERS = ("adamw", "adam", "sgd", "scaled_adam")


class ScaledAdamLite(torch.optim.Optimizer):
    """Adam whose step size is relative to each tensor's RMS, plus a learned per-tensor scale.

    The idea of icefall's ScaledAdam in a small form (no batched kernels, no internal clipping; use
    ``clip_grad_norm``). For a tensor ``p`` with more than one element:

    * direction ``d = m̂ / (sqrt(v̂) + eps)`` (bias-corrected Adam moments of the gradient);
    * ``p -= lr * rms(p) * d`` with ``rms(p)`` clamped to ``[param_min_rms, param_max_rms]``: every
      tensor changes by about ``lr`` *relative* to its own size, whatever its scale;
    * its overall scale ``log r`` follows Adam on ``g_r = <grad, p>`` (the gradient w.r.t. ``log r``)
      with learning rate ``lr * scalar_lr_scale``: ``p *= exp(-lr * scalar_lr_scale * d_r)``.

    Scalars (one element) get plain Adam with learning rate ``lr * scalar_lr_scale``. Typical peak lr:
    0.03 - 0.05 (a relative change per step). No weight decay (the clamped RMS bounds the scale).
    """

    def __init__(self, params, lr: float = 0.045, betas=(0.9, 0.98), eps: float = 1e-8,
                 scalar_lr_scale: float = 0.1, param_min_rms: float = 1e-5, param_max_rms: float = 3.0):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, scalar_lr_scale=scalar_lr_scale,
                        param_min_rms=param_min_rms, param_max_rms=param_max_rms)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            slr = lr * group["scalar_lr_scale"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.float()
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                    if p.numel() > 1:
                        st["scale_exp_avg"] = torch.zeros((), dtype=torch.float32, device=p.device)
                        st["scale_exp_avg_sq"] = torch.zeros((), dtype=torch.float32, device=p.device)
                st["step"] += 1
                t = float(st["step"])
                bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                direction = (m / bc1) / ((v / bc2).sqrt() + eps)
                if p.numel() == 1:
                    p.add_(direction.to(p.dtype), alpha=-slr)
                    continue
                pf = p.float()
                # scale: gradient w.r.t. log r where p = r * p_unit
                gs = (g * pf).sum()
                sm, sv = st["scale_exp_avg"], st["scale_exp_avg_sq"]
                sm.mul_(b1).add_(gs, alpha=1.0 - b1)
                sv.mul_(b2).addcmul_(gs, gs, value=1.0 - b2)
                scale_dir = (sm / bc1) / ((sv / bc2).sqrt() + eps)
                rms = pf.pow(2).mean().sqrt().clamp(group["param_min_rms"], group["param_max_rms"])
                new = pf - lr * rms * direction
                new = new * torch.exp(-slr * scale_dir)
                p.copy_(new.to(p.dtype))
        return loss


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """Clip the global L2 norm of the gradients to ``max_norm`` (``None``/``<= 0``: only measure).

    Returns the total norm *before* clipping (a 0-dim tensor; may be inf/nan, which the trainer
    treats as a bad batch).
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.tensor(0.0)
    if max_norm is None or max_norm <= 0:
        return torch.nn.utils.clip_grad_norm_(params, float("inf"))
    return torch.nn.utils.clip_grad_norm_(params, float(max_norm))


# ----------------------------------------------------------------------------------------- schedules
class WarmupScheduler(LRScheduler):
    """Base class: ``lr_i = base_lr_i * factor(step, epoch)``; subclasses implement :meth:`factor`.

    ``self.last_epoch`` of :class:`LRScheduler` is used as the *step* counter (it counts
    ``scheduler.step()`` calls); the data epoch is kept in ``self.epoch`` and set by
    :meth:`set_epoch`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 500, last_step: int = -1):
        self.warmup_steps = int(warmup_steps)
        self.epoch = 0
        super().__init__(optimizer, last_epoch=last_step)

    # LRScheduler API ---------------------------------------------------------------------------
    def get_lr(self) -> list[float]:
        f = self.factor(max(self.last_epoch, 0), self.epoch)
        return [base * f for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def set_epoch(self, epoch: int) -> None:
        """Tell the schedule the current (0-based) data epoch and refresh the lrs."""
        self.epoch = int(epoch)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def warmup_factor(self, step: int) -> float:
        if self.warmup_steps <= 0 or step >= self.warmup_steps:
            return 1.0
        return (step + 1) / self.warmup_steps

    def factor(self, step: int, epoch: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def step_count(self) -> int:
        """Number of ``step()`` calls so far."""
        return self.last_epoch

    def state_dict(self) -> dict[str, Any]:
        # Plain numbers only: LRScheduler.state_dict() would include the optimizer-less __dict__,
        # which is fine for our subclasses, but we keep it explicit.
        return {
            k: v
            for k, v in self.__dict__.items()
            if k != "optimizer" and isinstance(v, (int, float, str, bool, list, type(None)))
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.__dict__.update(dict(state_dict))
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]


class ConstantScheduler(WarmupScheduler):
    """Linear warm-up to the peak lr, then constant."""

    def factor(self, step: int, epoch: int) -> float:
        return self.warmup_factor(step)


class NoamScheduler(WarmupScheduler):
    """Linear warm-up over ``warmup_steps`` to the peak lr, then ``peak * sqrt(warmup / step)``."""

    def factor(self, step: int, epoch: int) -> float:
        s = step + 1
        if s < self.warmup_steps:
            return s / self.warmup_steps
        return math.sqrt(max(self.warmup_steps, 1) / s)


class CosineScheduler(WarmupScheduler):
    """Linear warm-up, then a half cosine from the peak to ``min_ratio * peak`` at ``total_steps``."""

    def __init__(self, optimizer, warmup_steps: int = 500, total_steps: int = 10000,
                 min_ratio: float = 0.02, last_step: int = -1):
        self.total_steps = int(total_steps)
        self.min_ratio = float(min_ratio)
        super().__init__(optimizer, warmup_steps, last_step)

    def factor(self, step: int, epoch: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_factor(step)
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EdenScheduler(WarmupScheduler):
    """Step- and epoch-dependent decay (the idea of icefall's Eden schedule).

    ``factor = ((s² + B²) / B²)^-0.25 * ((e² + E²) / E²)^-0.25 * warm``, where ``warm`` goes linearly
    from ``warmup_start`` to 1 over ``warmup_steps`` steps. B = ``lr_batches`` (steps), E =
    ``lr_epochs``; the lr is roughly flat until B steps / E epochs, then decays like s^-½ · e^-½.
    """

    def __init__(self, optimizer, lr_batches: float = 5000.0, lr_epochs: float = 6.0,
                 warmup_steps: int = 500, warmup_start: float = 0.5, last_step: int = -1):
        self.lr_batches = float(lr_batches)
        self.lr_epochs = float(lr_epochs)
        self.warmup_start = float(warmup_start)
        super().__init__(optimizer, warmup_steps, last_step)

    def factor(self, step: int, epoch: int) -> float:
        b, e = self.lr_batches, self.lr_epochs
        f = ((step**2 + b**2) / b**2) ** -0.25 * ((epoch**2 + e**2) / e**2) ** -0.25
        if self.warmup_steps > 0 and step < self.warmup_steps:
            f *= self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_steps
        return f


SCHEDULERS = {
    "noam": NoamScheduler,
    "cosine": CosineScheduler,
    "eden": EdenScheduler,
    "constant": ConstantScheduler,
}


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any] | None = None) -> WarmupScheduler:
    """Scheduler from a config dict: ``name`` (``noam`` default) plus that class's keyword arguments
    (``warmup_steps``, ``total_steps``, ``min_ratio``, ``lr_batches``, ``lr_epochs``, ``warmup_start``).
    Keys not taken by the chosen class are ignored."""
    cfg = dict(cfg or {})
    name = str(cfg.pop("name", "noam")).lower()
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {sorted(SCHEDULERS)}")
    cls = SCHEDULERS[name]
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "optimizer", "last_step"}
    kwargs = {k: v for k, v in cfg.items() if k in accepted}
    return cls(optimizer, **kwargs)
