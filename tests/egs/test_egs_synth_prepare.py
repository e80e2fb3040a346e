"""End-to-end test of egs/synth/ASR/prepare.sh --size tiny (stages 0-4).

Needs espeak-ng, sox and the two text .debs (cached in egs/synth/ASR/download/, fetched with
``apt-get download`` on first use).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from asr_kd.corpus import voices as V
from asr_kd.corpus.synth import SIZES

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "egs" / "synth" / "ASR" / "prepare.sh"

# ~25 s of CPU, but well over a minute of wall time on a busy 2-core machine
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("espeak-ng", "sox", "dpkg-deb", "apt-get")),
        reason="needs espeak-ng, sox and apt-get/dpkg-deb",
    ),
]


def run(*args: str) -> str:
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data = tmp_path_factory.mktemp("synth") / "data"
    out = run("--size", "tiny", "--stop-stage", "4", "--vocab-size", "200", "--data-dir", str(data))
    return data, out


def test_usage():
    out = run("--help")
    assert "--stage" in out and "--size tiny" in out and "bash egs/synth/ASR/prepare.sh" in out


def test_manifests_validate(tiny):
    from lhotse import CutSet, RecordingSet, SupervisionSet
    from lhotse.qa import validate, validate_recordings_and_supervisions

    data, _ = tiny
    m = data / "manifests"
    for split, n in SIZES["tiny"].items():
        recs = RecordingSet.from_file(m / f"synth_recordings_{split}.jsonl.gz")
        sups = SupervisionSet.from_file(m / f"synth_supervisions_{split}.jsonl.gz")
        cuts = CutSet.from_file(m / f"synth_cuts_{split}.jsonl.gz")
        validate_recordings_and_supervisions(recs, sups)
        validate(cuts, read_data=False)
        assert len(recs) == len(sups) == len(cuts) == n
        cut = cuts[0]
        assert cut.sampling_rate == 16000 and cut.num_channels == 1
        assert cut.load_audio().shape[1] == cut.recording.num_samples


def _sups(data, split):
    from lhotse import SupervisionSet

    return list(SupervisionSet.from_file(data / "manifests" / f"synth_supervisions_{split}.jsonl.gz"))


def test_no_eval_sentence_in_train(tiny):
    data, _ = tiny
    train = {s.text for s in _sups(data, "train")}
    for split in ("dev", "test"):
        texts = [s.text for s in _sups(data, split)]
        assert len(set(texts)) == len(texts)
        assert not set(texts) & train
    # and on the level of the whole text split too
    lines = lambda name: set((data / "text" / f"{name}.txt").read_text().splitlines())  # noqa: E731
    assert not lines("train") & lines("dev") and not lines("train") & lines("test")


def test_heldout_voices_not_in_train(tiny):
    data, _ = tiny
    train_voices = {s.speaker for s in _sups(data, "train")}
    assert train_voices <= set(V.train_voices()) and len(train_voices) > 50
    for split in ("dev", "test"):
        voices = {s.speaker for s in _sups(data, split)}
        assert voices <= set(V.heldout_voices())
        assert not voices & train_voices


def test_bpe_model(tiny):
    from asr_kd.data.tokenizer import Tokenizer

    data, _ = tiny
    lang = data / "lang_bpe_200"
    tok = Tokenizer.from_dir(lang)
    assert tok.vocab_size == 200 and tok.blank_id == 0
    for name in ("tokens.txt", "words.txt", "lexicon.txt", "lexicon_char.txt", "transcript_words.txt"):
        assert (lang / name).is_file()
    for s in _sups(data, "train")[:20]:
        assert tok.decode(tok.encode(s.text)) == s.text


def test_rerun_skips_finished_stages(tiny):
    data, _ = tiny
    model = data / "lang_bpe_200" / "bpe.model"
    mtime = model.stat().st_mtime_ns
    out = run("--size", "tiny", "--stage", "1", "--stop-stage", "3", "--data-dir", str(data))
    assert out.count("skipping") == 3
    run("--size", "tiny", "--stage", "4", "--stop-stage", "4", "--vocab-size", "200", "--data-dir", str(data))
    assert model.stat().st_mtime_ns == mtime


@pytest.mark.filterwarnings("ignore:You are using DynamicBucketingSampler")
def test_train_dataloader_yields_padded_fbank_batches(tiny):
    """The issue's 'done when': prepare.sh --size tiny -> a DataLoader yields padded fbank batches."""
    from lhotse import CutSet
    from lhotse.utils import LOG_EPSILON

    from asr_kd.data import AsrDataConfig, AsrDataModule
    from asr_kd.data.features import num_frames
    from asr_kd.data.tokenizer import Tokenizer

    data, _ = tiny
    tok = Tokenizer.from_dir(data / "lang_bpe_200")
    cuts = CutSet.from_file(data / "manifests" / "synth_cuts_train.jsonl.gz")
    by_id = {c.id: c for c in cuts}
    dm = AsrDataModule(
        AsrDataConfig(max_duration=40.0, num_workers=0, spec_augment=False, drop_last=False), tokenizer=tok
    )
    seen = []
    for batch in dm.train_dataloader(cuts):
        x, lens, sup = batch["inputs"], batch["feature_lens"], batch["supervisions"]
        n = len(sup["cut_id"])
        assert x.shape == (n, int(lens.max()), 80) and x.dtype == torch.float32 and torch.isfinite(x).all()
        for i, cut_id in enumerate(sup["cut_id"]):
            assert lens[i] == num_frames(by_id[cut_id].duration)
            assert torch.allclose(x[i, lens[i] :], torch.tensor(LOG_EPSILON))  # lhotse's fbank padding, log(1e-10)
            assert sup["tokens"][i] == tok.encode(by_id[cut_id].supervisions[0].text)
        seen.extend(sup["cut_id"])
    assert sorted(seen) == sorted(by_id)  # one epoch covers every cut once, none dropped
