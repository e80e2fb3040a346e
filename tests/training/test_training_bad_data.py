"""The train CLI on corpora with bad cuts: ``data.on_error`` covers text, audio and dev cuts; every
dropped cut is counted by reason in the final summary, the ``done:`` dict and tensorboard; a bad dev
cut cannot cost the step's checkpoint."""

from __future__ import annotations

import logging

import pytest
import torch
from lhotse import CutSet

from asr_kd.data.validation import BadCutError
from asr_kd.testing import garbage_audio, make_cut
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


def _scalars(tb_dir) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar in a tensorboard log directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_dropped_cuts_are_counted_by_reason_across_the_run(tmp_path, capsys):
    """A too-long cut (filter), an emoji transcript (text) and a corrupt wav (on-the-fly audio error):
    each is counted once under its reason, in the printed summary, the ``done:`` dict, the checkpoint
    (the counts survive a resume) and tensorboard."""
    from asr_kd.bin import train

    root = tmp_path / "recipe"
    conf = str(make_toy_recipe(root))
    audio = root / "audio"
    _add_cuts(
        root,
        "train",
        [
            make_cut(audio, "bad-long", duration=3.0),
            make_cut(audio, "bad-emoji", duration=1.4, text="THE DOG 🐶"),
            garbage_audio(make_cut(audio, "bad-wav", duration=1.4)),
        ],
    )
    exp = tmp_path / "exp"
    common = ["--config", conf, "--exp-dir", str(exp), "data.on_error=skip", "data.max_cut_duration=2.5"]
    assert train.main([*common, "--max-steps", "3"]) == 0
    assert train.main([*common, "--max-steps", "8"]) == 0  # resumed: 3 more epochs over the bad wav
    expected = {"train filters": {"too_long": 1, "untokenizable": 1}, "train batches": {"corrupt_audio": 1}}
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert "3 cuts dropped (train filters: too_long=1, untokenizable=1; train batches: corrupt_audio=1)" in out
    done = [ln for ln in (exp / "train.log").read_text().splitlines() if "done: " in ln][-1]
    assert f"'num_dropped_cuts': 3, 'dropped_cuts': {expected!r}" in done
    ck = torch.load(exp / "checkpoint-8.pt", weights_only=True)
    assert ck["meta"]["skipped_cuts"]["train"] == [["bad-wav", "corrupt_audio"]]
    scalars = _scalars(exp / "tensorboard")
    assert scalars["data/dropped_cuts"][-1] == (8, 3.0)
    assert scalars["data/dropped/corrupt_audio"][-1] == (8, 1.0)
    assert scalars["data/dropped/too_long"][-1] == (8, 1.0)


def test_bad_dev_cut_raise_keeps_the_checkpoint_skip_validates_the_rest(tmp_path):
    """A corrupt dev wav. on_error=raise: validation at step 2 fails naming the cut, but
    checkpoint-2.pt is already written. on_error=skip: the dev cut is skipped, counted, and the
    validation loss is over the good dev cuts."""
    from asr_kd.bin import train

    root = tmp_path / "recipe"
    conf = str(make_toy_recipe(root))
    _add_cuts(root, "dev", [garbage_audio(make_cut(root / "audio", "dev-bad-wav", duration=1.5))])
    overrides = ["data.max_valid_cuts=0", "training.valid_interval=2", "training.ckpt_interval=2"]
    exp = tmp_path / "raise"
    with pytest.raises(BadCutError, match="dev-bad-wav.*corrupt_audio"):
        train.main(["--config", conf, "--exp-dir", str(exp), "--max-steps", "4", *overrides])
    assert torch.load(exp / "checkpoint-2.pt", weights_only=True)["step"] == 2

    exp = tmp_path / "skip"
    args = ["--config", conf, "--exp-dir", str(exp), "--max-steps", "2", *overrides, "data.on_error=skip"]
    assert train.main(args) == 0
    ck = torch.load(exp / "checkpoint-2.pt", weights_only=True)
    assert ck["meta"]["skipped_cuts"]["valid"] == [["dev-bad-wav", "corrupt_audio"]]
    assert ck["meta"]["last_valid"]["loss"] > 0
    done = [ln for ln in (exp / "train.log").read_text().splitlines() if "done: " in ln][-1]
    assert "'valid batches': {'corrupt_audio': 1}" in done
