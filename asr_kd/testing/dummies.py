"""Tiny audio files and Lhotse manifests for tests: no corpus needed.

Every helper writes real 16-bit PCM wav files (sines plus a little seeded noise) so that the whole
pipeline (audio loading, fbank, padding) runs for real. Helpers for *broken* inputs (missing file,
garbage bytes, truncated wav) build the cuts that :mod:`asr_kd.data.validation` must reject.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

SAMPLING_RATE = 16000

#: Transcripts over a small alphabet (upper-case letters, apostrophe, space).
DUMMY_TEXTS = (
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "SHE STRUCK HER HEAD ON THE LOW CEILING",
    "PACK MY BOX WITH FIVE DOZEN LIQUOR JUGS",
    "HOW VEXINGLY QUICK DAFT ZEBRAS JUMP",
    "THE FIVE BOXING WIZARDS JUMP QUICKLY",
    "A STITCH IN TIME SAVES NINE",
    "THEY DIDN'T KNOW WHERE THE ROAD WOULD LEAD THEM",
    "SPHINX OF BLACK QUARTZ JUDGE MY VOW",
)


def synth_signal(duration: float, sampling_rate: int = SAMPLING_RATE, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A sine of ``freq`` Hz plus seeded white noise, shape ``(num_samples,)`` float32 in [-1, 1]."""
    n = int(round(duration * sampling_rate))
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sampling_rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> Path:
    """Write ``samples`` ``(num_samples,)`` as 16-bit PCM wav and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, sampling_rate, subtype="PCM_16")
    return path


def make_cut(
    audio_dir: str | Path,
    cut_id: str,
    duration: float = 1.0,
    text: str = DUMMY_TEXTS[0],
    freq: float = 440.0,
    seed: int = 0,
    sampling_rate: int = SAMPLING_RATE,
) -> MonoCut:
    """Write ``<audio_dir>/<cut_id>.wav`` and return a cut spanning it with one supervision."""
    path = write_wav(
        Path(audio_dir) / f"{cut_id}.wav",
        synth_signal(duration, sampling_rate, freq, seed),
        sampling_rate,
    )
    rec = Recording.from_file(path, recording_id=cut_id)
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=rec.duration, channel=0, text=text)
    return MonoCut(id=cut_id, start=0.0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup])


def make_noise_cut(
    audio_dir: str | Path,
    cut_id: str = "noise",
    duration: float = 3.0,
    amplitude: float = 0.1,
    seed: int = 0,
    sampling_rate: int = SAMPLING_RATE,
) -> MonoCut:
    """Write ``<audio_dir>/<cut_id>.wav`` of white noise and return a cut without supervisions."""
    rng = np.random.default_rng(seed)
    n = int(round(duration * sampling_rate))
    samples = np.clip(amplitude * rng.standard_normal(n), -1.0, 1.0).astype(np.float32)
    path = write_wav(Path(audio_dir) / f"{cut_id}.wav", samples, sampling_rate)
    rec = Recording.from_file(path, recording_id=cut_id)
    return MonoCut(id=cut_id, start=0.0, duration=rec.duration, channel=0, recording=rec)


def make_cutset(
    audio_dir: str | Path,
    durations: Sequence[float],
    texts: Sequence[str] | None = None,
    prefix: str = "cut",
) -> CutSet:
    """One cut per duration, ids ``<prefix>-0000``, ...; texts cycle through ``DUMMY_TEXTS``."""
    texts = DUMMY_TEXTS if texts is None else texts
    cuts = [
        make_cut(
            audio_dir,
            f"{prefix}-{i:04d}",
            duration=d,
            text=texts[i % len(texts)],
            freq=200.0 + 50.0 * (i % 13),
            seed=i,
        )
        for i, d in enumerate(durations)
    ]
    return CutSet.from_cuts(cuts)


def with_text(cut: MonoCut, text: str) -> MonoCut:
    """A copy of ``cut`` whose (single) supervision has ``text``."""
    return replace(cut, supervisions=[replace(cut.supervisions[0], text=text)])


def _point_to(cut: MonoCut, path: Path) -> MonoCut:
    src = replace(cut.recording.sources[0], source=str(path))
    return replace(cut, recording=replace(cut.recording, sources=[src]))


def missing_audio(cut: MonoCut) -> MonoCut:
    """``cut`` with its audio file deleted."""
    path = Path(cut.recording.sources[0].source)
    path.unlink()
    return cut


def garbage_audio(cut: MonoCut, num_bytes: int = 4000, seed: int = 0) -> MonoCut:
    """``cut`` with its audio file overwritten by random bytes (not a sound file)."""
    path = Path(cut.recording.sources[0].source)
    path.write_bytes(np.random.default_rng(seed).bytes(num_bytes))
    return cut


def truncated_audio(cut: MonoCut, keep_fraction: float = 0.5) -> MonoCut:
    """``cut`` whose wav file lost its tail (the manifest still declares the full length)."""
    path = Path(cut.recording.sources[0].source)
    data = path.read_bytes()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep_fraction)])
        f.flush()
        os.fsync(f.fileno())
    return cut
