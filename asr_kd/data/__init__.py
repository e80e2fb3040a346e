"""Data: Lhotse manifests -> padded fbank batches.

Modules (one concern each):

- :mod:`.tokenizer`   SentencePiece tokenizer with icefall ids, ``train_bpe``
- :mod:`.features`    ``make_fbank``: Kaldi-compatible fbank (kaldifeat or Lhotse backend)
- :mod:`.augment`     ``SpecAugment``, ``speed_perturb``, ``make_noise_mixer``
- :mod:`.stats`       ``FilterStats``: counts of kept / dropped cuts per reason
- :mod:`.filters`     ``CutFilter``: too short / too long / fewer frames than tokens
- :mod:`.validation`  ``BadCutError``, ``validate_cuts``: bad audio and transcripts
- :mod:`.dataset`     ``AsrDataset``: CutSet -> batch dict (the batch schema lives there)
- :mod:`.datamodule`  ``AsrDataModule``: samplers, DataLoaders, seeds, resume
"""

from asr_kd.data.augment import (
    SpecAugment,
    SpecAugmentConfig,
    make_noise_mixer,
    speed_perturb,
)
from asr_kd.data.datamodule import AsrDataConfig, AsrDataModule
from asr_kd.data.dataset import AsrDataset
from asr_kd.data.features import make_fbank
from asr_kd.data.filters import CutFilter, conv2d_subsampling_4, filter_cuts
from asr_kd.data.stats import FilterStats
from asr_kd.data.validation import BadCutError, validate_cuts

__all__ = [
    "AsrDataConfig",
    "AsrDataModule",
    "AsrDataset",
    "BadCutError",
    "CutFilter",
    "FilterStats",
    "SpecAugment",
    "SpecAugmentConfig",
    "conv2d_subsampling_4",
    "filter_cuts",
    "make_fbank",
    "make_noise_mixer",
    "speed_perturb",
    "validate_cuts",
]
