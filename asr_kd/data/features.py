"""Kaldi-compatible log-mel filterbank extractors.

:func:`make_fbank` returns a Lhotse :class:`~lhotse.features.base.FeatureExtractor` with one fixed
configuration whichever backend computes it:

- ``"kaldifeat"``: :class:`lhotse.KaldifeatFbank` (C++/CUDA, the k2-fsa feature library);
- ``"lhotse"``: :class:`lhotse.Fbank` (pure PyTorch, always available);
- ``"auto"``: kaldifeat when it is importable, else lhotse.

Configuration (Kaldi's ``compute-fbank-feats`` conventions, as icefall uses them): 16 kHz input,
25 ms Povey window every 10 ms, pre-emphasis 0.97, DC offset removed, FFT size rounded up to a
power of two, power spectrum, ``num_mel_bins`` triangular mel bins between 20 Hz and Nyquist - 400 Hz,
log with an energy floor of 1e-10, ``snip_edges=False`` (so a cut of ``d`` seconds has
``round(d / 0.01)`` frames, the count Lhotse's manifests assume). ``dither`` defaults to 0: features
are then deterministic, which evaluation needs; pass a small dither (e.g. 1.0 on int16 scale is Kaldi's
default, i.e. ``1 / 32768`` on float audio) only for training if wanted.

Output of ``extractor.extract(samples (num_samples,), sampling_rate)``: ``(T, num_mel_bins)``
float32, ``T = round(num_samples / (0.01 * sampling_rate))``.

Batches: ``extract_batch`` of both backends gives each waveform exactly the features it gets alone
(the Lhotse backend is wrapped in :class:`BatchExactFbank`, see there), so on-the-fly training
features, pre-computed features and single-utterance inference features agree.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Literal

import torch
from lhotse import Fbank, FbankConfig
from lhotse.features.base import FeatureExtractor
from lhotse.utils import compute_num_frames

log = logging.getLogger(__name__)

Backend = Literal["auto", "kaldifeat", "lhotse"]

FRAME_SHIFT = 0.01  # seconds
FRAME_LENGTH = 0.025  # seconds
LOW_FREQ = 20.0
HIGH_FREQ = -400.0  # i.e. Nyquist - 400 Hz


def kaldifeat_available() -> bool:
    """True when the compiled ``kaldifeat`` package can be imported."""
    if importlib.util.find_spec("kaldifeat") is None:
        return False
    try:
        import kaldifeat  # noqa: F401
    except Exception:  # a broken build (e.g. compiled against another torch) counts as absent
        return False
    return True


def resolve_backend(backend: Backend = "auto") -> str:
    """``"kaldifeat"`` or ``"lhotse"``; raises if ``"kaldifeat"`` is asked for but unavailable."""
    if backend == "auto":
        return "kaldifeat" if kaldifeat_available() else "lhotse"
    if backend == "kaldifeat" and not kaldifeat_available():
        raise ImportError("backend='kaldifeat' requested but kaldifeat cannot be imported")
    if backend not in ("kaldifeat", "lhotse"):
        raise ValueError(f"unknown fbank backend {backend!r}; use 'auto', 'kaldifeat' or 'lhotse'")
    return backend


class BatchExactFbank(Fbank):
    """Lhotse's ``Fbank`` whose ``extract_batch`` equals per-waveform ``extract``.

    Lhotse pads a list of waveforms with zeros and runs them as one ``(N, num_samples)`` tensor; with
    ``snip_edges=False`` the last frames of a shorter waveform then read those zeros where Kaldi
    reflects the signal, so its last frame differs from the frame computed alone. Here each waveform
    is padded with its own mirrored tail instead (Kaldi's reflection rule), which leaves every valid
    frame exactly as ``extract`` computes it, at the speed of the batched computation.
    """

    def extract_batch(self, samples, sampling_rate: int, lengths=None):
        if lengths is not None or not isinstance(samples, (list, tuple)) or len(samples) < 2:
            return super().extract_batch(samples, sampling_rate, lengths=lengths)
        assert sampling_rate == self.config.sampling_rate, (
            f"fbank expects {self.config.sampling_rate} Hz audio, got {sampling_rate} Hz"
        )
        as_numpy = not any(isinstance(x, torch.Tensor) for x in samples)
        waves = [torch.as_tensor(x, dtype=torch.float32).reshape(-1) for x in samples]
        longest = max(w.numel() for w in waves)
        padded = torch.zeros(len(waves), longest)
        for i, w in enumerate(waves):
            n = w.numel()
            padded[i, :n] = w
            tail = w.flip(0)[: min(n, longest - n)]
            padded[i, n : n + tail.numel()] = tail
        feats = self.extractor(padded.to(self.device)).cpu()
        out = [
            feats[i, : compute_num_frames(w.numel() / sampling_rate, self.frame_shift, sampling_rate)]
            for i, w in enumerate(waves)
        ]
        return [f.numpy() for f in out] if as_numpy else out


def make_fbank(
    num_mel_bins: int = 80,
    backend: Backend = "auto",
    sampling_rate: int = 16000,
    dither: float = 0.0,
    device: str = "cpu",
) -> FeatureExtractor:
    """Build the log-mel fbank extractor described in the module docstring.

    Args:
        num_mel_bins: F, the number of mel bins.
        backend: ``"auto"`` (kaldifeat if importable), ``"kaldifeat"`` or ``"lhotse"``.
        sampling_rate: sampling rate of the audio the extractor will see.
        dither: dithering constant (0 = deterministic features).
        device: where the features are computed (``"cpu"`` or a CUDA device).

    Returns:
        A Lhotse ``FeatureExtractor``, for ``OnTheFlyFeatures`` or ``CutSet.compute_and_store_features``.
    """
    which = resolve_backend(backend)
    if which == "kaldifeat":
        from lhotse import KaldifeatFbank, KaldifeatFbankConfig
        from lhotse.features.kaldifeat import KaldifeatFrameOptions, KaldifeatMelOptions

        config = KaldifeatFbankConfig(
            frame_opts=KaldifeatFrameOptions(
                sampling_rate=sampling_rate,
                frame_shift=FRAME_SHIFT,
                frame_length=FRAME_LENGTH,
                dither=dither,
                preemph_coeff=0.97,
                remove_dc_offset=True,
                window_type="povey",
                round_to_power_of_two=True,
                snip_edges=False,
            ),
            mel_opts=KaldifeatMelOptions(num_bins=num_mel_bins, low_freq=LOW_FREQ, high_freq=HIGH_FREQ),
            use_energy=False,
            use_log_fbank=True,
            use_power=True,
            device=device,
        )
        extractor = KaldifeatFbank(config)
    else:
        config = FbankConfig(
            sampling_rate=sampling_rate,
            frame_length=FRAME_LENGTH,
            frame_shift=FRAME_SHIFT,
            round_to_power_of_two=True,
            remove_dc_offset=True,
            preemph_coeff=0.97,
            window_type="povey",
            dither=dither,
            snip_edges=False,
            use_energy=False,
            low_freq=LOW_FREQ,
            high_freq=HIGH_FREQ,
            num_filters=num_mel_bins,
            device=device,
        )
        extractor = BatchExactFbank(config)
    log.debug("fbank backend %s, %d mel bins, dither %g", which, num_mel_bins, dither)
    return extractor


def num_frames(duration: float, sampling_rate: int = 16000, frame_shift: float = FRAME_SHIFT) -> int:
    """Number of fbank frames of ``duration`` seconds (``snip_edges=False``), about ``d / shift``.

    Uses Lhotse's ``compute_num_frames`` rounding, so it equals what the extractors return.
    """
    return compute_num_frames(duration, frame_shift, sampling_rate=sampling_rate)
