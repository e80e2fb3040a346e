"""The training loop: AMP, clipping, bad-batch skipping, logging, validation, checkpoints, exact resume.

Usage::

    from asr_kd.training import Trainer, TrainerConfig, LossOutput

    def loss_fn(model, batch, step):            # batch: whatever the DataLoader yields (moved to device)
        losses = model(batch["x"], batch["x_lens"], batch["tokens"])   # dict of named losses
        return LossOutput(loss=combine(losses, step), parts=losses, num_frames=batch["x_lens"].sum())

    trainer = Trainer(model, optimizer, loss_fn, train_dl, scheduler=sched, valid_dl=valid_dl,
                      exp_dir="exp/conformer_ctc", cfg=TrainerConfig(max_steps=20000), config=full_cfg)
    trainer.resume()      # from the latest checkpoint in exp_dir, if any
    result = trainer.fit()

Step-start hooks. Before each training forward the trainer builds a :class:`TrainProgress`
(``step``, ``epoch``, ``audio_seconds``: audio of all earlier batches on all ranks, ``batch_duration``:
audio of this rank's batch) and calls ``on_step_start(progress)`` of the loss function (when it has
one) and of every callback (``Trainer(..., callbacks=[...])`` / :meth:`Trainer.add_callback`), then
``on_train_step_start(progress)`` of the model and every submodule that defines it (e.g. a Zipformer's
dropout and skip-rate schedules, keyed on ``audio_seconds`` so that small batches do not stretch
them). After the step (also a skipped one) ``on_step_end(progress)`` of the loss function and the
callbacks, where defined. Batch audio comes from ``batch_duration_fn`` (default
:func:`batch_audio_seconds`: ``feature_lens`` × 10 ms for :mod:`asr_kd.data.dataset` batches).

Model averaging (icefall's ``model_avg``; ``TrainerConfig.average_period`` N > 0): rank 0 keeps the
floating-point model state in float64 on CPU and after every N-th step s sets
``avg = avg · (1 - N/s) + model · N/s``, the mean of the models at steps N, 2N, ..., s. It is saved in
every checkpoint (key ``model_avg``) and restored on resume; ``asr_kd.bin.average
--use-averaged-model`` turns two such checkpoints into the average over the steps between them.

One step: forward under autocast (bf16/fp16 on CUDA; on CPU only bf16 and only when asked for), loss checked for NaN/inf
(**every rank skips together** if any rank's loss is bad: no backward, no optimiser step, counted and
logged with the cut ids; after ``max_consecutive_bad`` consecutive bad batches training stops with
:class:`TooManyBadBatchesError`), backward (through the fp16 ``GradScaler`` when used), gradient
clipping by global norm (a non-finite norm without fp16 scaling is also a bad batch), optimiser step,
scheduler step.

Exact resume. A checkpoint stores model, optimiser, scheduler, grad scaler, the data position
``{"epoch", "batches_consumed", "state"}``, the RNG states of every rank, ``audio_seconds`` (in
``meta``) and the model average. On resume:

* the data position is restored through the sampler's ``load_state_dict`` when it has one (lhotse
  samplers: the trainer rewrites the sampler's batch count to the number of batches the loop actually
  *consumed*, so batches prefetched by DataLoader workers are not lost), otherwise by calling
  ``set_epoch(epoch)`` and skipping ``batches_consumed`` batches of the new iterator;
* the RNG states are restored right after the epoch's DataLoader iterator is created (creating an
  iterator draws from the global torch RNG) and after any skipping.

Metrics and progress. Every log interval and every validation appends a row to
``<exp_dir>/metrics.jsonl`` (:mod:`asr_kd.training.metrics`; rows after the resumed step are dropped on
resume) and writes the same values to tensorboard (``train/*``, ``valid/*``). With ``valid_decoder``
(the train CLI builds one from ``training.valid_decode``, :class:`asr_kd.decoding.validation.ValidationDecoder`),
validation also decodes its batches and reports ``wer`` / ``cer``. The tqdm bar of :meth:`fit` (rank 0;
``progress_bar``, :func:`asr_kd.utils.progress.progress_enabled`) shows the loss (a running mean), the
learning rate, audio seconds per second and the ETA of whichever of ``max_steps`` / ``max_minutes`` ends
first; with ``max_minutes`` binding, the bar's total is the step count the budget is expected to reach.

With a deterministic dataset (randomness from the global RNG in the main process or seeded per cut)
and ``num_workers=0``, a run killed and resumed produces bitwise the same parameters as an
uninterrupted run (``tests/training/test_resume.py``). With ``num_workers > 0`` and the loaders of
:class:`asr_kd.data.AsrDataModule`, it is exact too (``tests/training/test_training_resume_workers.py``):
worker processes seed every batch from (seed, rank, epoch, batch index)
(:class:`asr_kd.data.datamodule.SeededDataLoader`), not from where the run started. A plain DataLoader
with workers re-seeds them on resume: its sampler position stays exact, its worker randomness does not.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.progress import progress_bar, progress_enabled
from . import ddp
from .checkpoint import (
    find_loadable_latest,
    get_rng_state,
    read_checkpoint,
    remove_old_checkpoints,
    restore_checkpoint,
    save_checkpoint,
    set_rng_state,
    unwrap_model,
)
from .metrics import METRICS_FILE, append_metrics, truncate_metrics
from .optim import clip_grad_norm

log = logging.getLogger(__name__)

__all__ = [
    "Trainer",
    "TrainerConfig",
    "TrainProgress",
    "LossOutput",
    "batch_audio_seconds",
    "TooManyBadBatchesError",
    "EmptyEpochError",
    "seed_everything",
    "move_to_device",
    "batch_cut_ids",
]


class TooManyBadBatchesError(RuntimeError):
    """Raised after ``max_consecutive_bad`` consecutive batches with a non-finite loss or gradient."""


class EmptyEpochError(RuntimeError):
    """Raised when a whole epoch yields no batch (e.g. a bucketing sampler too coarse for the corpus)."""


@dataclass
class LossOutput:
    """What a loss function returns to the trainer.

    ``loss``: 0-dim tensor to back-propagate (already combined and normalised, e.g. per frame).
    ``parts``: named values for logging (tensors or floats; e.g. the unscaled ``ctc``/``att`` losses).
    ``num_frames``: weight of this batch when averaging logged values over batches (e.g. the number
    of encoder frames or utterances); ``cut_ids``: ids of the batch's cuts, for bad-batch reports.
    """

    loss: torch.Tensor
    parts: Mapping[str, Any] = field(default_factory=dict)
    num_frames: float = 1.0
    cut_ids: list[str] | None = None


@dataclass
class TrainerConfig:
    """Loop settings (the ``training:`` section of an experiment config; unknown keys are ignored by
    :meth:`from_dict`).

    ``max_steps``/``max_epochs``/``max_minutes``: stop at whichever comes first (``None`` = no limit;
    ``max_minutes`` counts this process's wall clock). ``ckpt_interval``: steps between
    ``checkpoint-<step>.pt`` (0 = none); one is also written at every epoch end (``epoch-<e>.pt``) and
    when a limit stops training. ``valid_interval``: steps between validations (0 = only at epoch end).
    ``amp``: ``auto`` (bf16 on CUDA if supported, else off; off on CPU), ``bf16`` (CUDA, or CPU autocast:
    worth it where the CPU has avx512_bf16 / AMX, docs/RESULTS.md measures it), ``fp16`` (CUDA only), ``off``.
    ``average_period``: N > 0 keeps icefall's running model average, updated every N steps (icefall's
    default is 200); 0 = off. ``progress_bar``: ``null`` = on when stderr is a terminal (and not under
    ``CI`` / ``ASR_KD_PROGRESS=0``), ``false`` = off, ``true`` = on. ``valid_decode``: a decoding method
    (``ctc-greedy``, ``transducer-greedy``, ...) that validation runs to report WER / CER (``null`` = off;
    read by the train CLI, which builds the trainer's ``valid_decoder``).
    """

    max_steps: int | None = None
    max_epochs: int | None = 100
    max_minutes: float | None = None
    grad_clip: float | None = 5.0
    amp: str = "auto"
    log_interval: int = 50
    valid_interval: int = 1000
    ckpt_interval: int = 1000
    keep_last: int = 3
    keep_last_epochs: int = 0
    max_consecutive_bad: int = 20
    progress_bar: bool | None = None
    tensorboard: bool = True
    average_period: int = 0
    valid_decode: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TrainerConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(d or {}).items() if k in names})


@dataclass(frozen=True)
class TrainProgress:
    """Where training is when a step starts (given to ``on_step_start`` / ``on_train_step_start``).

    ``step``: batches processed before this one (the ``step`` the loss function gets; good and bad
    batches count). ``epoch``: 0-based data epoch. ``audio_seconds``: seconds of audio in all earlier
    batches, summed over ranks (saved in checkpoints, continued on resume). ``batch_duration``:
    seconds of audio in this rank's batch.
    """

    step: int
    epoch: int
    audio_seconds: float
    batch_duration: float


# ------------------------------------------------------------------------------------------------ helpers
def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Recursively move tensors in dicts/lists/tuples to ``device`` (other objects are left alone)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return (
            type(batch)((k, move_to_device(v, device)) for k, v in batch.items())
            if isinstance(batch, dict)
            else {k: move_to_device(v, device) for k, v in batch.items()}
        )
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def batch_cut_ids(batch: Any) -> list[str] | None:
    """Cut ids of a batch if it carries them: ``batch["cut_ids"]``, ``batch["supervisions"]["cut_id"]``
    (asr_kd's dataset), ``batch["cuts"]`` or lhotse's ``batch["supervisions"]["cut"]``."""
    if not isinstance(batch, Mapping):
        return None
    if "cut_ids" in batch:
        return [str(c) for c in batch["cut_ids"]]
    sup = batch.get("supervisions")
    if isinstance(sup, Mapping) and "cut_id" in sup:
        return [str(c) for c in sup["cut_id"]]
    cuts = batch.get("cuts")
    if cuts is None and isinstance(batch.get("supervisions"), Mapping):
        cuts = batch["supervisions"].get("cut")
    if cuts is not None:
        try:
            return [c.id for c in cuts]
        except AttributeError:
            return None
    return None


FRAME_SHIFT_SECONDS = 0.01  # asr_kd.data.features.FRAME_SHIFT


def batch_audio_seconds(batch: Any, frame_shift: float = FRAME_SHIFT_SECONDS) -> float:
    """Seconds of audio in a batch: ``feature_lens`` (N,) × ``frame_shift`` (asr_kd's dataset), else the
    durations of ``batch["cuts"]``, else lhotse's ``supervisions["num_frames"]`` × ``frame_shift``; 0.0
    for a batch that carries none of these."""
    if not isinstance(batch, Mapping):
        return 0.0
    lens = batch.get("feature_lens")
    if isinstance(lens, torch.Tensor):
        return float(lens.sum().item()) * frame_shift
    cuts = batch.get("cuts")
    if cuts is not None:
        try:
            return float(sum(c.duration for c in cuts))
        except (AttributeError, TypeError):
            pass
    sup = batch.get("supervisions")
    if isinstance(sup, Mapping) and isinstance(sup.get("num_frames"), torch.Tensor):
        return float(sup["num_frames"].sum().item()) * frame_shift
    return 0.0


def _as_loss_output(out: Any, batch: Any) -> LossOutput:
    if isinstance(out, LossOutput):
        res = out
    elif isinstance(out, torch.Tensor):
        res = LossOutput(loss=out)
    elif isinstance(out, (tuple, list)):
        res = LossOutput(*out)
    elif isinstance(out, Mapping):
        res = LossOutput(**out)
    else:
        raise TypeError(f"loss_fn returned {type(out).__name__}; expected LossOutput, a tensor or a tuple")
    if res.cut_ids is None:
        res.cut_ids = batch_cut_ids(batch)
    return res


def _to_float(v: Any) -> float:
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().sum().item()) if v.numel() > 1 else float(v.detach().float().item())
    return float(v)


def _lhotse_position_fix(state: dict, batches_consumed: int) -> dict:
    """Make a lhotse sampler state count only the batches the loop consumed (not those prefetched).

    lhotse's ``load_state_dict`` fast-forwards by re-iterating ``total_batches`` (= kept + discarded)
    batches of the current epoch; we set kept = consumed, discarded = 0.
    """
    diag = state.get("diagnostics")
    if not isinstance(diag, dict) or "stats_per_epoch" not in diag:
        return state
    cur = diag.get("current_epoch")
    stats = diag["stats_per_epoch"].get(cur)
    if isinstance(stats, dict) and "kept_batches" in stats:
        stats["kept_batches"] = int(batches_consumed)
        stats["discarded_batches"] = 0
    return state


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU has bf16 instructions (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``'s flags);
    ``None`` where that file does not exist (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    amp = (amp or "off").lower()
    if amp in ("off", "none", "false", "fp32", "no"):
        return None
    if amp not in ("auto", "bf16", "bfloat16", "fp16", "float16", "half"):
        raise ValueError(f"amp must be auto, bf16, fp16 or off, not {amp!r}")
    if device.type == "cpu":
        if amp in ("bf16", "bfloat16"):
            return torch.bfloat16  # CPU autocast: matmuls/convs in bf16, reductions and losses in fp32
        if amp == "auto":
            return None
        raise ValueError("amp: fp16 autocast needs CUDA; on CPU use amp=bf16 or amp=off")
    if device.type != "cuda":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    return torch.float16


# ------------------------------------------------------------------------------------------------ trainer
class Trainer:
    """Runs training steps over ``train_dl`` with ``loss_fn(model, batch, step)``.

    Args:
        model: the (possibly DDP-wrapped) model; checkpoints store the unwrapped module.
        optimizer, scheduler: scheduler may be ``None``; it is stepped after each optimiser update and
            gets ``set_epoch(epoch)`` at each epoch start if it has that method.
        loss_fn: ``(model, batch, step) -> LossOutput | Tensor | (loss, parts, ...) | None``; the batch
            has been moved to ``device`` with :func:`move_to_device`. ``None`` means "nothing to train
            on" (e.g. every cut of the batch was dropped): the batch is skipped without counting as bad.
        train_dl: an iterable of batches (typically a ``DataLoader``), re-iterated every epoch.
        sampler: the object that knows the data order (``set_epoch``, optionally ``state_dict`` /
            ``load_state_dict``). Default: ``train_dl.sampler`` if it has ``set_epoch``, else
            ``train_dl`` if it has ``set_epoch``, else none (then resume skips batches of a fresh iterator).
        valid_dl: optional iterable for the validation loss.
        exp_dir: where checkpoints and ``tensorboard/`` go (``None``: nothing is written).
        cfg: :class:`TrainerConfig`. config: the full experiment config, stored in every checkpoint.
        device: where batches go; default: the device of the model's first parameter.
        callbacks: objects with ``on_step_start(progress)`` and/or ``on_step_end(progress)`` (see the
            module docstring); more with :meth:`add_callback`.
        batch_duration_fn: ``batch -> seconds of audio`` (default :func:`batch_audio_seconds`).
        drop_stats: :class:`~asr_kd.data.stats.FilterStats` of drops made outside the batches (e.g. the
            train CLI's length / text :class:`~asr_kd.data.filters.CutFilter`); they join the counts
            of :meth:`dropped_cuts`.
        meta: extra entries of every checkpoint's ``meta`` (e.g. the train CLI stores the lang dir's
            ``tokens`` there, so that decoding can check a lang dir against the model).
        valid_decoder: ``(model, batch) -> [(cut_id, ref words, hyp words)]`` called on every
            validation batch, with ``.score(results) -> {"wer", "cer"}`` (e.g.
            :class:`asr_kd.decoding.validation.ValidationDecoder`); its values join the validation result.

    Dropped cuts. Batches may list cuts the dataset skipped (``batch["skipped"]``: ``[{"cut_id",
    "reason"}]``, :mod:`asr_kd.data.dataset`); the trainer counts each (cut id, reason) once per run,
    separately for training and validation batches, keeps the counts across resumes (checkpoint
    ``meta["skipped_cuts"]``), logs them, writes ``data/dropped_cuts`` and ``data/dropped/<reason>``
    to tensorboard and returns them from :meth:`fit` (``dropped_cuts``, ``num_dropped_cuts``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.nn.Module, Any, int], Any],
        train_dl: Iterable,
        *,
        scheduler: Any = None,
        sampler: Any = None,
        valid_dl: Iterable | None = None,
        exp_dir: str | Path | None = None,
        cfg: TrainerConfig | None = None,
        config: Mapping[str, Any] | None = None,
        device: torch.device | str | None = None,
        tb_writer: Any = None,
        callbacks: Iterable[Any] = (),
        batch_duration_fn: Callable[[Any], float] | None = None,
        drop_stats: Iterable[Any] = (),
        meta: Mapping[str, Any] | None = None,
        valid_decoder: Any = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loss_fn = loss_fn
        self.train_dl = train_dl
        self.valid_dl = valid_dl
        self.cfg = cfg or TrainerConfig()
        self.config = dict(config or {})
        self.exp_dir = Path(exp_dir) if exp_dir is not None else None
        if device is None:
            p = next(iter(model.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        if sampler is None:
            s = getattr(train_dl, "sampler", None)
            if s is not None and hasattr(s, "set_epoch"):
                sampler = s
            elif hasattr(train_dl, "set_epoch"):
                sampler = train_dl
        self.sampler = sampler
        self.rank = ddp.get_rank()
        self.world_size = ddp.get_world_size()
        self.is_main = self.rank == 0

        self.amp_dtype = _amp_dtype(self.cfg.amp, self.device)
        if self.amp_dtype == torch.bfloat16 and self.device.type == "cpu" and cpu_has_native_bf16() is False:
            log.warning(
                "amp=bf16 on a CPU without bf16 instructions (no avx512_bf16 / amx_bf16 in /proc/cpuinfo): "
                "autocast will be emulated and is likely slower than fp32; set training.amp=off"
            )
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda"
        )

        # progress
        self.step = 0  # training batches processed (good or bad)
        self.epoch = 0  # current 0-based data epoch
        self.batches_consumed = 0  # batches of the current epoch already processed
        self.num_bad_batches = 0
        self.consecutive_bad = 0
        self.train_seconds = 0.0  # cumulative over resumes
        self.last_valid: dict[str, float] | None = None
        self._pending_rng: dict | None = None
        self._pending_skip = 0
        self._restored_sampler = False
        self._log_acc: dict[str, float] = {}
        self._log_weight = 0.0
        self._last_grad_norm = float("nan")
        self._stop_requested: str | None = None
        self._last_step_seconds = 0.0
        self.audio_seconds = 0.0  # audio of all processed batches, all ranks (cumulative over resumes)
        self.callbacks: list[Any] = list(callbacks)
        self.batch_duration_fn = batch_duration_fn or batch_audio_seconds
        self._hooks: tuple[list, list] | None = None
        self.drop_stats = list(drop_stats)
        self.extra_meta = dict(meta or {})
        self.valid_decoder = valid_decoder
        self.metrics_path = self.exp_dir / METRICS_FILE if self.exp_dir is not None and self.is_main else None
        # (cut id, reason) pairs skipped inside batches, per split ("train", "valid"): each counted once
        self.skipped_cuts: dict[str, dict[tuple[str, str], None]] = {"train": {}, "valid": {}}
        if self.cfg.average_period < 0:
            raise ValueError(f"average_period must be >= 0, got {self.cfg.average_period}")
        # icefall's model_avg: rank 0 only, float64 on CPU, starting from the initial weights
        self.model_avg: dict[str, torch.Tensor] | None = (
            self._model_float64_copy() if self.cfg.average_period > 0 and self.is_main else None
        )

        self.tb = tb_writer
        if self.tb is None and self.cfg.tensorboard and self.exp_dir is not None and self.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(self.exp_dir / "tensorboard"))
            except Exception as e:  # pragma: no cover - tensorboard is a dependency
                log.warning("tensorboard unavailable: %s", e)

    # ---------------------------------------------------------------------------------------- hooks
    def add_callback(self, callback: Any) -> None:
        """Register an object with ``on_step_start(progress)`` and/or ``on_step_end(progress)``."""
        self.callbacks.append(callback)
        self._hooks = None

    def _step_hooks(self) -> tuple[list, list]:
        """(start hooks, end hooks): the loss function's (looked up every step: it may be replaced),
        the callbacks' and the modules' (cached; :meth:`fit` and :meth:`add_callback` refresh them)."""
        if self._hooks is None:
            starts, ends = [], []
            for cb in self.callbacks:
                for name, out in (("on_step_start", starts), ("on_step_end", ends)):
                    fn = getattr(cb, name, None)
                    if callable(fn):
                        out.append(fn)
            for m in unwrap_model(self.model).modules():
                fn = getattr(m, "on_train_step_start", None)
                if callable(fn):
                    starts.append(fn)
            self._hooks = (starts, ends)
        starts, ends = self._hooks
        own_start = getattr(self.loss_fn, "on_step_start", None)
        own_end = getattr(self.loss_fn, "on_step_end", None)
        return ([own_start] if callable(own_start) else []) + starts, ([own_end] if callable(own_end) else []) + ends

    # ---------------------------------------------------------------------------------------- averaging
    def _model_float64_copy(self) -> dict[str, torch.Tensor]:
        return {
            k: v.detach().to("cpu", torch.float64, copy=True)
            for k, v in unwrap_model(self.model).state_dict().items()
            if v.is_floating_point()
        }

    def update_model_avg(self) -> None:
        """icefall's update after step ``s`` (a multiple of N): ``avg = avg·(1 - N/s) + model·N/s``."""
        if self.model_avg is None or self.step <= 0:
            return
        w_cur = self.cfg.average_period / self.step
        w_avg = 1.0 - w_cur
        cur = unwrap_model(self.model).state_dict()
        for k, a in self.model_avg.items():
            a.mul_(w_avg).add_(cur[k].detach().to("cpu", torch.float64), alpha=w_cur)

    # ---------------------------------------------------------------------------------------- state
    def sampler_position(self) -> dict[str, Any]:
        """The data position stored in checkpoints: ``{"epoch", "batches_consumed", "state"}``."""
        state = None
        if self.sampler is not None and hasattr(self.sampler, "state_dict") and self.batches_consumed > 0:
            try:
                state = _lhotse_position_fix(self.sampler.state_dict(), self.batches_consumed)
            except Exception as e:  # e.g. lhotse samplers with a custom constraint
                log.warning("sampler.state_dict() failed (%s); resume will skip batches instead", e)
                state = None
        return {"epoch": self.epoch, "batches_consumed": self.batches_consumed, "state": state}

    def save(self, path: str | Path) -> Path | None:
        """Write a checkpoint (collective under DDP: every rank must call it; rank 0 writes)."""
        rng = get_rng_state()
        per_rank = ddp.all_gather_object(rng) if self.world_size > 1 else None
        out = None
        if self.is_main:
            if per_rank is not None:
                rng = dict(rng, per_rank=per_rank)
            meta = {
                "train_seconds": self.train_seconds,
                "num_bad_batches": self.num_bad_batches,
                "world_size": self.world_size,
                "last_valid": dict(self.last_valid or {}),
                "audio_seconds": float(self.audio_seconds),
                "skipped_cuts": {k: [list(p) for p in v] for k, v in self.skipped_cuts.items()},
                **self.extra_meta,
            }
            out = save_checkpoint(
                path,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                sampler=self.sampler_position(),
                grad_scaler=self.scaler,
                step=self.step,
                epoch=self.epoch,
                config=self.config,
                meta=meta,
                rng=rng,
                model_avg=self.model_avg,
            )
            log.info("saved checkpoint %s (step %d, epoch %d)", out, self.step, self.epoch)
        ddp.barrier()
        return out

    def resume(self, path: str | Path | None = None, ckpt: Mapping[str, Any] | None = None) -> bool:
        """Restore from ``path`` or, when ``None``, from the newest readable checkpoint in ``exp_dir``
        (a truncated or corrupt newer one is named in a warning and skipped, see
        :func:`~asr_kd.training.checkpoint.find_loadable_latest`). ``ckpt``: the contents of ``path``
        when the caller has already read it. Returns ``False`` when there is nothing to resume from."""
        if path is None:
            if self.exp_dir is None:
                return False
            found = find_loadable_latest(self.exp_dir)
            if found is None:
                return False
            path, ckpt = found
        if ckpt is None:
            ckpt = read_checkpoint(path, map_location="cpu")
        restore_checkpoint(
            ckpt,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            grad_scaler=self.scaler,
        )
        self.step = int(ckpt["step"])
        self.epoch = int(ckpt["epoch"])
        meta = ckpt.get("meta") or {}
        self.train_seconds = float(meta.get("train_seconds", 0.0))
        self.num_bad_batches = int(meta.get("num_bad_batches", 0))
        self.last_valid = meta.get("last_valid") or None
        self.audio_seconds = float(meta.get("audio_seconds", 0.0))
        for split, pairs in (meta.get("skipped_cuts") or {}).items():
            self.skipped_cuts.setdefault(split, {}).update({(str(c), str(r)): None for c, r in pairs})
        if self.model_avg is not None:
            avg = ckpt.get("model_avg")
            if avg:
                avg = {
                    k[len("module.") :] if k.startswith("module.") else k: v.to(torch.float64) for k, v in avg.items()
                }
                if set(avg) != set(self.model_avg):
                    raise ValueError(
                        f"{path}: model_avg has entries {sorted(set(avg) ^ set(self.model_avg))[:5]} "
                        "that differ from the model's"
                    )
                self.model_avg = avg
            else:
                log.warning("%s has no model_avg: the model average starts from the resumed weights", path)
                self.model_avg = self._model_float64_copy()
        pos = ckpt.get("sampler") or {"epoch": self.epoch, "batches_consumed": 0, "state": None}
        self.batches_consumed = int(pos.get("batches_consumed", 0))
        self._restored_sampler = False
        self._pending_skip = 0
        if self.batches_consumed > 0:
            state = pos.get("state")
            if state is not None and self.sampler is not None and hasattr(self.sampler, "load_state_dict"):
                self.sampler.load_state_dict(dict(state))
                self._restored_sampler = True
            else:
                self._pending_skip = self.batches_consumed
        rng = ckpt.get("rng")
        if rng:
            per_rank = rng.get("per_rank")
            if per_rank is not None and len(per_rank) == self.world_size:
                rng = per_rank[self.rank]
            elif per_rank is not None:
                log.warning(
                    "checkpoint has RNG states of %d ranks, running with %d: reusing rank 0's",
                    len(per_rank),
                    self.world_size,
                )
            self._pending_rng = {k: v for k, v in rng.items() if k != "per_rank"}
        if self.metrics_path is not None:
            n = truncate_metrics(self.metrics_path, self.step)  # rows of steps this run will redo
            if n:
                log.info("resume: dropped %d rows after step %d from %s", n, self.step, self.metrics_path)
        log.info(
            "resumed from %s: step %d, epoch %d, %d batches into the epoch",
            path,
            self.step,
            self.epoch,
            self.batches_consumed,
        )
        return True

    # ---------------------------------------------------------------------------------------- steps
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _params(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def train_step(self, batch: Any) -> dict[str, float] | None:
        """One optimiser step on ``batch``. Returns logged values, or ``None`` for a skipped bad batch.

        Calls the step-start hooks first and the step-end hooks last (see the module docstring) and
        adds the batch's audio (summed over ranks) to :attr:`audio_seconds`."""
        self.model.train()
        self._count_skipped(batch, "train")
        duration = float(self.batch_duration_fn(batch))
        progress = TrainProgress(
            step=self.step, epoch=self.epoch, audio_seconds=self.audio_seconds, batch_duration=duration
        )
        batch = move_to_device(batch, self.device)
        starts, ends = self._step_hooks()
        for fn in starts:
            fn(progress)
        try:
            return self._train_step(batch, duration)
        finally:
            for fn in ends:
                fn(progress)

    def _agree(self, status: int, duration: float) -> tuple[int, float]:
        """(largest status over ranks, batch audio summed over ranks) in one all-reduce."""
        if not ddp.is_distributed():
            return status, duration
        t = torch.tensor(
            [float(status == 2), float(status == 1), duration],
            dtype=torch.float64,
            device=self.device if self.device.type == "cuda" else "cpu",
        )
        ddp.all_reduce_sum(t)
        bad, empty, total = t.tolist()
        return (2 if bad > 0 else 1 if empty > 0 else 0), total

    def _train_step(self, batch: Any, duration: float) -> dict[str, float] | None:
        with self._autocast():
            raw = self.loss_fn(self.model, batch, self.step)
        out = None if raw is None else _as_loss_output(raw, batch)
        # status: 0 ok, 1 nothing to train on (loss_fn returned None, e.g. every cut skipped), 2 bad
        if out is None:
            status = 1
        else:
            status = 0 if bool(torch.isfinite(out.loss.detach()).all()) else 2
        agreed, total_duration = self._agree(status, duration)
        self.audio_seconds += total_duration
        if agreed > 0:
            # every rank skips together (no backward anywhere, so DDP's gradient all-reduce is not entered)
            self.optimizer.zero_grad(set_to_none=True)
            if agreed == 2:
                reason = "non-finite loss" if status == 2 else "non-finite loss on another rank"
                loss_value = _to_float(out.loss) if out is not None and out.loss.numel() == 1 else float("nan")
                self._bad_batch(reason, out.cut_ids if out is not None else None, loss_value)
            else:
                log.debug("step %d: empty batch skipped", self.step + 1)
            return None
        loss = out.loss

        self.scaler.scale(loss).backward()
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        grad_norm = clip_grad_norm(self._params(), self.cfg.grad_clip)
        gn = float(grad_norm)
        if not math.isfinite(gn):
            if self.scaler.is_enabled():
                # fp16: the scaler skips the update and lowers the scale; that is its normal job.
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                return None
            self.optimizer.zero_grad(set_to_none=True)
            self._bad_batch("non-finite gradient norm", out.cut_ids, _to_float(loss))
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        self.consecutive_bad = 0
        self._last_grad_norm = gn
        stats = {"loss": _to_float(loss), "grad_norm": gn}
        for k, v in out.parts.items():
            try:
                stats[k] = _to_float(v)
            except (TypeError, ValueError, RuntimeError):
                pass
        w = _to_float(out.num_frames) if out.num_frames is not None else 1.0
        for k, v in stats.items():
            if k != "grad_norm":
                self._log_acc[k] = self._log_acc.get(k, 0.0) + v * w
        self._log_weight += w
        return stats

    def _count_skipped(self, batch: Any, split: str) -> None:
        """Remember the cuts the dataset dropped from ``batch`` (``batch["skipped"]``), once per cut."""
        skipped = batch.get("skipped") if isinstance(batch, Mapping) else None
        seen = self.skipped_cuts.setdefault(split, {})
        for item in skipped or ():
            seen.setdefault((str(item["cut_id"]), str(item["reason"])), None)

    def dropped_cuts(self, gather: bool = False) -> dict[str, dict[str, int]]:
        """Cuts dropped so far, by source and reason, e.g. ``{"train filters": {"too_long": 2},
        "train batches": {"corrupt_audio": 1}, "valid batches": {"missing_audio": 1}}`` (sources
        without drops are left out). ``gather=True`` (collective under DDP) merges the batch drops of
        every rank; filter counts are taken from this rank (every rank filters the same cuts)."""
        out: dict[str, dict[str, int]] = {}
        for stats in self.drop_stats:
            if stats.dropped:
                out[stats.name] = dict(sorted(stats.dropped.items()))
        for split, seen in self.skipped_cuts.items():
            pairs = set(seen)
            if gather and ddp.is_distributed():
                pairs = set().union(*(set(p) for p in ddp.all_gather_object(sorted(pairs))))
            counts: dict[str, int] = {}
            for _, reason in pairs:
                counts[reason] = counts.get(reason, 0) + 1
            if counts:
                out[f"{split} batches"] = dict(sorted(counts.items()))
        return out

    def _log_dropped(self, dropped: Mapping[str, Mapping[str, int]]) -> None:
        """Dropped-cut counts to tensorboard: ``data/dropped_cuts`` and ``data/dropped/<reason>``."""
        if self.tb is None:
            return
        totals: dict[str, int] = {}
        for counts in dropped.values():
            for reason, n in counts.items():
                totals[reason] = totals.get(reason, 0) + n
        self.tb.add_scalar("data/dropped_cuts", sum(totals.values()), self.step)
        for reason, n in totals.items():
            self.tb.add_scalar(f"data/dropped/{reason}", n, self.step)

    def _bad_batch(self, reason: str, cut_ids: list[str] | None, loss_value: float) -> None:
        """Count and report a skipped batch. It is numbered as the loss lines number steps: the
        step that processes the ``k``-th batch is step ``k`` (``self.step`` is incremented after it)."""
        self.num_bad_batches += 1
        self.consecutive_bad += 1
        step = self.step + 1
        ids = ", ".join(cut_ids[:20]) + (" ..." if len(cut_ids) > 20 else "") if cut_ids else "unknown"
        log.warning(
            "step %d: skipping batch (%s, loss=%s); %d bad so far, %d in a row; cuts: %s",
            step,
            reason,
            loss_value,
            self.num_bad_batches,
            self.consecutive_bad,
            ids,
        )
        if self.tb is not None:
            self.tb.add_scalar("train/bad_batches", self.num_bad_batches, step)
        if self.consecutive_bad >= self.cfg.max_consecutive_bad:
            raise TooManyBadBatchesError(
                f"{self.consecutive_bad} consecutive batches had a {reason} (limit max_consecutive_bad="
                f"{self.cfg.max_consecutive_bad}) at step {step}; last cuts: {ids}. Lower the learning "
                "rate, check the data (empty transcripts, too-short cuts for CTC) or disable fp16."
            )

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Frame-weighted average of the loss and its parts over ``valid_dl`` (summed over ranks)."""
        if self.valid_dl is None:
            return None
        was_training = self.model.training
        rng = get_rng_state()  # validation must not move the training RNG streams (exact resume)
        self.model.eval()
        sums: dict[str, float] = {}
        weight = 0.0
        decoded: list = []
        for batch in self.valid_dl:
            self._count_skipped(batch, "valid")
            batch = move_to_device(batch, self.device)
            with self._autocast():
                raw = self.loss_fn(self.model, batch, self.step)
            if raw is None:  # nothing to score (e.g. every cut of the batch was skipped)
                continue
            out = _as_loss_output(raw, batch)
            if not bool(torch.isfinite(out.loss.detach()).all()):
                log.warning("validation: non-finite loss on cuts %s", out.cut_ids)
                continue
            w = _to_float(out.num_frames) if out.num_frames is not None else 1.0
            vals = {"loss": _to_float(out.loss)}
            for k, v in out.parts.items():
                try:
                    vals[k] = _to_float(v)
                except (TypeError, ValueError, RuntimeError):
                    pass
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v * w
            weight += w
            if self.valid_decoder is not None:
                with self._autocast():
                    decoded.extend(self.valid_decoder(self.model, batch))
        keys = sorted(sums)
        if ddp.is_distributed():
            names = ddp.all_gather_object(keys)
            keys = sorted(set().union(*names))
            t = torch.tensor(
                [sums.get(k, 0.0) for k in keys] + [weight],
                dtype=torch.float64,
                device=self.device if self.device.type == "cuda" else "cpu",
            )
            ddp.all_reduce_sum(t)
            sums = dict(zip(keys, t[:-1].tolist()))
            weight = float(t[-1])
            if self.valid_decoder is not None:
                decoded = [r for part in ddp.all_gather_object(decoded) for r in part]
        self.model.train(was_training)
        set_rng_state(rng)
        if weight <= 0:
            return None
        res = {k: v / weight for k, v in sums.items()}
        if self.valid_decoder is not None:
            res.update(self.valid_decoder.score(decoded))
        self.last_valid = res
        log.info("step %d: validation %s", self.step, _fmt(res))
        if self.tb is not None:
            for k, v in res.items():
                self.tb.add_scalar(f"valid/{k}", v, self.step)
        self._append_metrics("valid", res)
        return res

    def _append_metrics(self, kind: str, values: Mapping[str, float], **extra: float) -> None:
        """One row of ``metrics.jsonl`` (rank 0, with an exp dir)."""
        if self.metrics_path is None:
            return
        row = {
            "kind": kind,
            "step": self.step,
            "epoch": self.epoch,
            "train_seconds": round(self.train_seconds, 3),
            "audio_seconds": round(self.audio_seconds, 3),
            "lr": self.optimizer.param_groups[0]["lr"],
            **values,
            **extra,
        }
        append_metrics(self.metrics_path, row)

    def _log_train(self) -> None:
        if self._log_weight <= 0:
            return
        vals = {k: v / self._log_weight for k, v in self._log_acc.items()}
        lr = self.optimizer.param_groups[0]["lr"]
        log.info(
            "epoch %d step %d: %s lr=%.3g grad_norm=%.3g bad=%d",
            self.epoch,
            self.step,
            _fmt(vals),
            lr,
            self._last_grad_norm,
            self.num_bad_batches,
        )
        if self.tb is not None:
            for k, v in vals.items():
                self.tb.add_scalar(f"train/{k}", v, self.step)
            self.tb.add_scalar("train/lr", lr, self.step)
            self.tb.add_scalar("train/grad_norm", self._last_grad_norm, self.step)
            if self.scaler.is_enabled():
                self.tb.add_scalar("train/grad_scale", self.scaler.get_scale(), self.step)
            self._log_dropped(self.dropped_cuts())
        self._append_metrics("train", vals, grad_norm=self._last_grad_norm)
        self._log_acc, self._log_weight = {}, 0.0

    # ---------------------------------------------------------------------------------------- loop
    def _start_epoch_iterator(self):
        if not self._restored_sampler:
            if self.sampler is not None:
                if hasattr(self.sampler, "allow_iter_to_reset_state"):
                    self.sampler.allow_iter_to_reset_state()
                self.sampler.set_epoch(self.epoch)
        if self.scheduler is not None and hasattr(self.scheduler, "set_epoch"):
            self.scheduler.set_epoch(self.epoch)
        it = iter(self.train_dl)
        self._restored_sampler = False
        skip, self._pending_skip = self._pending_skip, 0
        for i in range(skip):
            try:
                next(it)
            except StopIteration:
                log.warning("resume: epoch %d has only %d batches, expected to skip %d", self.epoch, i, skip)
                break
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        return it

    def _limit_reached(self, t0: float) -> str | None:
        c = self.cfg
        reason = self._stop_requested
        if reason is not None:
            pass
        elif c.max_steps is not None and self.step >= c.max_steps:
            reason = "max_steps"
        elif c.max_minutes is not None and (
            time.monotonic() - t0 + self._last_step_seconds >= c.max_minutes * 60.0
        ):  # stop when the next step would likely end past the budget
            reason = "max_minutes"
        if ddp.is_distributed():  # the wall clock may differ between ranks: agree
            flag = ddp.any_true(reason is not None, device=self.device if self.device.type == "cuda" else "cpu")
            if flag and reason is None:
                reason = "stop requested on another rank"
        return reason

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask :meth:`fit` to stop after the current step and write a checkpoint (signal-handler safe)."""
        self._stop_requested = reason

    def _checkpoint_path(self, kind: str) -> Path:
        assert self.exp_dir is not None
        if kind == "epoch":
            return self.exp_dir / f"epoch-{self.epoch}.pt"  # saved after incrementing: 1-based count
        return self.exp_dir / f"checkpoint-{self.step}.pt"

    def _save_and_cleanup(self, kind: str) -> None:
        if self.exp_dir is None:
            return
        self.save(self._checkpoint_path(kind))
        if self.is_main:
            remove_old_checkpoints(self.exp_dir, self.cfg.keep_last, self.cfg.keep_last_epochs)

    def fit(self, start_time: float | None = None) -> dict[str, Any]:
        """Train until ``max_steps`` / ``max_epochs`` / ``max_minutes``; returns a summary dict with
        ``step``, ``epoch``, ``stopped_because``, ``num_bad_batches``, ``last_valid``, ``train_seconds``,
        ``audio_seconds``, ``num_dropped_cuts`` and ``dropped_cuts`` (:meth:`dropped_cuts`).

        ``start_time``: ``time.monotonic()`` value the ``max_minutes`` budget counts from (default: now;
        the train CLI passes its own start so that set-up time counts too)."""
        c = self.cfg
        t0 = time.monotonic() if start_time is None else float(start_time)
        t_last = time.monotonic()
        bar = _TrainBar(self, t0, enabled=self.is_main and progress_enabled(c.progress_bar))
        if self.tb is not None and self.exp_dir is not None:
            msg = f"tensorboard: tensorboard --logdir {self.exp_dir / 'tensorboard'}"
            log.info("%s", msg)
            if bar.enabled:  # the console shows warnings only: say it there too
                bar.bar.write(msg, file=sys.stderr)
        stopped = self._limit_reached(t0)
        saved_now = valid_due = False
        self._hooks = None  # modules may have been added since the trainer was built
        try:
            while stopped is None and (c.max_epochs is None or self.epoch < c.max_epochs):
                it = self._start_epoch_iterator()
                batches_before = self.batches_consumed
                for batch in it:
                    stats = self.train_step(batch)
                    self.step += 1
                    self.batches_consumed += 1
                    if self.model_avg is not None and self.step % c.average_period == 0:
                        self.update_model_avg()
                    now = time.monotonic()
                    self.train_seconds += now - t_last
                    self._last_step_seconds = now - t_last
                    t_last = now
                    bar.update(stats)
                    if c.log_interval > 0 and self.step % c.log_interval == 0 and self.is_main:
                        self._log_train()
                    stopped = self._limit_reached(t0)
                    valid_due = c.valid_interval > 0 and self.step % c.valid_interval == 0
                    ckpt_due = c.ckpt_interval > 0 and self.step % c.ckpt_interval == 0
                    # the step's checkpoint before validating: a failing validation (e.g. a bad dev
                    # cut with data.on_error=raise) must not cost the steps since the last one
                    saved_now = (ckpt_due or (stopped is not None and valid_due)) and self.exp_dir is not None
                    if saved_now:
                        self._save_and_cleanup("periodic")
                    if valid_due:
                        self.validate()
                    if stopped is not None:
                        break
                if stopped is not None:
                    break
                if self.batches_consumed == 0 and batches_before == 0:
                    raise EmptyEpochError(self._empty_epoch_message())
                # epoch finished
                if self.is_main:
                    self._log_train()
                self.epoch += 1
                self.batches_consumed = 0
                self._save_and_cleanup("epoch")  # before validating (see above)
                if self.valid_dl is not None:
                    self.validate()
            if stopped is None:
                stopped = "max_epochs"
            elif self.exp_dir is not None and self.batches_consumed > 0 and not (saved_now and not valid_due):
                self._save_and_cleanup("periodic")  # (again after a validation: with its result in meta)
        finally:
            bar.close()
            if self.tb is not None:
                self.tb.flush()
        dropped = self.dropped_cuts(gather=True)
        num_dropped = sum(n for counts in dropped.values() for n in counts.values())
        log.info(
            "training stopped (%s) at step %d, epoch %d; %d bad batches skipped; %d cuts dropped%s",
            stopped,
            self.step,
            self.epoch,
            self.num_bad_batches,
            num_dropped,
            f" ({format_dropped(dropped)})" if dropped else "",
        )
        if self.is_main:
            self._log_dropped(dropped)
            if self.tb is not None:
                self.tb.flush()
        return {
            "step": self.step,
            "epoch": self.epoch,
            "stopped_because": stopped,
            "num_bad_batches": self.num_bad_batches,
            "last_valid": self.last_valid,
            "train_seconds": self.train_seconds,
            "audio_seconds": self.audio_seconds,
            "num_dropped_cuts": num_dropped,
            "dropped_cuts": dropped,
        }

    def _empty_epoch_message(self) -> str:
        """Why epoch ``self.epoch`` yielded no batch: the sampler settings and the corpus size."""
        sampler = self.sampler
        settings = []
        for name in ("max_duration", "max_cuts", "num_buckets", "drop_last", "world_size"):
            v = getattr(sampler, name, None)
            if name == "num_buckets" and v is None and getattr(sampler, "duration_bins", None) is not None:
                v = len(sampler.duration_bins) + 1  # lhotse keeps the estimated bins, not their count
            if v is not None:
                settings.append(f"{name}={v}")
        corpus = ""
        cuts = getattr(sampler, "cuts", None)
        if cuts is not None:
            try:
                cut_list = list(cuts[0] if isinstance(cuts, (list, tuple)) else cuts)
                corpus = f" over a corpus of {len(cut_list)} cuts ({sum(c.duration for c in cut_list):.1f} s of audio)"
            except Exception:  # noqa: BLE001 - a sampler without a re-iterable cut set
                corpus = ""
        what = type(sampler).__name__ if sampler is not None else type(self.train_dl).__name__
        return (
            f"epoch {self.epoch} produced no training batch: {what}({', '.join(settings) or '?'}){corpus}. "
            "Every epoch would be empty, so training stops here. With drop_last each duration bucket must "
            "fill max_duration seconds at least once: lower data.num_buckets or data.max_duration, set "
            "data.drop_last=false, or use more training cuts (check the length filters too)"
        )

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class _TrainBar:
    """The bar of :meth:`Trainer.fit`: steps done of the steps expected (``max_steps``, or what
    ``max_minutes`` is expected to reach at the rate of this run), ETA, running loss, lr, audio s/s."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, trainer: Trainer, t0: float, enabled: bool):
        c = trainer.cfg
        self.trainer, self.t0, self.enabled = trainer, t0, enabled
        limited = c.max_steps is not None or c.max_minutes is not None
        total = c.max_steps if c.max_steps is not None else (trainer.step + 1 if limited else None)
        self.bar = progress_bar(
            total=total,
            initial=trainer.step,
            desc="train",
            unit="step",
            leave=False,
            enabled=enabled,
            bar_format=self.FORMAT if limited else None,
        )
        self.t_start, self.step0, self.audio0 = time.monotonic(), trainer.step, trainer.audio_seconds
        self.loss: float | None = None

    def eta(self, now: float) -> float | None:
        """Seconds until the first of ``max_steps`` / ``max_minutes`` (None: neither is set)."""
        tr, c = self.trainer, self.trainer.cfg
        steps = tr.step - self.step0
        etas = []
        if c.max_steps is not None and steps > 0:
            etas.append(max(0, c.max_steps - tr.step) * (now - self.t_start) / steps)
        if c.max_minutes is not None:
            etas.append(max(0.0, c.max_minutes * 60.0 - (now - self.t0)))
        return min(etas) if etas else None

    def update(self, stats: Mapping[str, float] | None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        tr = self.trainer
        if stats is not None and math.isfinite(stats["loss"]):
            self.loss = stats["loss"] if self.loss is None else 0.9 * self.loss + 0.1 * stats["loss"]
        now = time.monotonic()
        elapsed, steps = max(now - self.t_start, 1e-9), tr.step - self.step0
        parts = []
        eta = self.eta(now)
        if eta is not None:
            if steps > 0:
                self.bar.total = tr.step + int(round(eta * steps / elapsed))
            parts.append(f"eta {tqdm.format_interval(eta)}")
        if self.loss is not None:
            parts.append(f"loss={self.loss:.3f}")
        parts.append(f"lr={tr.optimizer.param_groups[0]['lr']:.2e}")
        parts.append(f"{(tr.audio_seconds - self.audio0) / elapsed:.1f} audio-s/s")
        parts.append(f"epoch {tr.epoch}")
        self.bar.set_postfix_str(", ".join(parts), refresh=False)
        self.bar.update(1)
        if steps == 1:  # tqdm redraws at most every 0.1 s: the first step's numbers are drawn now, however fast it was
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def format_dropped(dropped: Mapping[str, Mapping[str, int]]) -> str:
    """``{"train filters": {"too_long": 2}}`` -> ``"train filters: too_long=2"`` (sources joined by ``; ``)."""
    return "; ".join(
        f"{source}: " + ", ".join(f"{reason}={n}" for reason, n in counts.items()) for source, counts in dropped.items()
    )


def _fmt(d: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in d.items())
