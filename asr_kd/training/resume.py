"""Continuing from a checkpoint with a config that may have changed: what applies, what is refused,
and the experiment directory's record of what ran.

Policy on resume (the checkpoint's ``config`` against the new one, key by key):

* **refused** (:class:`~asr_kd.training.config.ConfigError` naming the keys, before anything is
  written): the model architecture (any ``model.*`` key except the regularisation and loss settings
  of :data:`MODEL_TUNABLE`), every ``optim.*`` key except ``lr`` and ``grad_clip`` (the optimiser state
  was built with them), ``scheduler.name``, ``kd.teacher`` and ``kd.methods``, and the keys of
  :data:`REFUSED_ON_RESUME`;
* **applied and logged**: everything else. ``optim.lr`` rescales the schedule's peak (the run continues
  at its current step, on the same schedule shape, with the new peak); other ``scheduler.*`` keys
  replace the restored schedule's settings (:func:`apply_optim_changes`); training limits, intervals,
  loss and data settings simply take effect.

``training.init_from`` needs the same architecture too (:func:`check_model_config`,
:func:`check_state_dict`): the error names the differing config keys (or parameters) instead of a
``load_state_dict`` dump.

Record: :func:`record_config` writes ``config.yaml`` (the config of the run now starting) and a copy of
each run's config under ``config-history/NNN-step-S.yaml`` with the step it started at and what changed,
so that earlier settings are never lost.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .checkpoint import _plain_config, unwrap_model
from .config import ConfigError, dump_config

log = logging.getLogger(__name__)

__all__ = [
    "MODEL_TUNABLE",
    "REFUSED_ON_RESUME",
    "config_diff",
    "check_model_config",
    "check_state_dict",
    "resume_changes",
    "apply_optim_changes",
    "record_config",
    "check_writable",
]

#: last components of ``model.*`` keys that change neither a parameter nor the computation's
#: structure (dropouts, loss weights and loss implementations): they may change on resume / init_from
MODEL_TUNABLE = frozenset(
    {
        "weights",
        "ctc_weight",
        "inter_ctc_weight",
        "lsm_weight",
        "zero_infinity",
        "backend",
        "loss",
        "prune_range",
        "lm_scale",
        "am_scale",
        "schedule_hours",
        "balancer_prob",
        "whiten_prob",
    }
)

#: keys whose change on resume is refused, and why
REFUSED_ON_RESUME = {
    "scheduler.name": "the schedule state in the checkpoint belongs to the old schedule",
    "kd.teacher": "the KD state in the checkpoint was trained against the old teacher",
    "kd.methods": "KD methods may own parameters and optimiser state (model.kd_aux)",
    "training.seed": "the data order and the random streams of the run depend on it",
    "data.seed": "the data order of the run depends on it",
    "data.lang_dir": "the model's output units are the old lang dir's tokens",
    "data.num_mel_bins": "the model's input features would change",
    "training.average_period": "the running model average (model_avg) assumes one period",
}
_OPTIM_APPLIED = ("optim.lr", "optim.grad_clip")
_MISSING = "<unset>"


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` of a nested mapping (lists are values)."""
    out: dict[str, Any] = {}
    if isinstance(cfg, Mapping) and (cfg or not prefix):
        for k, v in cfg.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = cfg
    return out


def config_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, old value, new value)]`` of two configs (a missing key is ``"<unset>"``), sorted."""
    a = _flatten(_plain_config(old or {}))
    b = _flatten(_plain_config(new or {}))
    out = []
    for k in sorted(set(a) | set(b)):
        o, n = a.get(k, _MISSING), b.get(k, _MISSING)
        if o != n:
            out.append((k, o, n))
    return out


def _fmt_changes(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in changes)


def _is_tunable(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last in MODEL_TUNABLE or "dropout" in last


def check_model_config(old_model: Mapping[str, Any] | None, new_model: Mapping[str, Any], source: str) -> None:
    """Raise :class:`ConfigError` when the ``model`` section ``new_model`` builds a different architecture
    than ``old_model`` (the checkpoint's), naming the differing keys. ``source`` says which checkpoint
    and why (``"resume from exp/checkpoint-8.pt"``). A checkpoint without a model config is not
    checked here (:func:`check_state_dict` still compares the parameters)."""
    if not old_model:
        return
    changes = [(f"model.{k}", o, n) for k, o, n in config_diff(old_model, new_model) if not _is_tunable(k)]
    if changes:
        raise ConfigError(
            f"{source}: the model architecture differs from the checkpoint's: {_fmt_changes(changes)}. "
            "Set these keys back to the checkpoint's values, or train in a new --exp-dir"
        )


def check_state_dict(
    state: Mapping[str, torch.Tensor], model: torch.nn.Module, source: str, ignore_prefixes: tuple[str, ...] = ()
) -> None:
    """Raise :class:`ConfigError` when the checkpoint's parameters do not fit ``model``: the missing,
    unexpected and reshaped entries (first few of each, with counts), instead of torch's dump."""
    have = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    want = unwrap_model(model).state_dict()
    have = {k: v for k, v in have.items() if not k.startswith(ignore_prefixes)}
    want = {k: v for k, v in want.items() if not k.startswith(ignore_prefixes)}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    reshaped = [
        f"{k} {tuple(have[k].shape)} in the checkpoint vs {tuple(want[k].shape)}"
        for k in sorted(set(have) & set(want))
        if tuple(have[k].shape) != tuple(want[k].shape)
    ]
    parts = []
    for what, items in (
        ("missing from the checkpoint", missing),
        ("not in this model", unexpected),
        ("of another shape", reshaped),
    ):
        if items:
            parts.append(f"{len(items)} {what} (e.g. {', '.join(items[:3])})")
    if parts:
        raise ConfigError(
            f"{source}: the checkpoint's parameters do not fit the model of this config: {'; '.join(parts)}. "
            "Use the model settings it was trained with, or train in a new --exp-dir"
        )


def resume_changes(old: Mapping[str, Any], new: Mapping[str, Any], source: str) -> list[tuple[str, Any, Any]]:
    """The keys that differ between the checkpoint's config ``old`` and ``new``, after refusing the ones
    resume cannot honour (:class:`ConfigError` naming each, with the reason). Returns the applied changes."""
    if not old:
        log.warning("%s: the checkpoint stores no config, so changed settings cannot be checked", source)
        return []
    changes = config_diff(old, new)
    refused = []
    for key, o, n in changes:
        section = key.split(".", 1)[0]
        why = None
        if section == "model":
            if not _is_tunable(key):
                why = "the model architecture"
        elif section == "optim" and key not in _OPTIM_APPLIED:
            why = "the checkpoint's optimiser state was built with it; only optim.lr and optim.grad_clip may change"
        else:
            for prefix, reason in REFUSED_ON_RESUME.items():
                if key == prefix or key.startswith(prefix + "."):
                    why = reason
        if why is not None:
            refused.append(f"{key}: {o!r} -> {n!r} ({why})")
    if refused:
        raise ConfigError(
            f"{source}: these settings cannot change when resuming: {'; '.join(refused)}. Set them back to the "
            "checkpoint's values, or start a new run in a new --exp-dir (training.init_from can take its weights)"
        )
    return changes


#: entries of a schedule's state dict that are its position, not its settings
_SCHEDULE_POSITION = frozenset(
    {"base_lrs", "last_epoch", "_step_count", "_get_lr_called_within_step", "_last_lr", "epoch", "verbose"}
    | {"_is_initial"}
)


def apply_optim_changes(
    optimizer: torch.optim.Optimizer, scheduler: Any, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[str]:
    """After restoring a checkpoint: make a changed ``optim.lr`` and changed ``scheduler.*`` settings take
    effect (the restored state holds the old ones). Returns log lines of what changed.

    ``optim.lr``: every group's base lr (``initial_lr`` and the schedule's ``base_lrs``) is scaled by
    new / old, so the schedule continues at its current step with the new peak. Scheduler settings
    (``warmup_steps``, ``total_steps``, ``lr_batches``, ...): those of a schedule built from the new
    config replace the restored ones; the position (step, epoch) stays."""
    from .optim import build_scheduler

    lines = []
    old_o, new_o = dict(old.get("optim") or {}), dict(new.get("optim") or {})
    default = 0.045 if str(new_o.get("name", "adamw")).lower() == "scaled_adam" else 2e-3
    old_lr, new_lr = float(old_o.get("lr", default)), float(new_o.get("lr", default))
    if old_lr != new_lr:
        ratio = new_lr / old_lr
        for g in optimizer.param_groups:
            if "initial_lr" in g:
                g["initial_lr"] = g["initial_lr"] * ratio
            g["lr"] = g["lr"] * ratio
        if scheduler is not None and hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = [b * ratio for b in scheduler.base_lrs]
        lines.append(f"optim.lr {old_lr:g} -> {new_lr:g} applied: the schedule keeps its step, with the new peak")
    old_s, new_s = dict(old.get("scheduler") or {}), dict(new.get("scheduler") or {})
    if scheduler is not None and old_s != new_s and hasattr(scheduler, "state_dict"):
        probe_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        fresh = build_scheduler(probe_opt, new_s).state_dict()
        current = scheduler.state_dict()
        changed = {k: v for k, v in fresh.items() if k not in _SCHEDULE_POSITION and current.get(k) != v}
        for k, v in changed.items():
            lines.append(f"scheduler setting {k} {current.get(k)!r} -> {v!r} applied from the current step")
            setattr(scheduler, k, v)
    if lines and scheduler is not None and hasattr(scheduler, "get_lr"):
        lrs = scheduler.get_lr()
        for g, lr in zip(optimizer.param_groups, lrs):
            g["lr"] = lr
        scheduler._last_lr = list(lrs)
    return lines


def record_config(
    exp_dir: str | os.PathLike,
    cfg: Mapping[str, Any],
    *,
    start_step: int,
    resumed_from: str | os.PathLike | None,
    changes: list[tuple[str, Any, Any]] = (),
) -> Path:
    """Write ``config.yaml`` (what this run uses) and ``config-history/NNN-step-<start_step>.yaml``.

    The history keeps every run's config; a ``config.yaml`` written before the history existed is kept
    as ``config-history/000-before-history.yaml``. Returns the history file written."""
    exp_dir = Path(exp_dir)
    hist = exp_dir / "config-history"
    hist.mkdir(parents=True, exist_ok=True)
    current = exp_dir / "config.yaml"
    if not any(hist.glob("*.yaml")) and current.is_file():
        os.replace(current, hist / "000-before-history.yaml")
    n = 1 + sum(1 for p in hist.glob("*.yaml") if not p.name.startswith("000-"))
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    header = [f"run {n} started at step {start_step} on {when}"]
    if resumed_from is not None:
        header.append(f"resumed from {resumed_from}")
    if changes:
        header.append("changed since the checkpoint: " + _fmt_changes(list(changes)))
    entry = hist / f"{n:03d}-step-{start_step}.yaml"
    dump_config(cfg, entry, header=header)
    dump_config(cfg, current, header=header + [f"every run's config: config-history/ (this one: {entry.name})"])
    return entry


def check_writable(exp_dir: str | os.PathLike) -> None:
    """Create ``exp_dir`` if needed and write a probe file into it: raise ``PermissionError`` naming the
    directory now, not at the first checkpoint after the training steps."""
    exp_dir = Path(exp_dir)
    try:
        exp_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=exp_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(
            f"the experiment directory {exp_dir} is not writable ({type(e).__name__}: {e.strerror or e}); "
            "checkpoints could not be saved. Fix its permissions or choose another --exp-dir"
        ) from e
