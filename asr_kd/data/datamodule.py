"""DataLoaders for training, validation and test: samplers, workers, augmentation, seeds.

:class:`AsrDataModule` turns CutSets into ``torch.utils.data.DataLoader`` s of the batches described in
:mod:`asr_kd.data.dataset`. Batches are sampled by Lhotse's ``DynamicBucketingSampler`` (buckets of
similar duration, at most ``max_duration`` seconds of audio per batch), which is DDP-aware: with
``world_size`` ranks each rank gets a disjoint share of the batches (pass ``world_size`` / ``rank``,
or they are read from ``torch.distributed`` when it is initialised).

Resuming: save ``train_dl.sampler.state_dict()`` in the checkpoint and pass it back as
``train_dataloader(cuts, sampler_state_dict=...)``; the sampler then yields exactly the batches the
interrupted epoch had not yet produced. (With ``num_workers > 0`` the sampler runs ahead of the
training loop by the prefetched batches, which are therefore counted as produced.)

Determinism: the sampler shuffles with ``seed + epoch`` (call ``train_dl.sampler.set_epoch(epoch)``
each epoch). With ``num_workers > 0`` the loaders are :class:`SeededDataLoader` s: before every
batch a worker seeds Python's, NumPy's and torch's generators (SpecAugment, noise mixing) with
``batch_seed(seed, rank, epoch, batch index)`` (:func:`asr_kd.data.dataset.batch_seed`), so the
augmentation of a batch depends on neither the number of workers nor a resume in the middle of the
epoch: resuming is exact with workers too. With ``num_workers=0`` the dataset uses the main
process's generators: seed them (e.g. ``lhotse.fix_random_seed``); the trainer restores them on resume.

Typical use in a training script::

    tok = Tokenizer.from_dir(lang_dir)
    train = validate_cuts(CutSet.from_file(train_manifest), tok, on_error="skip", audio="exists")
    train = filter_cuts(train, CutFilter(min_duration=1.0, max_duration=20.0, tokenizer=tok,
                                         subsampled_frames=conv2d_subsampling_4))
    dm = AsrDataModule(AsrDataConfig(max_duration=200, on_error="skip"), tokenizer=tok)
    train_dl = dm.train_dataloader(train, sampler_state_dict=ckpt.get("sampler"))
    skipped = FilterStats("train batches")
    for epoch in range(start_epoch, num_epochs):
        train_dl.sampler.set_epoch(epoch)
        for batch in train_dl:
            skipped.add_skipped(batch["skipped"])
            if batch["inputs"].size(0) == 0:
                continue
            ...  # model(batch["inputs"], batch["feature_lens"], batch["supervisions"]["tokens"])
        skipped.log()
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler
from lhotse.dataset.dataloading import make_worker_init_fn
from lhotse.dataset.input_strategies import BatchIO, OnTheFlyFeatures, PrecomputedFeatures

from asr_kd.data.augment import SpecAugment, SpecAugmentConfig, make_noise_mixer, speed_perturb
from asr_kd.data.dataset import AsrDataset
from asr_kd.data.features import Backend, make_fbank
from asr_kd.data.validation import OnError

if TYPE_CHECKING:  # pragma: no cover
    from asr_kd.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class AsrDataConfig:
    """Settings of :class:`AsrDataModule`.

    Attributes:
        max_duration: seconds of audio per batch (before speed perturbation changes durations).
        num_buckets: duration buckets of the dynamic bucketing sampler.
        shuffle: shuffle training batches (validation/test are never shuffled).
        drop_last: drop incomplete training batches (and, under DDP, uneven tail batches).
        buffer_size: cuts held by the bucketing sampler (larger = better shuffling, more memory).
        num_workers: DataLoader worker processes.
        seed: base seed of sampler shuffling and worker generators.
        on_the_fly_feats: compute fbank from audio (else read pre-computed features from the cuts).
        num_mel_bins: F.
        fbank_backend: ``"auto"`` | ``"kaldifeat"`` | ``"lhotse"`` (see :mod:`asr_kd.data.features`).
        train_dither: fbank dither of the training features (float audio scale: Kaldi's default
            dither of 1.0 on int16 samples is ``1 / 32768``); validation and test use 0.
        spec_augment: apply SpecAugment to training batches.
        spec_augment_config: its settings.
        speed_perturb: add 0.9x/1.1x copies of the training cuts (needs on-the-fly features).
        speed_factors: the perturbation factors.
        noise_cuts: a noise CutSet, or the path of its manifest, to mix into training cuts
            (None = no noise mixing).
        noise_snr: SNR range in dB.
        noise_prob: probability that a training cut gets noise.
        on_error: ``"raise"`` or ``"skip"`` bad cuts, in training and validation batches (the
            validation loss is then over the good dev cuts; the trainer counts the skipped ones).
            Test batches take theirs from :meth:`AsrDataModule.test_dataloader`.
        custom_fields: cut custom fields loaded into ``batch["custom"]`` of the training and validation
            batches (see :mod:`asr_kd.data.dataset`), e.g. the offline teacher targets of
            :class:`asr_kd.kd.offline.OfflineTeacher` (its ``required_custom_fields``); both splits'
            manifests must carry them.
    """

    max_duration: float = 200.0
    num_buckets: int = 30
    shuffle: bool = True
    drop_last: bool = True
    buffer_size: int = 20000
    num_workers: int = 2
    seed: int = 42
    on_the_fly_feats: bool = True
    num_mel_bins: int = 80
    fbank_backend: Backend = "auto"
    train_dither: float = 0.0
    spec_augment: bool = True
    spec_augment_config: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    speed_perturb: bool = False
    speed_factors: Sequence[float] = (0.9, 1.1)
    noise_cuts: CutSet | str | Path | None = None
    noise_snr: tuple[float, float] = (10.0, 20.0)
    noise_prob: float = 0.5
    on_error: OnError = "raise"
    custom_fields: tuple[str, ...] = ()


def resolve_world(world_size: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """``(world_size, rank)``: the given values, else ``torch.distributed``'s, else ``(1, 0)``."""
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
    return world_size, rank


class SeededDataLoader(torch.utils.data.DataLoader):
    """A DataLoader whose workers seed every batch from ``(seed, rank, epoch, batch index)``.

    At each ``iter()`` it gives its :class:`~asr_kd.data.dataset.AsrDataset` the seed, the DDP rank,
    the sampler's ``epoch`` and the index of the first batch the new iterator will produce (0, or, for
    a lhotse sampler just restored with ``load_state_dict``, the batches it fast-forwarded over), before
    the worker processes are started (they get copies of the dataset). See ``AsrDataset._seed_batch``.

    Args:
        seed: base seed (``AsrDataConfig.seed``).
        rank: DDP rank.
        *args, **kwargs: those of ``torch.utils.data.DataLoader``.
    """

    def __init__(self, *args: Any, seed: int = 42, rank: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.seed = int(seed)
        self.rank = int(rank)

    def first_batch_index(self) -> int:
        """Batches the sampler has produced in its current epoch before the next ``iter()``."""
        sampler = self.sampler
        if not getattr(sampler, "_just_restored_state", False):
            return 0  # a fresh pass over the epoch
        try:
            return int(sampler.diagnostics.current_epoch_stats.kept_batches)
        except AttributeError:
            return 0

    def __iter__(self):
        dataset = self.dataset
        if self.num_workers > 0 and isinstance(dataset, AsrDataset):
            epoch = int(getattr(self.sampler, "epoch", 0) or 0)
            dataset.worker_seeding = (self.seed, self.rank, epoch, self.first_batch_index())
            dataset._worker_batches = 0
        return super().__iter__()


class AsrDataModule:
    """Builds the train / valid / test DataLoaders of one experiment.

    Args:
        config: the settings.
        tokenizer: when given, batches carry token ids (and bad transcripts are caught).
        world_size, rank: DDP layout; default from ``torch.distributed`` (else single process).
    """

    def __init__(
        self,
        config: AsrDataConfig | None = None,
        tokenizer: Tokenizer | None = None,
        world_size: int | None = None,
        rank: int | None = None,
    ):
        self.config = config or AsrDataConfig()
        self.tokenizer = tokenizer
        self.world_size, self.rank = resolve_world(world_size, rank)
        if self.config.speed_perturb and not self.config.on_the_fly_feats:
            raise ValueError(
                "speed_perturb needs on_the_fly_feats=True (pre-computed features cannot be "
                "perturbed; perturb before computing features instead)"
            )

    # ------------------------------------------------------------------ pieces
    def input_strategy(self, dither: float = 0.0) -> BatchIO:
        c = self.config
        if c.on_the_fly_feats:
            return OnTheFlyFeatures(make_fbank(c.num_mel_bins, backend=c.fbank_backend, dither=dither))
        return PrecomputedFeatures()

    def make_sampler(self, cuts: CutSet, shuffle: bool, drop_last: bool) -> DynamicBucketingSampler | DynamicCutSampler:
        c = self.config
        # Lhotse needs at least one cut per bucket to estimate the bucket bins (tiny sets).
        num_buckets = max(1, sum(1 for _ in islice(cuts, c.num_buckets)))
        if num_buckets < 2:  # one bucket (or a one-cut set): Lhotse's bucketing needs two at least
            return DynamicCutSampler(
                cuts,
                max_duration=c.max_duration,
                shuffle=shuffle,
                drop_last=drop_last,
                seed=c.seed,
                world_size=self.world_size,
                rank=self.rank,
            )
        return DynamicBucketingSampler(
            cuts,
            max_duration=c.max_duration,
            num_buckets=num_buckets,
            shuffle=shuffle,
            drop_last=drop_last,
            buffer_size=c.buffer_size,
            seed=c.seed,
            world_size=self.world_size,
            rank=self.rank,
        )

    def _loader(self, dataset: AsrDataset, sampler) -> torch.utils.data.DataLoader:
        c = self.config
        return SeededDataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=c.num_workers,
            persistent_workers=False,  # workers must get the dataset's per-iterator seeding
            worker_init_fn=make_worker_init_fn(rank=self.rank, world_size=self.world_size, seed=c.seed)
            if c.num_workers > 0
            else None,
            seed=c.seed,
            rank=self.rank,
        )

    # ------------------------------------------------------------------ loaders
    def train_cuts_transform(self, cuts: CutSet) -> CutSet:
        """The training cuts as the sampler sees them (speed-perturbed copies added if configured)."""
        c = self.config
        if c.speed_perturb:
            cuts = speed_perturb(cuts, c.speed_factors, seed=c.seed)
        return cuts

    def train_dataset(self) -> AsrDataset:
        c = self.config
        transforms = []
        if c.noise_cuts is not None:
            noise = c.noise_cuts
            if not isinstance(noise, CutSet):
                noise = CutSet.from_file(noise)
            # CutMix draws noise cuts at random: it needs them in memory
            transforms.append(make_noise_mixer(noise.to_eager(), c.noise_snr, c.noise_prob))
        return AsrDataset(
            input_strategy=self.input_strategy(dither=c.train_dither),
            tokenizer=self.tokenizer,
            cut_transforms=transforms,
            spec_augment=SpecAugment(c.spec_augment_config) if c.spec_augment else None,
            on_error=c.on_error,
            name="train",
            custom_fields=tuple(c.custom_fields),
        )

    def train_dataloader(
        self, cuts: CutSet, sampler_state_dict: dict[str, Any] | None = None
    ) -> torch.utils.data.DataLoader:
        """Shuffled, augmented training batches; resumes mid-epoch from ``sampler_state_dict``."""
        c = self.config
        sampler = self.make_sampler(self.train_cuts_transform(cuts), shuffle=c.shuffle, drop_last=c.drop_last)
        if sampler_state_dict is not None:
            log.info("resuming the training sampler from a saved state")
            sampler.load_state_dict(copy.deepcopy(sampler_state_dict))  # Lhotse pops keys
        return self._loader(self.train_dataset(), sampler)

    def valid_dataloader(self, cuts: CutSet) -> torch.utils.data.DataLoader:
        """Validation batches: no shuffling, no augmentation; bad cuts raise or are skipped per
        ``config.on_error``."""
        dataset = AsrDataset(
            self.input_strategy(),
            tokenizer=self.tokenizer,
            on_error=self.config.on_error,
            name="valid",
            custom_fields=tuple(self.config.custom_fields),
        )
        return self._loader(dataset, self.make_sampler(cuts, shuffle=False, drop_last=False))

    def test_dataloader(self, cuts: CutSet, on_error: OnError = "raise") -> torch.utils.data.DataLoader:
        """Test batches as for validation, with the cuts attached (``batch["cuts"]``).

        No tokens: decoding scores against the raw ``text``, which may hold characters the
        tokenizer has never seen (they count as errors instead of aborting the run). ``on_error``:
        ``"raise"`` at a bad cut (unreadable audio, empty transcript), or ``"skip"`` it (listed in
        ``batch["skipped"]``)."""
        dataset = AsrDataset(self.input_strategy(), return_cuts=True, on_error=on_error, name="test")
        return self._loader(dataset, self.make_sampler(cuts, shuffle=False, drop_last=False))
