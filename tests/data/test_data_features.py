"""Tests for asr_kd.data.features: shapes, determinism, agreement with Kaldi re-implementations."""

from __future__ import annotations

import numpy as np
import pytest

from asr_kd.data import features
from asr_kd.data.features import make_fbank, num_frames, resolve_backend
from asr_kd.testing import synth_signal


def _kaldi_native_fbank(samples: np.ndarray, num_mel_bins: int = 80) -> np.ndarray:
    """Reference: k2-fsa's kaldi-native-fbank (a C++ port of Kaldi's compute-fbank-feats)."""
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = False
    opts.mel_opts.num_bins = num_mel_bins
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = -400.0
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, samples.tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


@pytest.mark.parametrize("duration", [0.5, 1.0, 1.234, 2.0049])
@pytest.mark.parametrize("num_mel_bins", [80, 40])
def test_lhotse_backend_shape(duration, num_mel_bins):
    x = synth_signal(duration)
    feats = make_fbank(num_mel_bins, backend="lhotse").extract(x, 16000)
    assert feats.dtype == np.float32
    assert feats.shape == (num_frames(len(x) / 16000), num_mel_bins)
    assert feats.shape[0] == round(len(x) / 160)  # snip_edges=False: one frame per 10 ms


def test_lhotse_backend_matches_kaldi_native_fbank():
    x = synth_signal(1.234, freq=310.0, seed=3)
    got = make_fbank(backend="lhotse").extract(x, 16000)
    ref = _kaldi_native_fbank(x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=0)


def test_deterministic_without_dither():
    x = synth_signal(1.0, seed=7)
    fb = make_fbank(backend="lhotse")
    np.testing.assert_array_equal(fb.extract(x, 16000), fb.extract(x, 16000))


@pytest.mark.skipif(not features.kaldifeat_available(), reason="kaldifeat not installed")
def test_kaldifeat_and_lhotse_backends_agree():
    x = synth_signal(1.5, freq=523.0, seed=5)
    a = make_fbank(backend="kaldifeat").extract(x, 16000)
    b = make_fbank(backend="lhotse").extract(x, 16000)
    assert a.shape == b.shape == (150, 80)
    np.testing.assert_allclose(a, b, atol=1e-3, rtol=0)
    np.testing.assert_allclose(a, _kaldi_native_fbank(x), atol=1e-3, rtol=0)


def test_backend_resolution(monkeypatch):
    monkeypatch.setattr(features, "kaldifeat_available", lambda: False)
    assert resolve_backend("auto") == "lhotse"
    assert isinstance(make_fbank(), features.BatchExactFbank)
    with pytest.raises(ImportError, match="kaldifeat"):
        make_fbank(backend="kaldifeat")
    with pytest.raises(ValueError, match="unknown fbank backend"):
        make_fbank(backend="torchaudio")
    monkeypatch.setattr(features, "kaldifeat_available", lambda: True)
    assert resolve_backend("auto") == "kaldifeat"


@pytest.mark.parametrize(
    "backend",
    [
        "lhotse",
        pytest.param(
            "kaldifeat", marks=pytest.mark.skipif(not features.kaldifeat_available(), reason="kaldifeat not installed")
        ),
    ],
)
def test_batch_extraction_equals_single(backend):
    # waveforms of different lengths: the shorter ones must not see the longer ones' padding
    waves = [synth_signal(0.6 + 0.37 * i, freq=200.0 + 90 * i, seed=i) for i in range(5)]
    fb = make_fbank(backend=backend)
    batch = fb.extract_batch(waves, 16000)
    for wave, feats in zip(waves, batch):
        np.testing.assert_allclose(feats, fb.extract(wave, 16000), rtol=0, atol=1e-6)
