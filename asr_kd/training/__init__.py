"""Training infrastructure: optimiser and schedules, atomic checkpoints with exact resume, the loop, DDP.

- :mod:`asr_kd.training.optim`      ``build_optimizer``, ``build_scheduler`` (noam, cosine, eden, constant),
  ``clip_grad_norm``
- :mod:`asr_kd.training.checkpoint` ``save_checkpoint``, ``load_checkpoint``, ``find_latest``,
  ``remove_old_checkpoints``, ``average_checkpoints``, ``get_rng_state``/``set_rng_state``
- :mod:`asr_kd.training.trainer`    ``Trainer``, ``TrainerConfig``, ``LossOutput``, ``seed_everything``
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
from .optim import build_optimizer, build_scheduler, clip_grad_norm
from .trainer import LossOutput, TooManyBadBatchesError, Trainer, TrainerConfig, move_to_device, seed_everything

__all__ = [
    "Trainer",
    "TrainerConfig",
    "LossOutput",
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
