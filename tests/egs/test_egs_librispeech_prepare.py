"""Test egs/librispeech/ASR/prepare.sh (stages 1-3, no network) on a LibriSpeech-format fixture."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "egs" / "librispeech" / "ASR" / "prepare.sh"

# ~15 s of CPU (several Python start-ups importing torch and lhotse); over a minute on a busy machine
pytestmark = pytest.mark.slow

TEXTS = {
    "train-clean-100": {
        ("103", "1240"): ["CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED", "THAT HAD ITS SOURCE AWAY BACK IN THE WOODS"],
        ("103", "1241"): ["SHE SAID IT WASN'T SO", "QUIET JUMPING FOXES VEX THE ZEBRA"],
        ("1034", "121119"): ["BUT MARILLA DID NOT KNOW WHAT TO THINK", "WELL I'M GLAD OF THAT"],
    },
    "dev-clean": {("1272", "128104"): ["MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES"]},
}


def make_librispeech(root: Path) -> dict[str, dict[str, str]]:
    """LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac + <spk>-<chapter>.trans.txt."""
    rng = np.random.default_rng(0)
    expected: dict[str, dict[str, str]] = {}
    for part, chapters in TEXTS.items():
        expected[part] = {}
        for (spk, chapter), texts in chapters.items():
            d = root / "LibriSpeech" / part / spk / chapter
            d.mkdir(parents=True)
            lines = []
            for i, text in enumerate(texts):
                utt = f"{spk}-{chapter}-{i:04d}"
                audio = 0.1 * rng.standard_normal(int(16000 * (0.6 + 0.2 * i)))
                sf.write(d / f"{utt}.flac", audio.astype("float32"), 16000, format="FLAC")
                lines.append(f"{utt} {text}")
                expected[part][utt] = text
            (d / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return expected


def run(*args: str) -> str:
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    pytest.importorskip("lhotse")
    root = tmp_path_factory.mktemp("libri")
    expected = make_librispeech(root)
    data = root / "data"
    args = [
        "--corpus-dir",
        str(root / "LibriSpeech"),
        "--parts",
        "train-clean-100 dev-clean",
        "--data-dir",
        str(data),
        "--vocab-size",
        "40",
        "--nj",
        "1",
    ]
    out = run("--stage", "0", "--precompute-fbank", "true", *args)
    return data, expected, out, args


def test_usage():
    out = run("--help")
    assert "--corpus-dir" in out and "bash egs/librispeech/ASR/prepare.sh" in out


def test_stage0_skips_download_when_parts_exist(prepared):
    *_, out, _ = prepared
    assert "has all parts; skipping" in out


def test_manifests(prepared):
    from lhotse import CutSet, RecordingSet, SupervisionSet
    from lhotse.qa import validate, validate_recordings_and_supervisions

    data, expected, *_ = prepared
    m = data / "manifests"
    for part, utts in expected.items():
        recs = RecordingSet.from_file(m / f"librispeech_recordings_{part}.jsonl.gz")
        sups = SupervisionSet.from_file(m / f"librispeech_supervisions_{part}.jsonl.gz")
        cuts = CutSet.from_file(m / f"librispeech_cuts_{part}.jsonl.gz")
        validate_recordings_and_supervisions(recs, sups)
        validate(cuts, read_data=True)
        assert {c.id: c.supervisions[0].text for c in cuts} == utts
        for cut in cuts:
            spk = cut.id.split("-")[0]
            assert cut.supervisions[0].speaker == spk
            assert cut.sampling_rate == 16000
            assert cut.load_audio().shape[1] == round(cut.duration * 16000)


def test_bpe_from_train_transcripts_only(prepared):
    from asr_kd.data.tokenizer import Tokenizer, read_lexicon

    data, expected, *_ = prepared
    lang = data / "lang_bpe_40"
    assert sorted((lang / "transcript_words.txt").read_text().splitlines()) == sorted(
        expected["train-clean-100"].values()
    )
    tok = Tokenizer.from_dir(lang)
    assert tok.blank_id == 0 and tok.vocab_size == 40
    lexicon = read_lexicon(lang / "lexicon.txt")
    assert "QUILTER" not in lexicon and "WASN'T" in lexicon  # dev words are not in the lexicon
    for text in expected["train-clean-100"].values():
        assert tok.decode(tok.encode(text)) == text


def test_fbank(prepared):
    from lhotse import CutSet

    data, expected, *_ = prepared
    for part in expected:
        cuts = CutSet.from_file(data / "fbank" / f"librispeech_cuts_{part}.jsonl.gz")
        assert len(cuts) == len(expected[part])
        for cut in cuts:
            assert cut.has_features and cut.load_features().shape == (cut.num_frames, 80)


def test_rerun_is_idempotent(prepared):
    data, _, _, args = prepared
    cuts = data / "manifests" / "librispeech_cuts_train-clean-100.jsonl.gz"
    model = data / "lang_bpe_40" / "bpe.model"
    before = cuts.stat().st_mtime_ns, model.stat().st_mtime_ns
    out = run("--stage", "1", "--stop-stage", "2", *args)
    assert "manifests exist; skipping" in out and "skipping the BPE model (use --force)" in out
    assert (cuts.stat().st_mtime_ns, model.stat().st_mtime_ns) == before
