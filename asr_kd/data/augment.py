"""Data augmentation: SpecAugment on fbank batches, speed perturbation and noise mixing on cuts.

- :class:`SpecAugment` works on a padded batch ``features (N, T, F)`` with ``feature_lens (N,)``:
  optional time warping, ``num_freq_masks`` frequency masks of width ``<= freq_mask_width`` bins and
  ``num_time_masks`` time masks whose width is at most ``time_mask_ratio * T_i`` frames (capped by
  ``max_time_mask_width``), so short utterances get proportionally short masks. Only the valid
  frames ``[0, T_i)`` of each utterance are touched; padding is left as it is. Randomness comes from
  an optional ``torch.Generator`` (else torch's global generator), so a seed fixes the output.
- :func:`speed_perturb` adds 0.9x / 1.1x copies of a CutSet (Lhotse resamples when loading audio);
  it needs on-the-fly features (pre-computed features cannot be perturbed).
- :func:`make_noise_mixer` wraps Lhotse's ``CutMix``: each cut gets, with probability ``p``, noise
  from a noise CutSet at an SNR drawn from a range, keeping cut ids and durations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from lhotse import CutSet
from lhotse.dataset import CutMix

Span = tuple[int, int]  # (start, width)


@dataclass
class SpecAugmentConfig:
    """SpecAugment settings (defaults: icefall/Lhotse's LibriSpeech values).

    Attributes:
        time_warp: maximum warp distance W in frames (0 disables warping). Warping needs
            ``T_i > 2 W + 1``; shorter utterances are not warped.
        num_freq_masks: number of frequency masks per utterance.
        freq_mask_width: maximum frequency-mask width in bins (each width is uniform in ``[0, max]``).
        num_time_masks: number of time masks per utterance.
        time_mask_ratio: maximum time-mask width as a fraction of the utterance's frames ``T_i``.
        max_time_mask_width: absolute cap on a time mask's width, in frames.
        p: probability that an utterance is augmented at all.
        mask_value: ``"mean"`` (mean of the utterance's valid features) or a constant.
    """

    time_warp: int = 80
    num_freq_masks: int = 2
    freq_mask_width: int = 27
    num_time_masks: int = 10
    time_mask_ratio: float = 0.05
    max_time_mask_width: int = 100
    p: float = 0.9
    mask_value: str | float = "mean"


@dataclass
class AugmentPlan:
    """The random choices for one utterance: ``warp`` = (centre, new centre) or None, and masks."""

    apply: bool
    warp: tuple[int, int] | None = None
    freq_spans: list[Span] = field(default_factory=list)
    time_spans: list[Span] = field(default_factory=list)


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[low, high]`` (both inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def sample_spans(num: int, max_width: int, size: int, generator: torch.Generator | None = None) -> list[Span]:
    """``num`` spans ``(start, width)`` inside ``[0, size)``, ``width ~ U{0..min(max_width, size)}``."""
    max_width = max(0, min(max_width, size))
    spans = []
    for _ in range(num):
        width = _randint(0, max_width, generator)
        start = _randint(0, size - width, generator)
        spans.append((start, width))
    return spans


def time_warp(x: torch.Tensor, centre: int, new_centre: int) -> torch.Tensor:
    """Stretch ``x (T, F)`` so that frame ``centre`` moves to ``new_centre``; returns ``(T, F)``.

    Frames ``[0, centre)`` are linearly resampled to ``new_centre`` frames and ``[centre, T)`` to
    ``T - new_centre`` frames.
    """
    T = x.size(0)
    if new_centre == centre:
        return x.clone()
    left = F.interpolate(x[:centre].T[None], size=new_centre, mode="linear", align_corners=False)
    right = F.interpolate(x[centre:].T[None], size=T - new_centre, mode="linear", align_corners=False)
    return torch.cat([left[0].T, right[0].T], dim=0)


class SpecAugment(torch.nn.Module):
    """SpecAugment (Park et al., 2019) on padded fbank batches; see the module docstring.

    Call: ``spec_augment(features (N, T, F), feature_lens (N,), generator=None) -> (N, T, F)``
    (a new tensor; the input is not modified).
    """

    def __init__(self, config: SpecAugmentConfig | None = None, **overrides):
        super().__init__()
        config = config or SpecAugmentConfig()
        if overrides:
            config = SpecAugmentConfig(**{**config.__dict__, **overrides})
        if not 0.0 <= config.p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {config.p}")
        if isinstance(config.mask_value, str) and config.mask_value != "mean":
            raise ValueError(f"mask_value must be 'mean' or a number, got {config.mask_value!r}")
        self.config = config

    def max_time_mask_width_for(self, num_frames: int) -> int:
        """Largest time-mask width for an utterance of ``num_frames`` valid frames."""
        c = self.config
        return min(c.max_time_mask_width, int(math.floor(c.time_mask_ratio * num_frames)))

    def sample(self, num_frames: int, num_features: int, generator: torch.Generator | None = None) -> AugmentPlan:
        """Draw the augmentation of one utterance with ``num_frames`` valid frames."""
        c = self.config
        apply = c.p >= 1.0 or (torch.rand(1, generator=generator).item() < c.p)
        if not apply:
            return AugmentPlan(apply=False)
        warp = None
        W = c.time_warp
        if W > 0 and num_frames > 2 * W + 1:
            centre = _randint(W, num_frames - W - 1, generator)
            new_centre = _randint(centre - W, centre + W, generator)
            warp = (centre, max(1, min(num_frames - 1, new_centre)))
        return AugmentPlan(
            apply=True,
            warp=warp,
            freq_spans=sample_spans(c.num_freq_masks, c.freq_mask_width, num_features, generator),
            time_spans=sample_spans(c.num_time_masks, self.max_time_mask_width_for(num_frames), num_frames, generator),
        )

    def apply_plan(self, x: torch.Tensor, plan: AugmentPlan) -> torch.Tensor:
        """Apply ``plan`` to the valid frames ``x (T_i, F)`` of one utterance; returns ``(T_i, F)``."""
        if not plan.apply:
            return x
        if plan.warp is not None:
            x = time_warp(x, *plan.warp)
        else:
            x = x.clone()
        value = x.mean() if self.config.mask_value == "mean" else float(self.config.mask_value)
        for start, width in plan.freq_spans:
            x[:, start : start + width] = value
        for start, width in plan.time_spans:
            x[start : start + width, :] = value
        return x

    def forward(
        self,
        features: torch.Tensor,
        feature_lens: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if features.dim() != 3:
            raise ValueError(f"expected features (N, T, F), got shape {tuple(features.shape)}")
        out = features.clone()
        num_features = features.size(2)
        for i, length in enumerate(feature_lens.tolist()):
            plan = self.sample(length, num_features, generator)
            out[i, :length] = self.apply_plan(features[i, :length], plan)
        return out


def speed_perturb(cuts: CutSet, factors: Sequence[float] = (0.9, 1.1), seed: int = 0) -> CutSet:
    """The original cuts plus one speed-perturbed copy per factor, randomly interleaved (lazily).

    Perturbed cut ids get Lhotse's ``_sp<factor>`` suffix; durations scale by ``1 / factor``.
    Audio is resampled when loaded, so use it with on-the-fly features only.
    """
    parts = [cuts] + [cuts.perturb_speed(f) for f in factors]
    if len(parts) == 1:
        return cuts
    return CutSet.mux(*parts, seed=seed)


def make_noise_mixer(
    noise_cuts: CutSet,
    snr: tuple[float, float] = (10.0, 20.0),
    p: float = 0.5,
    seed: int | str = "randomized",
) -> CutMix:
    """A cut transform mixing noise from ``noise_cuts`` into each cut with probability ``p``.

    The SNR (dB) is uniform in ``snr``; noise shorter than a cut is repeated. Cut ids and durations
    are preserved, so feature lengths and transcripts are unchanged. ``seed="randomized"`` gives each
    DataLoader worker its own stream (seeded by the worker_init_fn of the data module).
    """
    return CutMix(
        cuts=noise_cuts,
        snr=snr,
        p=p,
        pad_to_longest=False,
        preserve_id=True,
        seed=seed,
        random_mix_offset=True,
    )
