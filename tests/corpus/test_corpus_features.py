"""Tests for asr_kd.corpus.features (precomputed lilcom fbank)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

lhotse = pytest.importorskip("lhotse")
from lhotse import CutSet, Recording  # noqa: E402

from asr_kd.corpus.features import compute_fbank, make_extractor  # noqa: E402


@pytest.fixture
def manifest_dir(tmp_path):
    rng = np.random.default_rng(0)
    cuts = []
    for i, dur in enumerate((0.5, 1.25)):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(16000 * dur))).astype("float32"), 16000, subtype="PCM_16")
        cuts.append(Recording.from_file(path, recording_id=f"u{i}").to_cut())
    CutSet.from_cuts(cuts).to_file(tmp_path / "synth_cuts_dev.jsonl.gz")
    return tmp_path


def test_compute_fbank(manifest_dir, tmp_path):
    out_dir = tmp_path / "fbank"
    (out,) = compute_fbank(manifest_dir, out_dir, "synth", ["dev"], num_jobs=1, extractor="lhotse")
    assert out == out_dir / "synth_cuts_dev.jsonl.gz"
    cuts = CutSet.from_file(out)
    for cut, dur in zip(cuts, (0.5, 1.25)):
        feats = cut.load_features()
        assert feats.shape == (round(dur * 100), 80)
        assert np.isfinite(feats).all()
    # skipped when the output exists
    mtime = out.stat().st_mtime_ns
    compute_fbank(manifest_dir, out_dir, "synth", ["dev"], extractor="lhotse")
    assert out.stat().st_mtime_ns == mtime


def test_storage_paths_are_absolute(manifest_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (out,) = compute_fbank(manifest_dir, "rel/fbank", "synth", ["dev"], extractor="lhotse")
    monkeypatch.chdir(manifest_dir)  # elsewhere: the features must still load
    for cut in CutSet.from_file(tmp_path / "rel" / "fbank" / "synth_cuts_dev.jsonl.gz"):
        assert cut.features.storage_path.startswith("/")
        assert cut.load_features().shape[1] == 80


def test_make_extractor():
    assert make_extractor("lhotse").feature_dim(16000) == 80
    with pytest.raises(ValueError):
        make_extractor("mfcc")


def test_kaldifeat_backend_agrees_with_lhotse(manifest_dir, tmp_path):
    pytest.importorskip("kaldifeat")
    (a,) = compute_fbank(manifest_dir, tmp_path / "l", "synth", ["dev"], extractor="lhotse")
    (b,) = compute_fbank(manifest_dir, tmp_path / "k", "synth", ["dev"], extractor="kaldifeat")
    for ca, cb in zip(CutSet.from_file(a), CutSet.from_file(b)):
        fa, fb = ca.load_features(), cb.load_features()
        assert fa.shape == fb.shape
        assert np.abs(fa - fb).max() < 0.1  # lilcom-compressed, same Kaldi recipe
