"""Training infrastructure: optimiser and schedules, atomic checkpoints with exact resume, the loop, DDP.

- :mod:`asr_kd.training.optim`      ``build_optimizer``, ``build_scheduler`` (noam, cosine, eden, constant),
  ``clip_grad_norm``, ``ScaledAdam`` (icefall's optimiser, with median-norm clipping)
- :mod:`asr_kd.training.checkpoint` ``save_checkpoint``, ``load_checkpoint``, ``find_latest``,
  ``remove_old_checkpoints``, ``average_checkpoints``, ``get_rng_state``/``set_rng_state``
- :mod:`asr_kd.training.trainer`    ``Trainer``, ``TrainerConfig``, ``TrainProgress`` (step-start hooks),
  ``LossOutput``, ``seed_everything``; model averaging (``average_period``)
- :mod:`asr_kd.training.asr_task`   ``AsrLossFn``, ``ChunkConfig`` (``training.chunk``), ``load_asr_model``
- :mod:`asr_kd.training.ddp`        ``setup_distributed``, ``wrap_model``, rank helpers, ``cleanup``
"""

from .checkpoint import (
    average_checkpoints,
    find_latest,
    get_rng_state,
    load_checkpoint,
    remove_old_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from .optim import ScaledAdam, build_optimizer, build_scheduler, clip_grad_norm
from .trainer import (
    LossOutput,
    TooManyBadBatchesError,
    Trainer,
    TrainerConfig,
    TrainProgress,
    batch_audio_seconds,
    move_to_device,
    seed_everything,
)

__all__ = [
    "Trainer",
    "TrainerConfig",
    "TrainProgress",
    "LossOutput",
    "ScaledAdam",
    "batch_audio_seconds",
    "TooManyBadBatchesError",
    "build_optimizer",
    "build_scheduler",
    "clip_grad_norm",
    "save_checkpoint",
    "load_checkpoint",
    "find_latest",
    "remove_old_checkpoints",
    "average_checkpoints",
    "get_rng_state",
    "set_rng_state",
    "seed_everything",
    "move_to_device",
]
