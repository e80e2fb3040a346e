"""Helpers for tests: tiny wavs and Lhotse manifests built on the fly (see :mod:`.dummies`)."""

from asr_kd.testing.dummies import (
    DUMMY_TEXTS,
    SAMPLING_RATE,
    garbage_audio,
    make_cut,
    make_cutset,
    make_noise_cut,
    missing_audio,
    synth_signal,
    truncated_audio,
    with_text,
    write_wav,
)

__all__ = [
    "DUMMY_TEXTS",
    "SAMPLING_RATE",
    "garbage_audio",
    "make_cut",
    "make_cutset",
    "make_noise_cut",
    "missing_audio",
    "synth_signal",
    "truncated_audio",
    "with_text",
    "write_wav",
]
