"""The train CLI on corpora with bad cuts: ``data.on_error`` covers text, audio and dev cuts; every
dropped cut is counted by reason in the final summary, the ``done:`` dict and tensorboard; a bad dev
cut cannot cost the step's checkpoint."""

from __future__ import annotations

import logging

import pytest
import torch
from lhotse import CutSet

from asr_kd.data.validation import BadCutError
from asr_kd.testing import make_cut
from asr_kd.testing.recipe import make_toy_recipe


def _add_cuts(root, split: str, cuts) -> None:
    """Append ``cuts`` to the toy recipe's ``<split>`` manifest."""
    path = root / "data" / "manifests" / f"toy_cuts_{split}.jsonl.gz"
    CutSet.from_cuts([*CutSet.from_file(path), *cuts]).to_file(path)


@pytest.fixture
def bad_text_recipe(tmp_path):
    """The toy recipe plus three train cuts with an empty, a Chinese and an emoji transcript."""
    root = tmp_path / "recipe"
    conf = make_toy_recipe(root)
    audio = root / "audio"
    _add_cuts(
        root,
        "train",
        [
            make_cut(audio, "bad-empty", duration=1.4, text=""),
            make_cut(audio, "bad-chinese", duration=1.4, text="你好 世界"),
            make_cut(audio, "bad-emoji", duration=1.4, text="THE DOG 🐶"),
        ],
    )
    return conf


def test_on_error_skip_covers_bad_text(bad_text_recipe, tmp_path, caplog):
    """data.on_error=skip: the three bad transcripts are dropped, counted and named, training runs;
    data.on_error=raise: BadCutError at start-up, naming the cut."""
    from asr_kd.bin import train

    conf = str(bad_text_recipe)
    with pytest.raises(BadCutError, match="bad-(empty|chinese|emoji).*(empty_text|untokenizable)"):
        train.main(["--config", conf, "--exp-dir", str(tmp_path / "raise"), "--max-steps", "1"])
    exp = tmp_path / "skip"
    with caplog.at_level(logging.INFO):
        assert train.main(["--config", conf, "--exp-dir", str(exp), "--max-steps", "2", "data.on_error=skip"]) == 0
    log = (exp / "train.log").read_text()
    for cut_id, reason in (
        ("bad-empty", "empty_text"),
        ("bad-chinese", "untokenizable"),
        ("bad-emoji", "untokenizable"),
    ):
        assert f"dropping cut {cut_id} ({reason})" in log
    assert torch.load(exp / "checkpoint-2.pt", weights_only=True)["step"] == 2
