"""Tests for asr_kd.corpus.stats and asr_kd.corpus.transcripts."""

from __future__ import annotations

import pytest

lhotse = pytest.importorskip("lhotse")
from lhotse import SupervisionSegment, SupervisionSet  # noqa: E402

from asr_kd.corpus import stats as ST  # noqa: E402
from asr_kd.corpus import transcripts as TR  # noqa: E402


def sup(i, text, dur, voice):
    return SupervisionSegment(
        id=f"u{i}",
        recording_id=f"u{i}",
        start=0,
        duration=dur,
        text=text,
        speaker=voice,
        custom={"accent": voice.split("+")[0]},
    )


@pytest.fixture
def manifest_dir(tmp_path):
    train = [sup(0, "A B C", 2.0, "en-us+m1"), sup(1, "A B D", 4.0, "en-gb+f1"), sup(2, "A B C", 3.0, "en-us+m1")]
    dev = [sup(3, "A X", 1.0, "en-029+m4"), sup(4, "C D E F", 2.0, "en-us+m4")]
    SupervisionSet.from_segments(train).to_file(tmp_path / "synth_supervisions_train.jsonl.gz")
    SupervisionSet.from_segments(dev).to_file(tmp_path / "synth_supervisions_dev.jsonl.gz")
    return tmp_path


def test_split_stats_and_oov(manifest_dir):
    stats = ST.load(manifest_dir, "synth")
    assert [s.name for s in stats] == ["train", "dev"]
    train, dev = stats
    assert train.num_utts == 3 and train.hours == pytest.approx(9.0 / 3600)
    assert train.speakers == {"en-us+m1", "en-gb+f1"} and train.accents == {"en-us", "en-gb"}
    assert train.vocab == {"A", "B", "C", "D"} and len(train.words) == 9
    # dev running words: A X C D E F -> X, E, F are OOV
    assert ST.oov_rate(dev.words, train.vocab) == pytest.approx(3 / 6)


def test_markdown_table(manifest_dir):
    table = ST.markdown_table(ST.load(manifest_dir, "synth"))
    lines = table.splitlines()
    assert lines[0] == "| | train | dev |"
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[2:]}
    assert rows["utterances"] == ["3", "2"]
    assert rows["mean duration (s)"] == ["3.00", "1.50"]
    assert rows["voices (speakers)"] == ["2", "2"]
    assert rows["distinct sentences"] == ["2", "2"]
    assert rows["OOV rate w.r.t. train (running words)"] == ["-", "50.00 %"]
    assert rows["OOV word types w.r.t. train"] == ["-", "3"]
    assert rows["sentences also in train"] == ["-", "0"]
    assert rows["voices also in train"] == ["-", "0"]


def test_stats_cli(manifest_dir, capsys):
    assert ST.main([str(manifest_dir)]) == 0
    assert "| hours |" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        ST.load(manifest_dir, "librispeech")


def test_transcripts_write_only_when_changed(manifest_dir, tmp_path):
    out = tmp_path / "lang" / "transcript_words.txt"
    texts = TR.transcripts([manifest_dir / "synth_supervisions_train.jsonl.gz"])
    assert texts == ["A B C", "A B D", "A B C"]
    assert TR.write_if_changed(out, texts) is True
    mtime = out.stat().st_mtime_ns
    assert TR.main([str(manifest_dir / "synth_supervisions_train.jsonl.gz"), "--out", str(out)]) == 0
    assert out.stat().st_mtime_ns == mtime
    TR.main(
        [
            str(manifest_dir / "synth_supervisions_train.jsonl.gz"),
            str(manifest_dir / "synth_supervisions_dev.jsonl.gz"),
            "--out",
            str(out),
        ]
    )
    assert out.read_text().splitlines() == texts + ["A X", "C D E F"]
