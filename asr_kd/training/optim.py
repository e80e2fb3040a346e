"""Optimisers, learning-rate schedules and gradient clipping, built from a config dict.

Usage::

    from asr_kd.training.optim import build_optimizer, build_scheduler
    opt = build_optimizer(model.named_parameters(), {"name": "adamw", "lr": 2e-3, "weight_decay": 1e-2})
    sched = build_scheduler(opt, {"name": "noam", "warmup_steps": 500})
    ...
    loss.backward(); grad_norm = clip_grad_norm(model.parameters(), 5.0); opt.step(); sched.step()

    # icefall's Zipformer recipe: ScaledAdam clips itself (the trainer then only measures the norm)
    opt = build_optimizer(model.named_parameters(), {"name": "scaled_adam", "lr": 0.045, "clipping_scale": 2.0})
    sched = build_scheduler(opt, {"name": "eden", "lr_batches": 7500, "lr_epochs": 3.5, "warmup_batches": 500})

Schedules (all step-based, ``scheduler.step()`` once per batch; ``set_epoch(e)`` is called by the
trainer at each epoch start and only matters for ``eden``). ``lr`` in the optimiser config is the
*peak* learning rate; each schedule returns a factor in (0, 1] that multiplies it.

=============  ==================================================================================
 name           factor at step s (s counts from 0; the first update uses s = 0)
=============  ==================================================================================
 ``noam``       linear warm-up ``(s+1)/W`` for ``s < W``, then inverse square root ``sqrt(W/(s+1))``
 ``cosine``     linear warm-up, then cosine from 1 to ``min_ratio`` at ``total_steps`` (flat after)
 ``eden``       icefall's Eden: ``((s²+B²)/B²)^-¼ · ((e²+E²)/E²)^-¼ · w(s)``, B = ``lr_batches``,
                E = ``lr_epochs``, e the 0-based epoch; ``w(s) = warmup_start + (1-warmup_start)·s/W``
                for ``s < W`` (W = ``warmup_batches``/``warmup_steps``, default 500, ``warmup_start``
                default 0.5, as icefall), then 1
 ``constant``   linear warm-up, then 1
=============  ==================================================================================

Why a short warm-up and a peak of 1e-3..2e-3: with a tiny peak lr (or thousands of warm-up steps) a
CTC model sits in the "all blanks" minimum for a long time; a few hundred warm-up steps to ~2e-3
with AdamW leave it within the first few hundred to thousand steps on the synthetic corpus.

Every scheduler's ``state_dict()`` holds only ints/floats so that checkpoints load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

log = logging.getLogger(__name__)

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
    "ScaledAdam",
    "named_param_groups",
]


# ----------------------------------------------------------------------------------------- optimisers
def _strip_ddp(name: str) -> str:
    return name[len("module.") :] if name.startswith("module.") else name


def named_param_groups(params: Iterable) -> list[dict]:
    """Normalise what an optimiser is given to groups whose ``params`` are ``(name, param)`` pairs.

    Accepts parameters, ``(name, param)`` pairs (``model.named_parameters()``, with or without DDP's
    ``module.`` prefix, which is dropped), or groups (dicts) with ``params`` (parameters or pairs) or
    icefall's ``named_params`` (pairs), plus per-group options. Unnamed parameters are called
    ``group<g>.param<i>``. Outside groups, parameters with ``requires_grad=False`` are dropped.
    """
    items = list(params)
    if not items:
        raise ValueError("the optimiser got an empty parameter list")
    user_groups = isinstance(items[0], Mapping)
    groups_in = items if user_groups else [{"params": items}]
    out = []
    for gi, g in enumerate(groups_in):
        g = dict(g)
        if "named_params" in g:
            if "params" in g:
                raise ValueError(f"parameter group {gi} has both 'params' and 'named_params'")
            entries = g.pop("named_params")
        else:
            entries = g.pop("params")
        entries = [entries] if isinstance(entries, torch.Tensor) else list(entries)
        named = []
        for i, e in enumerate(entries):
            name, p = (e[0], e[1]) if isinstance(e, tuple) else (f"group{gi}.param{i}", e)
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"parameter group {gi} entry {i} is a {type(p).__name__}, not a tensor")
            if user_groups or p.requires_grad:
                named.append((_strip_ddp(str(name)), p))
        g["params"] = named
        out.append(g)
    return out


def _split_decay(named: list[tuple[str, torch.Tensor]], weight_decay: float, no_decay_1d: bool) -> list[dict]:
    """Decayed and non-decayed groups (biases, norms' gains: ``ndim <= 1``), keeping the names."""
    if not no_decay_1d or weight_decay == 0.0:
        return [{"params": named, "weight_decay": weight_decay}]
    decay = [(n, p) for n, p in named if p.ndim > 1]
    no_decay = [(n, p) for n, p in named if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(params: Iterable, cfg: Mapping[str, Any] | None = None) -> torch.optim.Optimizer:
    """Optimiser from a config dict.

    ``params``: anything :func:`named_param_groups` accepts; pass ``model.named_parameters()`` so that
    :class:`ScaledAdam` can name the parameter that dominates clipping.

    Keys: ``name`` (``adamw`` default, ``adam``, ``sgd``, ``scaled_adam`` = :class:`ScaledAdam`), ``lr``
    (peak lr, default 2e-3; for ``scaled_adam`` a relative step, default 0.045), ``weight_decay``
    (default 1e-2 for AdamW, none for ``scaled_adam``), ``betas`` (default [0.9, 0.98]), ``eps`` (1e-8),
    ``momentum`` (SGD), ``no_decay_1d`` (default True: no weight decay on biases and norm gains).
    ``scaled_adam`` also takes ``clipping_scale`` (default 2.0, as icefall's recipes; ``null``: no
    clipping), ``scalar_lr_scale`` (0.1), ``param_min_rms`` (1e-5), ``param_max_rms`` (3.0),
    ``scalar_max`` (10.0), ``size_update_period`` (4), ``clipping_update_period`` (100).
    Unknown keys are ignored (``grad_clip`` and scheduler keys may live in the same dict).
    """
    cfg = dict(cfg or {})
    name = str(cfg.get("name", "adamw")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    items = list(params)
    user_groups = bool(items) and isinstance(items[0], Mapping)
    groups = named_param_groups(items)
    if name == "scaled_adam":  # no weight decay: the clamped RMS bounds each tensor's scale
        clip = cfg.get("clipping_scale", 2.0)
        return ScaledAdam(
            groups,
            lr=float(cfg.get("lr", 0.045)),
            clipping_scale=None if clip is None else float(clip),
            betas=tuple(float(b) for b in cfg.get("betas", (0.9, 0.98))),
            eps=float(cfg.get("eps", 1e-8)),
            scalar_lr_scale=float(cfg.get("scalar_lr_scale", 0.1)),
            param_min_rms=float(cfg.get("param_min_rms", 1e-5)),
            param_max_rms=float(cfg.get("param_max_rms", 3.0)),
            scalar_max=float(cfg.get("scalar_max", 10.0)),
            size_update_period=int(cfg.get("size_update_period", 4)),
            clipping_update_period=int(cfg.get("clipping_update_period", 100)),
        )
    lr = float(cfg.get("lr", 2e-3))
    wd = float(cfg.get("weight_decay", 1e-2 if name == "adamw" else 0.0))
    if not user_groups:
        groups = _split_decay(groups[0]["params"], wd, bool(cfg.get("no_decay_1d", True)))
    # torch optimisers get plain tensors: their state dicts keep the format of earlier checkpoints
    plain = [dict(g, params=[p for _, p in g["params"]]) for g in groups]
    if name in ("adamw", "adam"):
        betas = tuple(float(b) for b in cfg.get("betas", (0.9, 0.98)))
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return cls(plain, lr=lr, betas=betas, eps=float(cfg.get("eps", 1e-8)))
    return torch.optim.SGD(plain, lr=lr, momentum=float(cfg.get("momentum", 0.9)))


OPTIMIZERS = ("adamw", "adam", "sgd", "scaled_adam")

_ADAM_OPTIONS = {"weight_decay": float, "betas": tuple[float, float], "eps": float, "no_decay_1d": bool}
#: the ``optim`` keys :func:`build_optimizer` reads, per optimiser, with their types (``grad_clip`` is
#: the trainer's, accepted here for icefall-style configs)
OPTIMIZER_OPTIONS: dict[str, dict[str, Any]] = {
    "adamw": _ADAM_OPTIONS,
    "adam": _ADAM_OPTIONS,
    "sgd": {"weight_decay": float, "momentum": float, "no_decay_1d": bool},
    "scaled_adam": {
        "clipping_scale": float | None,
        "betas": tuple[float, float],
        "eps": float,
        "scalar_lr_scale": float,
        "param_min_rms": float,
        "param_max_rms": float,
        "scalar_max": float,
        "size_update_period": int,
        "clipping_update_period": int,
    },
}
_OPTIM_COMMON = {"name": str, "lr": float, "grad_clip": float | None}


def optimizer_schema(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{key: type}`` of an ``optim`` section (:func:`asr_kd.training.config.check_section`).

    Known keys are those of *any* optimiser (a ``base:`` config may leave e.g. ``weight_decay`` in a
    ``scaled_adam`` section; :func:`unused_options` names such keys); the types are the chosen
    optimiser's. An unknown ``name`` raises, listing the optimisers."""
    name = str(cfg.get("name", "adamw")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name: unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    keys: dict[str, Any] = {}
    for options in OPTIMIZER_OPTIONS.values():
        keys.update(options)
    keys.update(OPTIMIZER_OPTIONS[name])
    keys.update(_OPTIM_COMMON)
    return keys


def scheduler_schema(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{key: type}`` of a ``scheduler`` section: the keyword arguments of every schedule class
    (types from the chosen one), plus ``name``. An unknown ``name`` raises, listing the schedules."""
    import typing

    name = str(cfg.get("name", "noam")).lower()
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler.name: unknown scheduler {name!r}; choose from {sorted(SCHEDULERS)}")
    keys: dict[str, Any] = {}
    for cls in [c for n, c in SCHEDULERS.items() if n != name] + [SCHEDULERS[name]]:
        hints = typing.get_type_hints(cls.__init__)
        for arg in _scheduler_args(cls):
            keys[arg] = hints.get(arg, Any)
    keys["name"] = str
    return keys


def unused_options(section: str, cfg: Mapping[str, Any]) -> list[str]:
    """Keys of an ``optim`` / ``scheduler`` section that the chosen optimiser / schedule ignores."""
    if section == "optim":
        name = str(cfg.get("name", "adamw")).lower()
        used = set(OPTIMIZER_OPTIONS.get(name, {})) | set(_OPTIM_COMMON)
    else:
        name = str(cfg.get("name", "noam")).lower()
        used = (_scheduler_args(SCHEDULERS[name]) if name in SCHEDULERS else set()) | {"name"}
    return sorted(k for k in cfg if k not in used)


def _scheduler_args(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters) - {"self", "optimizer", "last_step"}


class ScaledAdam(torch.optim.Optimizer):
    """icefall's ScaledAdam: Adam whose steps are relative to each tensor's RMS, a learned per-tensor
    scale, and clipping against the median of recent gradient norms.

    ``params``: parameters, ``(name, param)`` pairs or groups (see :func:`named_param_groups`); the
    names (``param_groups[i]["param_names"]``) appear in clipping log messages. ``lr`` is a relative
    step (typical peak 0.03-0.05 with :class:`EdenScheduler`). No weight decay: the RMS limits bound
    each tensor's scale.

    One step, with ``t`` the tensor's 0-based update count, ``g`` its gradient (after clipping),
    ``b1, b2 = betas`` and ``δ`` a momentum buffer (updates, not gradients, are averaged):

    * every tensor: ``δ ← b1·δ``; second moment ``v ← b2·v + (1-b2)·g²``, bias-corrected
      ``v̂ = v / (1 - b2^(t+1))``;
    * tensors with more than one element (matrices, biases, gains): ``δ ← δ - lr·(1-b1)·r·g/(√v̂+eps)``
      with ``r`` = the tensor's RMS clamped to ``[param_min_rms, param_max_rms]``, so every tensor
      changes by about ``lr`` relative to its own size. ``r`` is re-measured every
      ``size_update_period`` (P) steps (at ``t ≡ P-1 mod P``); at the same moments, for ``t > 0``, the
      tensor's scale is learned: with ``c_k = <p, g>`` (the gradient w.r.t. log-scale) of the last P
      steps, ``s ← b2^P·s + (1-b2^P)·mean(c_k²)``, ``ŝ = s / (1 - b2^(P·n))`` (n = ``(t+1) // P``),
      relative scale step ``σ = -lr·scalar_lr_scale·Σc_k / (√ŝ + eps)``, not negative while
      ``rms < param_min_rms`` and at most ``(param_max_rms - rms)/rms``; ``δ ← δ + (1-b1)·σ·p``;
    * one-element tensors (scalars): plain Adam with lr ``lr·scalar_lr_scale``:
      ``δ ← δ - lr·scalar_lr_scale·(1-b1)·g/(√v̂+eps)``;
    * ``p ← p + δ`` (scalars then clamped to ``[-scalar_max, scalar_max]``).

    Clipping (``clipping_scale`` not None), over all groups together: the step's norm
    ``‖G‖ = sqrt(Σ_tensors r²·‖g‖² + Σ_scalars (scalar_lr_scale·g)²)`` (the size of the update it
    would cause) is kept in a history of the last ``clipping_update_period`` (Q) steps. At optimiser
    steps 10, 20, 40 (those below Q) and every Q steps the threshold becomes ``clipping_scale ×
    median(history)`` (×2 at steps 10/20/40, while norms still change fast; median = the
    ``n // 2``-th smallest of n), and the norm quartiles, the threshold and the share of steps clipped
    since the previous refresh are logged. Before step 10 nothing is clipped. A step whose norm
    exceeds the threshold has all gradients scaled by ``threshold / ‖G‖``; below a factor 0.1 a
    warning names the parameter with the largest share of ``‖G‖²``. A non-finite ``‖G‖`` zeroes the
    gradients of that step. :attr:`clip_state` holds the counters (``total_clipped``, ``last_scale``,
    ``dominant``); it is part of :meth:`state_dict`.

    The state dict holds tensors, ints, floats, strings and lists only (``torch.load(weights_only=True)``)
    and restores the step exactly.
    """

    def __init__(
        self,
        params,
        lr: float = 0.045,
        clipping_scale: float | None = None,
        betas=(0.9, 0.98),
        eps: float = 1e-8,
        scalar_lr_scale: float = 0.1,
        param_min_rms: float = 1e-5,
        param_max_rms: float = 3.0,
        scalar_max: float = 10.0,
        size_update_period: int = 4,
        clipping_update_period: int = 100,
    ):
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if size_update_period < 1 or clipping_update_period < 1:
            raise ValueError("size_update_period and clipping_update_period must be >= 1")
        if clipping_scale is not None and clipping_scale <= 0:
            raise ValueError(f"clipping_scale must be > 0 or None, got {clipping_scale}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            scalar_lr_scale=scalar_lr_scale,
            param_min_rms=param_min_rms,
            param_max_rms=param_max_rms,
            scalar_max=scalar_max,
            size_update_period=int(size_update_period),
        )
        super().__init__(named_param_groups(params), defaults)  # torch keeps the names in "param_names"
        self.clipping_scale = None if clipping_scale is None else float(clipping_scale)
        self.clipping_update_period = int(clipping_update_period)
        self.clip_state = self._fresh_clip_state()

    @staticmethod
    def _fresh_clip_state() -> dict[str, Any]:
        return {
            "step": 0,
            "norms": [],
            "threshold": None,
            "since_refresh": 0,
            "num_clipped": 0,
            "total_clipped": 0,
            "last_scale": 1.0,
            "dominant": None,
            "dominant_share": 0.0,
        }

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        cs = self.clip_state
        sd["clipping"] = dict(cs, norms=[float(x) for x in cs["norms"]])
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        state_dict = dict(state_dict)
        clip = state_dict.pop("clipping", None)
        super().load_state_dict(state_dict)
        self.clip_state = self._fresh_clip_state()
        if clip is not None:
            self.clip_state.update(clip)
            self.clip_state["norms"] = [float(x) for x in clip.get("norms", [])]

    # ------------------------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        items = []  # (group, name, param, state) of the parameters with a gradient
        for gi, group in enumerate(self.param_groups):
            names = group.get("param_names") or [f"group{gi}.param{i}" for i in range(len(group["params"]))]
            for name, p in zip(names, group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ScaledAdam does not support sparse gradients")
                st = self.state[p]
                if not st:
                    self._init_state(group, p, st)
                items.append((group, name, p, st))
        if not items:
            return loss
        scale = self._clipping_factor(items) if self.clipping_scale is not None else 1.0
        for group, _, p, st in items:
            g = p.grad if scale == 1.0 else torch.zeros_like(p.grad) if scale == 0.0 else p.grad * scale
            self._update(group, p, st, g)
        return loss

    @staticmethod
    def _init_state(group: dict, p: torch.Tensor, st: dict) -> None:
        st["step"] = 0
        st["delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if p.numel() > 1:
            st["param_rms"] = p.detach().pow(2).mean().sqrt()
            st["scale_grads"] = torch.zeros(group["size_update_period"], dtype=p.dtype, device=p.device)
            st["scale_exp_avg_sq"] = torch.zeros((), dtype=p.dtype, device=p.device)

    @staticmethod
    def _update(group: dict, p: torch.Tensor, st: dict, g: torch.Tensor) -> None:
        lr = group["lr"]
        b1, b2 = group["betas"]
        t = int(st["step"])
        delta = st["delta"]
        delta.mul_(b1)
        v = st["exp_avg_sq"]
        v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        denom = (v / (1.0 - b2 ** (t + 1))).sqrt_().add_(group["eps"])
        if p.numel() == 1:
            delta.add_(g / denom, alpha=-lr * group["scalar_lr_scale"] * (1.0 - b1))
            p.add_(delta).clamp_(-group["scalar_max"], group["scalar_max"])
        else:
            period = group["size_update_period"]
            st["scale_grads"][t % period] = (p * g).sum()
            rms = st["param_rms"]
            if t % period == period - 1:
                rms.copy_(p.pow(2).mean().sqrt())
                if t > 0:
                    ScaledAdam._scale_update(group, p, st, t)
            r = rms.clamp(group["param_min_rms"], group["param_max_rms"])
            delta.add_((g / denom) * (r * (-lr * (1.0 - b1))))
            p.add_(delta)
        st["step"] = t + 1

    @staticmethod
    def _scale_update(group: dict, p: torch.Tensor, st: dict, t: int) -> None:
        """Learn the tensor's overall scale from the last ``size_update_period`` values of <p, g>."""
        b1, b2 = group["betas"]
        period = group["size_update_period"]
        b2p = b2**period
        sg, sv, rms = st["scale_grads"], st["scale_exp_avg_sq"], st["param_rms"]
        sv.mul_(b2p).add_(sg.pow(2).mean(), alpha=1.0 - b2p)
        corr = 1.0 - b2p ** ((t + 1) // period)
        sigma = sg.sum() * (-group["lr"] * group["scalar_lr_scale"]) / ((sv / corr).sqrt() + group["eps"])
        sigma = torch.where(rms < group["param_min_rms"], sigma.clamp(min=0.0), sigma)
        sigma = torch.minimum(sigma, (group["param_max_rms"] - rms) / rms)
        st["delta"].add_(p * (sigma * (1.0 - b1)))

    # ------------------------------------------------------------------------------------ clipping
    def _clipping_factor(self, items: list) -> float:
        cs = self.clip_state
        t = int(cs["step"])
        cs["step"] = t + 1
        sumsq = []
        for group, _, p, st in items:
            g = p.grad.float()
            if p.numel() == 1:
                sumsq.append((g * group["scalar_lr_scale"]).pow(2).sum())
            else:
                sumsq.append(g.pow(2).sum() * st["param_rms"].float() ** 2)
        dev = sumsq[0].device
        sumsq = torch.stack([s.to(dev) for s in sumsq])
        tot_sq = sumsq.sum()
        norm = math.sqrt(float(tot_sq)) if math.isfinite(float(tot_sq)) else float("nan")
        if not math.isfinite(norm):
            log.warning("ScaledAdam step %d: non-finite gradient norm; this step's gradients are zeroed", t)
            cs["last_scale"] = 0.0
            return 0.0
        period = self.clipping_update_period
        cs["norms"] = (cs["norms"] + [norm])[-period:]
        early = t in (10, 20, 40) and t < period
        if early or (t > 0 and t % period == 0):
            self._refresh_threshold(t, early)
        threshold = cs["threshold"]
        if threshold is None:
            cs["last_scale"] = 1.0
            return 1.0
        cs["since_refresh"] += 1
        scale = min(1.0, threshold / (norm + 1e-20))
        cs["last_scale"] = scale
        if scale < 1.0:
            cs["num_clipped"] += 1
            cs["total_clipped"] += 1
            k = int(torch.argmax(sumsq))
            cs["dominant"] = items[k][1]
            cs["dominant_share"] = float(sumsq[k] / tot_sq)
            (log.warning if scale < 0.1 else log.debug)(
                "ScaledAdam step %d: gradient norm %.3e > threshold %.3e, scaling gradients by %.3g; "
                "dominated by %s (%.0f%% of the squared norm)",
                t,
                norm,
                threshold,
                scale,
                cs["dominant"],
                100.0 * cs["dominant_share"],
            )
        return scale

    def _refresh_threshold(self, t: int, early: bool) -> None:
        cs = self.clip_state
        norms = sorted(cs["norms"])
        n = len(norms)
        quartiles = [norms[min(n - 1, (n * k) // 4)] for k in range(5)]
        threshold = self.clipping_scale * norms[n // 2] * (2.0 if early else 1.0)
        pct = 100.0 * cs["num_clipped"] / cs["since_refresh"] if cs["since_refresh"] else 0.0
        extra = f"; last clipped step dominated by {cs['dominant']}" if cs["num_clipped"] and cs["dominant"] else ""
        log.info(
            "ScaledAdam step %d: clipping_scale=%g, grad-norm quartiles %s, threshold=%.3e, "
            "clipped %.1f%% of %d steps%s",
            t,
            self.clipping_scale,
            " ".join(f"{q:.3e}" for q in quartiles),
            threshold,
            pct,
            cs["since_refresh"],
            extra,
        )
        cs["threshold"] = threshold
        cs["num_clipped"] = 0
        cs["since_refresh"] = 0


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

    def __init__(
        self, optimizer, warmup_steps: int = 500, total_steps: int = 10000, min_ratio: float = 0.02, last_step: int = -1
    ):
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
    """icefall's Eden schedule: step- and epoch-dependent decay with a short linear warm-up.

    ``factor(s, e) = ((s² + B²) / B²)^-0.25 · ((e² + E²) / E²)^-0.25 · w(s)`` with s the number of
    ``step()`` calls so far (the batch count icefall passes to ``step_batch``), e the 0-based epoch
    given to :meth:`set_epoch` (icefall's ``step_epoch(epoch - 1)``), B = ``lr_batches``, E =
    ``lr_epochs``, and ``w(s) = warmup_start + (1 - warmup_start) · s / W`` for ``s < W``, else 1
    (W = ``warmup_batches``, the icefall name, or ``warmup_steps``). The lr is roughly flat until B
    steps / E epochs, then decays like s^-½ · e^-½. icefall's defaults: W = 500, ``warmup_start`` 0.5;
    its Zipformer recipe uses B = 7500, E = 3.5 with a ScaledAdam lr of 0.045.
    """

    def __init__(
        self,
        optimizer,
        lr_batches: float = 5000.0,
        lr_epochs: float = 6.0,
        warmup_steps: float = 500,
        warmup_start: float = 0.5,
        warmup_batches: float | None = None,
        last_step: int = -1,
    ):
        if not 0.0 <= float(warmup_start) <= 1.0:
            raise ValueError(f"warmup_start must be in [0, 1], got {warmup_start}")
        self.lr_batches = float(lr_batches)
        self.lr_epochs = float(lr_epochs)
        self.warmup_start = float(warmup_start)
        super().__init__(optimizer, warmup_steps if warmup_batches is None else warmup_batches, last_step)

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
    (``warmup_steps``, ``total_steps``, ``min_ratio``, ``lr_batches``, ``lr_epochs``, ``warmup_start``,
    ``warmup_batches``).
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
