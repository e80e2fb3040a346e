"""Tests for asr_kd.corpus.librispeech on a two-utterance LibriSpeech-format directory."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("lhotse")

from asr_kd.corpus import librispeech as L  # noqa: E402


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "LibriSpeech" / "dev-clean" / "1272" / "128104"
    d.mkdir(parents=True)
    texts = {"1272-128104-0000": "MISTER QUILTER IS THE APOSTLE", "1272-128104-0001": "NOR IS MISTER QUILTER'S MANNER"}
    for i, utt in enumerate(texts):
        sf.write(d / f"{utt}.flac", np.zeros(8000 + 4000 * i, dtype="float32"), 16000, format="FLAC")
    (d / "1272-128104.trans.txt").write_text("".join(f"{u} {t}\n" for u, t in texts.items()))
    return tmp_path / "LibriSpeech", texts


def test_prepare_writes_icefall_named_manifests(corpus, tmp_path):
    from lhotse import CutSet

    corpus_dir, texts = corpus
    out = tmp_path / "manifests"
    assert L.prepare(corpus_dir, out, ["dev-clean"]) == {"dev-clean": 2}
    for kind in ("recordings", "supervisions", "cuts"):
        assert (out / f"librispeech_{kind}_dev-clean.jsonl.gz").is_file()
    cuts = CutSet.from_file(out / "librispeech_cuts_dev-clean.jsonl.gz")
    assert {c.id: c.supervisions[0].text for c in cuts} == texts
    assert sorted(c.duration for c in cuts) == [0.5, 0.75]
    for c in cuts:
        (sup,) = c.supervisions
        assert sup.start == 0 and sup.duration == c.duration and sup.speaker == "1272"


def test_prepare_missing_part(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="test-other"):
        L.prepare(corpus[0], tmp_path / "m", ["dev-clean", "test-other"])
