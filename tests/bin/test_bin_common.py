"""The helpers several CLIs share (asr_kd.bin._common): the cut-manifest check, the one-line refusal,
the newest results.jsonl row."""

from __future__ import annotations

import json
import re

import pytest

from asr_kd.bin._common import cut_manifests, latest_result, refuse, results_file
from asr_kd.training.metrics import MetricsError


def test_cut_manifests_in_split_order_or_the_first_missing_one_named(tmp_path):
    for split in ("train", "dev"):
        (tmp_path / f"toy_cuts_{split}.jsonl.gz").write_bytes(b"")
    paths = cut_manifests(tmp_path, "toy", ["dev", "train"])
    assert list(paths) == ["dev", "train"]
    assert paths == {s: tmp_path / f"toy_cuts_{s}.jsonl.gz" for s in ("dev", "train")}
    assert cut_manifests(str(tmp_path), "toy", iter(["train"])) == {"train": tmp_path / "toy_cuts_train.jsonl.gz"}
    assert cut_manifests(tmp_path, "toy", []) == {}
    missing = tmp_path / "toy_cuts_test.jsonl.gz"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing} not found") + r".*--manifest-dir/--prefix"):
        cut_manifests(tmp_path, "toy", ["train", "test", "nope"])  # the first missing one
    (tmp_path / "toy_cuts_dir.jsonl.gz").mkdir()
    with pytest.raises(FileNotFoundError, match="toy_cuts_dir.jsonl.gz not found"):
        cut_manifests(tmp_path, "toy", ["dir"])  # a directory is not a manifest
    with pytest.raises(FileNotFoundError, match="other_cuts_train.jsonl.gz not found"):
        cut_manifests(tmp_path, "other", ["train"])


def test_refuse_prints_one_line_on_stderr_and_returns_1(capsys):
    assert refuse("prepare_lang", "--text /x/t.txt: not found") == 1
    assert refuse("compile_hlg", FileNotFoundError("/x/lexicon.txt not found")) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "prepare_lang: --text /x/t.txt: not found\ncompile_hlg: /x/lexicon.txt not found\n"


def _results(path, rows, extra_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(extra_lines))


def test_latest_result_is_the_newest_row_of_the_split_and_method(tmp_path):
    res = tmp_path / "decode"
    rows = [
        {"split": "test", "method": "modified-beam_beam-4", "wer": 30.0},
        {"split": "dev", "method": "ctc-greedy", "wer": 40.0},
        {"split": "test", "method": "modified-beam_beam-4", "wer": 27.0},
        {"split": "test", "method": "modified-beam_beam-8", "wer": 26.0},
        {"split": "test", "method": "ctc-greedy", "wer": 35.0},
    ]
    _results(res / "results.jsonl", rows, ["\n"])  # a blank line is skipped
    assert results_file(res) == res / "results.jsonl" == results_file(res / "results.jsonl")
    assert latest_result(res, "test", "modified-beam") == rows[3]  # the name before "_": the newest of both beams
    assert latest_result(res, "test", "modified-beam_beam-4") == rows[2]  # the full suffix
    assert latest_result(str(res / "results.jsonl"), "test", "ctc-greedy") == rows[4]  # the file itself
    assert latest_result(res, "test") == rows[4] and latest_result(res, "dev") == rows[1]  # no method: any
    with pytest.raises(MetricsError, match=r"no result for split 'dev' and method 'modified-beam'; has \[.*'dev/ctc-g"):
        latest_result(res, "dev", "modified-beam")
    with pytest.raises(MetricsError, match=r"no result for split 'train'; has "):
        latest_result(res, "train")
    with pytest.raises(MetricsError, match="no result for split 'test' and method 'modified';"):
        latest_result(res, "test", "modified")  # a prefix of the name is not the name


def test_latest_result_names_a_missing_file_or_a_bad_line(tmp_path):
    missing = tmp_path / "none" / "results.jsonl"
    with pytest.raises(MetricsError, match=re.escape(f"{missing} not found: decode first")):
        latest_result(tmp_path / "none", "test")
    bad = tmp_path / "bad.jsonl"
    _results(bad, [{"split": "test", "method": "ctc-greedy", "wer": 1.0}], ["{not json\n"])
    with pytest.raises(MetricsError, match=re.escape(f"{bad}:2: not a JSON row")):
        latest_result(bad, "test")
