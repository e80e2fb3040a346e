"""The one checkpoint format of asr_kd: atomic writes, ``weights_only`` loading, averaging.

A checkpoint is a ``dict`` of plain values only (tensors, dicts, lists, tuples, ints, floats, strings,
bools, ``None``), so it always loads with ``torch.load(path, weights_only=True)``:

================  =========================================================================================
 key              value
================  =========================================================================================
 ``model``        ``model.state_dict()`` (the unwrapped module: no ``module.`` prefix from DDP)
 ``optimizer``    ``optimizer.state_dict()`` or ``None``
 ``scheduler``    ``scheduler.state_dict()`` or ``None`` (numbers only, see ``optim.py``)
 ``sampler``      ``{"epoch", "batches_consumed", "state"}``: the data position; ``state`` is the
                  sampler's own ``state_dict()`` (lhotse samplers) or ``None``
 ``rng``          ``{"torch", "numpy", "python", "cuda"}`` of this process (see :func:`get_rng_state`);
                  under DDP also ``"per_rank"``: a list with one such dict per rank
 ``step``         number of training batches processed so far (int)
 ``epoch``        current 0-based data epoch (int)
 ``config``       the experiment config (nested dict of plain values)
 ``grad_scaler``  ``GradScaler.state_dict()`` (``{}`` when fp16 scaling is off)
 ``meta``         free-form plain dict: torch version, time, wall-clock training seconds, the trainer's
                  ``audio_seconds`` (audio seen on all ranks), ...
 ``model_avg``    icefall's running model average (``training.average_period``): the floating-point
                  entries of the model state dict in float64 on CPU, or ``None``
 ``checksum``     ``"sha256:<hex>"`` of every other value (tensor bytes, dtypes, shapes and plain values,
                  see :func:`payload_checksum`); :func:`read_checkpoint` verifies it. Files written
                  before checksums existed have none and load with a warning.
================  =========================================================================================

File names in an experiment directory (icefall-like):
``checkpoint-<step>.pt`` every N steps (the last ``keep_last`` are kept), ``epoch-<e>.pt`` at the end of
epoch ``e`` (1-based in the name, as in icefall), ``*-avg-*.pt`` / ``averaged*.pt`` from averaging.

Averaging: :func:`average_checkpoints` averages the ``model`` of N files (icefall's ``--avg N``);
:func:`average_checkpoints_with_averaged_model` uses the ``model_avg`` of two files to get the average
over every ``average_period``-th model between their steps (icefall's ``--use-averaged-model``).

Writes are atomic: the checkpoint goes to a temporary file in the same directory, is fsynced, and
``os.replace``-d onto the final name; a crash leaves either the old file or the new one (and possibly a
stale ``.<name>.*.tmp``, which :func:`clean_stale_temp_files` removes at the next start).

Reading: every loader goes through :func:`read_checkpoint`, which turns a truncated or corrupt file
(torch's "PytorchStreamReader failed ...", a checksum mismatch) into :class:`CorruptCheckpointError`
naming the file; :func:`find_loadable_latest` resumes from the newest checkpoint that reads, with a
warning for each newer one it skips.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_KEYS",
    "CorruptCheckpointError",
    "atomic_save",
    "read_checkpoint",
    "payload_checksum",
    "find_loadable_latest",
    "clean_stale_temp_files",
    "save_checkpoint",
    "load_checkpoint",
    "find_latest",
    "list_checkpoints",
    "remove_old_checkpoints",
    "average_checkpoints",
    "get_rng_state",
    "set_rng_state",
    "unwrap_model",
    "checkpoint_step",
    "average_checkpoints_with_averaged_model",
    "averaged_state_dict",
]

CHECKPOINT_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "sampler",
    "rng",
    "step",
    "epoch",
    "config",
    "grad_scaler",
    "meta",
    "model_avg",
    "checksum",
)
_PERIODIC = re.compile(r"^checkpoint-(\d+)\.pt$")
_EPOCH = re.compile(r"^epoch-(\d+)\.pt$")


# ----------------------------------------------------------------------------------------------- helpers
def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP / DataParallel / torch.compile wrapper (or the model itself)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


_PLAIN_SCALARS = (int, float, str, bool, type(None), torch.dtype, torch.Size, torch.device)


def _check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise ``TypeError`` naming the first value that ``weights_only`` loading would reject.

    Scalars must be of the exact builtin types: subclasses such as ``numpy.float64`` or torch's
    ``TorchVersion`` (a ``str``) are pickled by class and rejected by ``weights_only`` loading.
    """
    if type(obj) in _PLAIN_SCALARS or isinstance(obj, torch.Tensor):
        return
    if type(obj) in (dict, list, tuple) or type(obj).__name__ == "OrderedDict":
        pass
    elif isinstance(obj, (Mapping, list, tuple)):
        raise TypeError(f"{where} has type {type(obj).__name__}; use a plain dict, list or tuple")
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if type(k) not in (int, float, str, bool, type(None)):
                raise TypeError(f"{where}: key {k!r} of type {type(k).__name__} is not a plain value")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} has type {type(obj).__module__}.{type(obj).__name__}, which torch.load(weights_only=True) "
        "cannot read; store tensors, dicts, lists, ints, floats or strings"
    )


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, fsync, then ``os.replace`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, overwritten, or its checksum does not match)."""


def payload_checksum(ckpt: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` over every entry of ``ckpt`` except ``checksum`` itself.

    Tensors contribute their dtype, shape and raw bytes; dict keys are visited in sorted order, lists
    and tuples in order, plain values by type and ``repr``. The digest is the same before saving and
    after ``torch.load`` (which keeps dtypes, shapes, values and dict contents)."""
    h = hashlib.sha256()
    _hash_into(h, {k: v for k, v in ckpt.items() if k != "checksum"})
    return "sha256:" + h.hexdigest()


def _hash_into(h: Any, v: Any) -> None:
    if isinstance(v, torch.Tensor):
        t = v.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(v.shape)}|".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy())
    elif isinstance(v, Mapping):
        h.update(b"{")
        for k in sorted(v, key=lambda k: (type(k).__name__, str(k))):
            h.update(f"{type(k).__name__}:{k!r}=".encode())
            _hash_into(h, v[k])
        h.update(b"}")
    elif isinstance(v, (list, tuple)):
        h.update(b"[")
        for x in v:
            _hash_into(h, x)
            h.update(b",")
        h.update(b"]")
    else:
        h.update(f"{type(v).__name__}:{v!r}|".encode())


def _first_sentence(e: BaseException) -> str:
    """The first sentence of an exception's message (torch appends a paragraph of advice)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text.split(". ")[0].rstrip(".")


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", verify: bool = True
) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` that names the file when it cannot be read.

    Raises :class:`CorruptCheckpointError` (a ``ValueError``) for a truncated or garbled file and,
    with ``verify``, for a ``checksum`` that does not match the payload (random bytes inside a
    tensor load without any error from torch). ``FileNotFoundError`` passes through. A checkpoint
    without a checksum (written by an older version) loads with a warning."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        size = path.stat().st_size
        raise CorruptCheckpointError(
            f"checkpoint {path} cannot be read: the file ({size} bytes) is truncated or corrupt "
            f"({type(e).__name__}: {_first_sentence(e)}). Delete it and resume from an "
            "earlier checkpoint (--resume-from), or restore the file"
        ) from e
    if not isinstance(ckpt, dict):
        raise CorruptCheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    stored = ckpt.get("checksum")
    if stored is None:
        log.warning("%s has no checksum (written before asr_kd stored one): loading it unverified", path)
    elif verify:
        actual = payload_checksum(ckpt)
        if actual != stored:
            raise CorruptCheckpointError(
                f"checkpoint {path} is corrupt: its contents do not match the checksum stored when it was "
                f"written ({stored[:19]}... != {actual[:19]}...), e.g. bytes overwritten on disk. Delete it and "
                "resume from an earlier checkpoint (--resume-from), or restore the file"
            )
    return ckpt


# ----------------------------------------------------------------------------------------------- RNG
def get_rng_state() -> dict[str, Any]:
    """This process's RNG states as plain values (tensors, ints, floats).

    ``python``: ``{"version": int, "state": LongTensor(625), "gauss": float | None}`` (from
    ``random.getstate()``); ``numpy``: ``{"key": LongTensor(624), "pos", "has_gauss", "gauss"}`` (legacy
    global MT19937); ``torch``: ByteTensor; ``cuda``: list of ByteTensors (one per device) or ``None``.
    """
    version, state, gauss = random.getstate()
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    assert np_name == "MT19937"
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_key, dtype=np.int64).copy()),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {"version": int(version), "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
    }


def set_rng_state(rng: Mapping[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`; missing parts are left untouched."""
    if rng.get("torch") is not None:
        torch.set_rng_state(rng["torch"].cpu().to(torch.uint8))
    if rng.get("cuda") is not None and torch.cuda.is_available():
        states = list(rng["cuda"])
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in states])
        else:
            log.warning("not restoring CUDA RNG: %d saved states, %d devices", len(states), torch.cuda.device_count())
    if rng.get("numpy") is not None:
        n = rng["numpy"]
        key = n["key"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", key, int(n["pos"]), int(n["has_gauss"]), float(n["gauss"])))
    if rng.get("python") is not None:
        p = rng["python"]
        random.setstate((int(p["version"]), tuple(int(x) for x in p["state"].tolist()), p["gauss"]))


# ----------------------------------------------------------------------------------------------- save/load
def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module | Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    sampler: Mapping[str, Any] | None = None,
    grad_scaler: Any = None,
    step: int = 0,
    epoch: int = 0,
    config: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    rng: Mapping[str, Any] | None | bool = True,
    model_avg: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically (see the module docstring for the keys) and return its path.

    ``model`` may be a module (unwrapped from DDP automatically) or a state dict. ``sampler`` is the
    data-position dict (``{"epoch", "batches_consumed", "state"}``) the trainer builds. ``rng=True``
    stores this process's RNG state, a dict stores that dict, ``None``/``False`` stores nothing.
    ``model_avg``: the trainer's running model average (float64 CPU tensors) or ``None``.
    """
    if isinstance(model, torch.nn.Module):
        model_sd = unwrap_model(model).state_dict()
    else:
        model_sd = dict(model)
    if rng is True:
        rng = get_rng_state()
    elif rng is False:
        rng = None
    full_meta = {"torch_version": str(torch.__version__), "saved_at": time.time()}
    full_meta.update(dict(meta or {}))
    ckpt = {
        "model": model_sd,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "sampler": dict(sampler) if sampler is not None else None,
        "rng": rng,
        "step": int(step),
        "epoch": int(epoch),
        "config": _plain_config(config),
        "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else {},
        "meta": full_meta,
        "model_avg": dict(model_avg) if model_avg is not None else None,
    }
    _check_plain(ckpt)
    ckpt["checksum"] = payload_checksum(ckpt)
    return atomic_save(ckpt, path)


def _plain_config(config: Any) -> Any:
    """Config as nested dict/list of plain values (Paths become strings, tuples lists); a missing
    (None) config is ``{}``, while None values inside it stay None (``attention_decoder: null``
    means "no such head", not an empty section)."""
    if config is None:
        return {}
    return _plain_value(config)


def _plain_value(config: Any) -> Any:
    if config is None:
        return None
    if isinstance(config, Mapping):
        return {str(k): _plain_value(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_plain_value(v) for v in config]
    if isinstance(config, os.PathLike):
        return os.fspath(config)
    if isinstance(config, bool) or config is None:
        return config
    for t in (int, float, str):
        if isinstance(config, t):
            return t(config)
    return str(config)


def _strip_module_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    grad_scaler: Any = None,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
    restore_rng: bool = False,
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``; restore what is passed in; return the dict.

    The sampler position (``ckpt["sampler"]``) is returned for the trainer to apply; the RNG state is
    restored only with ``restore_rng=True`` (the trainer restores it itself at the right moment).
    A truncated or corrupt file raises :class:`CorruptCheckpointError` naming it (:func:`read_checkpoint`).
    """
    ckpt = read_checkpoint(path, map_location=map_location)
    restore_checkpoint(
        ckpt,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        grad_scaler=grad_scaler,
        strict=strict,
        restore_rng=restore_rng,
    )
    return ckpt


def restore_checkpoint(
    ckpt: Mapping[str, Any],
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    grad_scaler: Any = None,
    strict: bool = True,
    restore_rng: bool = False,
) -> None:
    """Restore the objects passed in from an already loaded checkpoint dict (see :func:`load_checkpoint`)."""
    if model is not None:
        unwrap_model(model).load_state_dict(_strip_module_prefix(ckpt["model"]), strict=strict)
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if grad_scaler is not None and ckpt.get("grad_scaler"):
        grad_scaler.load_state_dict(ckpt["grad_scaler"])
    if restore_rng and ckpt.get("rng"):
        set_rng_state(ckpt["rng"])


def checkpoint_step(path: str | os.PathLike) -> int:
    """Training step stored in a checkpoint (read from the name for ``checkpoint-<step>.pt``, otherwise
    from the file, memory-mapped so the tensors are not read)."""
    path = Path(path)
    m = _PERIODIC.match(path.name)
    if m:
        return int(m.group(1))
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt.get("step", 0))


def list_checkpoints(exp_dir: str | os.PathLike, kind: str = "all") -> list[Path]:
    """Checkpoints in ``exp_dir`` of ``kind`` ``"periodic"`` (by step), ``"epoch"`` (by epoch) or ``"all"``
    (periodic then epoch files)."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        return []
    periodic, epochs = [], []
    for p in exp_dir.iterdir():
        if m := _PERIODIC.match(p.name):
            periodic.append((int(m.group(1)), p))
        elif m := _EPOCH.match(p.name):
            epochs.append((int(m.group(1)), p))
    out: list[Path] = []
    if kind in ("periodic", "all"):
        out += [p for _, p in sorted(periodic)]
    if kind in ("epoch", "all"):
        out += [p for _, p in sorted(epochs)]
    if kind not in ("periodic", "epoch", "all"):
        raise ValueError(f"kind must be periodic, epoch or all, not {kind!r}")
    return out


def find_latest(exp_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: the highest training step among ``checkpoint-*.pt`` and
    ``epoch-*.pt`` (an epoch file wins a tie: it is the later state). ``None`` if there is none."""
    best: tuple[int, int, Path] | None = None
    for p in list_checkpoints(exp_dir, "periodic"):
        key = (checkpoint_step(p), 0, p)
        best = key if best is None or key[:2] > best[:2] else best
    epoch_files = list_checkpoints(exp_dir, "epoch")
    if epoch_files:  # only the newest epoch file can matter
        p = epoch_files[-1]
        try:
            key = (checkpoint_step(p), 1, p)
            best = key if best is None or key[:2] > best[:2] else best
        except Exception as e:  # pragma: no cover - a truncated file cannot exist with atomic writes
            log.warning("cannot read %s: %s", p, e)
    return None if best is None else best[2]


def find_loadable_latest(
    exp_dir: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``exp_dir`` that reads and verifies, and its contents.

    Candidates are the ``checkpoint-*.pt`` and ``epoch-*.pt`` files, newest step first (an epoch file
    wins a tie, as in :func:`find_latest`). A file that is truncated or corrupt is named in a warning
    and skipped, so a run killed while the disk filled up resumes from its previous checkpoint.
    Returns ``None`` when there is no checkpoint; raises :class:`CorruptCheckpointError` when there are
    some but none of them reads."""
    candidates: list[tuple[int, int, Path]] = []
    bad: list[str] = []
    for p in list_checkpoints(exp_dir, "periodic"):
        candidates.append((checkpoint_step(p), 0, p))
    for p in list_checkpoints(exp_dir, "epoch"):
        try:
            candidates.append((checkpoint_step(p), 1, p))
        except Exception as e:  # an epoch file's step is read from the file
            log.warning("checkpoint %s cannot be read (%s: %s); skipping it", p, type(e).__name__, e)
            bad.append(p.name)
    for _, _, p in sorted(candidates, key=lambda c: c[:2], reverse=True):
        try:
            return p, read_checkpoint(p, map_location=map_location)
        except CorruptCheckpointError as e:
            log.warning("%s. Falling back to the previous checkpoint.", e)
            bad.append(p.name)
    if bad:
        raise CorruptCheckpointError(
            f"no checkpoint in {exp_dir} can be read ({', '.join(bad)} are truncated or corrupt); delete them "
            "to start afresh, or train in a new --exp-dir"
        )
    return None


_STALE_TMP = re.compile(r"^\..+\.pt\.[A-Za-z0-9_]+\.tmp$")


def clean_stale_temp_files(exp_dir: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.pt.<random>.tmp`` files that :func:`atomic_save` leaves when a process is
    killed during a save. Call it at start-up, before any save of this run. Returns the removed paths."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        return []
    removed = []
    for p in sorted(exp_dir.iterdir()):
        if _STALE_TMP.match(p.name) and p.is_file():
            log.warning("removing %s (%d bytes): left by an interrupted checkpoint save", p, p.stat().st_size)
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def remove_old_checkpoints(exp_dir: str | os.PathLike, keep_last: int = 5, keep_last_epochs: int = 0) -> list[Path]:
    """Delete all but the ``keep_last`` newest ``checkpoint-*.pt`` (``<= 0``: keep all) and all but the
    ``keep_last_epochs`` newest ``epoch-*.pt`` (``<= 0``: keep all). Returns the removed paths."""
    removed = []
    for kind, keep in (("periodic", keep_last), ("epoch", keep_last_epochs)):
        files = list_checkpoints(exp_dir, kind)
        if keep > 0 and len(files) > keep:
            for p in files[: len(files) - keep]:
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


# ----------------------------------------------------------------------------------------------- averaging
def average_checkpoints(paths: Sequence[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """Average the ``model`` state dicts of several checkpoints.

    Floating-point tensors (parameters and float buffers such as norm statistics) are averaged in
    float64 and cast back to their dtype; other tensors (integer buffers like ``num_batches_tracked``)
    are taken from the *last* checkpoint. All checkpoints must have the same keys and shapes.
    """
    paths = list(paths)
    if not paths:
        raise ValueError("average_checkpoints: no checkpoints given")
    acc: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    for i, p in enumerate(paths):
        sd = _strip_module_prefix(read_checkpoint(p)["model"])
        if i == 0:
            keys = list(sd)
        elif set(sd) != set(keys):
            raise ValueError(f"{p}: keys differ from {paths[0]}: {sorted(set(sd) ^ set(keys))[:5]} ...")
        for k, v in sd.items():
            if v.is_floating_point():
                if i == 0:
                    acc[k] = v.to(torch.float64).clone()
                else:
                    if v.shape != acc[k].shape:
                        raise ValueError(f"{p}: {k} has shape {tuple(v.shape)}, expected {tuple(acc[k].shape)}")
                    acc[k] += v.to(torch.float64)
        last = sd
    n = len(paths)
    return {k: (acc[k] / n).to(v.dtype) if k in acc else v for k, v in last.items()}


def averaged_state_dict(
    model_sd: Mapping[str, torch.Tensor], avg: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``model_sd`` with its floating-point entries replaced by ``avg`` (cast back to their dtype).

    ``avg`` must hold every floating-point key of ``model_sd`` (as a ``model_avg`` does); other
    entries (integer buffers) are kept from ``model_sd``.
    """
    model_sd = _strip_module_prefix(model_sd)
    avg = _strip_module_prefix(avg)
    missing = [k for k, v in model_sd.items() if v.is_floating_point() and k not in avg]
    if missing:
        raise ValueError(f"the averaged model lacks {len(missing)} entries of the model, e.g. {missing[:3]}")
    return {k: avg[k].to(v.dtype) if v.is_floating_point() else v for k, v in model_sd.items()}


def average_checkpoints_with_averaged_model(
    start: str | os.PathLike | None, end: str | os.PathLike
) -> dict[str, torch.Tensor]:
    """Average model between two checkpoints from their running averages (icefall's
    ``--use-averaged-model``).

    With ``model_avg`` written by a trainer with ``average_period`` N, the file at step ``s`` holds
    the mean of the models at steps N, 2N, ..., s, so the mean over the steps in ``(s_start, s_end]``
    is ``(avg_end · s_end - avg_start · s_start) / (s_end - s_start)`` (computed in float64; exact when
    both steps are multiples of N). ``start=None`` means "from the beginning of training" (the result
    is ``avg_end``). Returns the ``model`` state dict of ``end`` with its floating-point entries
    replaced by that average.
    """
    ck_end = read_checkpoint(end)
    if ck_end.get("model_avg") is None:
        raise ValueError(f"{end} has no model_avg: train with training.average_period > 0")
    s_end = int(ck_end["step"])
    avg_end = _strip_module_prefix(ck_end["model_avg"])
    if start is None:
        avg = {k: v.to(torch.float64) for k, v in avg_end.items()}
    else:
        ck_start = read_checkpoint(start)
        if ck_start.get("model_avg") is None:
            raise ValueError(f"{start} has no model_avg: train with training.average_period > 0")
        s_start = int(ck_start["step"])
        if s_end <= s_start:
            raise ValueError(f"{end} (step {s_end}) must come after {start} (step {s_start})")
        avg_start = _strip_module_prefix(ck_start["model_avg"])
        if set(avg_start) != set(avg_end):
            raise ValueError(f"{start} and {end} average different parameters")
        w_end = s_end / (s_end - s_start)
        w_start = -s_start / (s_end - s_start)
        avg = {k: v.to(torch.float64) * w_end + avg_start[k].to(torch.float64) * w_start for k, v in avg_end.items()}
    return averaged_state_dict(ck_end["model"], avg)
