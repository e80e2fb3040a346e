"""The helpers several CLIs share (asr_kd.bin._common): the cut-manifest check, the one-line refusal."""

from __future__ import annotations

import re

import pytest

from asr_kd.bin._common import cut_manifests, refuse


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
