"""Bad inputs, in both modes, in the up-front pass (validate_cuts) and inside the dataset."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch
from lhotse import CutSet, LilcomFilesWriter
from lhotse.dataset.input_strategies import OnTheFlyFeatures, PrecomputedFeatures

from asr_kd.data.dataset import AsrDataset
from asr_kd.data.features import make_fbank
from asr_kd.data.validation import (
    BAD_FEATURES,
    CORRUPT_AUDIO,
    EMPTY_TEXT,
    MISSING_AUDIO,
    NO_SUPERVISION,
    UNTOKENIZABLE,
    BadCutError,
    check_cut,
    validate_cuts,
)
from asr_kd.testing import (
    garbage_audio,
    make_cut,
    make_cutset,
    missing_audio,
    truncated_audio,
    with_text,
)

BAD_ID = "bad-cut"

# case name -> (how to break a fresh cut, expected reason)
CASES = {
    "missing_file": (missing_audio, MISSING_AUDIO),
    "garbage_bytes": (garbage_audio, CORRUPT_AUDIO),
    "truncated_wav": (truncated_audio, CORRUPT_AUDIO),
    "empty_text": (lambda c: with_text(c, "  \t "), EMPTY_TEXT),
    "untokenizable": (lambda c: with_text(c, "ROOM 101 IS READY"), UNTOKENIZABLE),
    "no_supervision": (lambda c: replace(c, supervisions=[]), NO_SUPERVISION),
}


@pytest.fixture
def good_cuts(tmp_path):
    return make_cutset(tmp_path / "good", [1.0, 1.4, 0.8])


def _bad_cut(tmp_path, case):
    breaker, reason = CASES[case]
    return breaker(make_cut(tmp_path / "bad", BAD_ID, duration=1.2, seed=11)), reason


def _with_bad(good_cuts, bad):
    return CutSet.from_cuts([*good_cuts, bad])


# ---------------------------------------------------------------------- single-cut checks
@pytest.mark.parametrize("case", CASES)
def test_check_cut_names_the_cut_and_the_problem(tmp_path, case, tiny_tokenizer):
    bad, reason = _bad_cut(tmp_path, case)
    with pytest.raises(BadCutError) as info:
        check_cut(bad, tiny_tokenizer)
    assert info.value.cut_id == BAD_ID and info.value.reason == reason
    assert str(info.value).startswith(f"bad cut '{BAD_ID}': {reason}")


def test_error_messages_say_what_is_wrong(tmp_path, tiny_tokenizer):
    def message(case):
        with pytest.raises(BadCutError) as info:
            check_cut(_bad_cut(tmp_path / case, case)[0], tiny_tokenizer)
        return str(info.value)

    assert "no such file" in message("missing_file")
    assert "Format not recognised" in message("garbage_bytes")
    assert "manifest declares 19200" in message("truncated_wav")
    assert "'0'" in message("untokenizable") and "'1'" in message("untokenizable")


def test_exists_mode_only_checks_files(tmp_path):
    truncated, _ = _bad_cut(tmp_path / "t", "truncated_wav")
    check_cut(truncated, audio="exists")  # not decoded: passes
    missing, _ = _bad_cut(tmp_path / "m", "missing_file")
    with pytest.raises(BadCutError, match=MISSING_AUDIO):
        check_cut(missing, audio="exists")


# ---------------------------------------------------------------------- up-front pass
@pytest.mark.parametrize("case", CASES)
def test_validate_cuts_raise(tmp_path, good_cuts, case, tiny_tokenizer):
    bad, reason = _bad_cut(tmp_path, case)
    with pytest.raises(BadCutError, match=f"'{BAD_ID}': {reason}"):
        validate_cuts(_with_bad(good_cuts, bad), tiny_tokenizer, on_error="raise")


@pytest.mark.parametrize("case", CASES)
def test_validate_cuts_skip_counts_and_logs(tmp_path, good_cuts, case, tiny_tokenizer, caplog):
    bad, reason = _bad_cut(tmp_path, case)
    from asr_kd.data.stats import FilterStats

    stats = FilterStats("validation")
    with caplog.at_level(logging.WARNING, logger="asr_kd"):
        kept = validate_cuts(_with_bad(good_cuts, bad), tiny_tokenizer, on_error="skip", stats=stats)
    assert list(kept.ids) == list(good_cuts.ids)
    assert stats.kept == 3 and dict(stats.dropped) == {reason: 1}
    assert stats.examples == {reason: [BAD_ID]}
    assert f"dropping cut {BAD_ID} ({reason})" in caplog.text
    assert "validation: kept 3 of 4 cuts; dropped 1" in caplog.text


def test_on_error_is_checked(good_cuts):
    with pytest.raises(ValueError, match="on_error"):
        validate_cuts(good_cuts, on_error="ignore")


# ---------------------------------------------------------------------- inside the dataset
@pytest.mark.parametrize("case", CASES)
def test_dataset_raise(tmp_path, good_cuts, case, tiny_tokenizer):
    bad, reason = _bad_cut(tmp_path, case)
    dataset = AsrDataset(tokenizer=tiny_tokenizer, on_error="raise")
    with pytest.raises(BadCutError) as info:
        dataset[_with_bad(good_cuts, bad)]
    assert (info.value.cut_id, info.value.reason) == (BAD_ID, reason)


@pytest.mark.parametrize("case", CASES)
def test_dataset_skip(tmp_path, good_cuts, case, tiny_tokenizer, caplog):
    bad, reason = _bad_cut(tmp_path, case)
    dataset = AsrDataset(tokenizer=tiny_tokenizer, on_error="skip", name="train")
    with caplog.at_level(logging.WARNING, logger="asr_kd"):
        batch = dataset[_with_bad(good_cuts, bad)]
    assert batch["skipped"] == [{"cut_id": BAD_ID, "reason": reason}]
    assert sorted(batch["supervisions"]["cut_id"]) == sorted(good_cuts.ids)
    assert dict(dataset.stats.dropped) == {reason: 1} and dataset.stats.kept == 3
    assert f"train: dropping cut {BAD_ID} ({reason})" in caplog.text
    # the surviving rows are exactly what a clean batch of the good cuts gives
    clean = AsrDataset(tokenizer=tiny_tokenizer)[good_cuts]
    assert batch["supervisions"]["cut_id"] == clean["supervisions"]["cut_id"]
    torch.testing.assert_close(batch["inputs"], clean["inputs"], rtol=0, atol=0)
    torch.testing.assert_close(batch["feature_lens"], clean["feature_lens"])
    assert batch["supervisions"]["tokens"] == clean["supervisions"]["tokens"]


def test_dataset_with_lhotse_fault_tolerant_strategy_still_names_drops(tmp_path, good_cuts):
    bad, _ = _bad_cut(tmp_path, "garbage_bytes")
    strategy = OnTheFlyFeatures(make_fbank(), fault_tolerant=True)
    dataset = AsrDataset(strategy, on_error="skip")
    batch = dataset[_with_bad(good_cuts, bad)]
    assert batch["skipped"] == [{"cut_id": BAD_ID, "reason": CORRUPT_AUDIO}]
    assert dataset.stats.dropped[CORRUPT_AUDIO] == 1
    with pytest.raises(BadCutError, match=BAD_ID):
        AsrDataset(strategy, on_error="raise")[_with_bad(good_cuts, bad)]


def test_dataset_all_cuts_bad_gives_an_empty_batch(tmp_path):
    cuts = CutSet.from_cuts([_bad_cut(tmp_path / str(i), "missing_file")[0] for i in range(1)])
    batch = AsrDataset(on_error="skip")[cuts]
    assert batch["inputs"].shape == (0, 0, 80)
    assert batch["feature_lens"].shape == (0,)
    assert batch["supervisions"]["cut_id"] == []
    assert batch["skipped"] == [{"cut_id": BAD_ID, "reason": MISSING_AUDIO}]


def test_dataset_precomputed_features_missing(tmp_path, good_cuts):
    cuts = _with_bad(good_cuts, make_cut(tmp_path / "bad", BAD_ID, duration=1.2))
    cuts = cuts.compute_and_store_features(  # one file per cut
        make_fbank(), tmp_path / "feats", storage_type=LilcomFilesWriter, progress_bar=False
    )
    bad = cuts[BAD_ID]
    (tmp_path / "feats" / bad.features.storage_key).unlink()

    dataset = AsrDataset(PrecomputedFeatures(), on_error="skip")
    batch = dataset[cuts]
    assert batch["skipped"] == [{"cut_id": BAD_ID, "reason": BAD_FEATURES}]
    assert sorted(batch["supervisions"]["cut_id"]) == sorted(good_cuts.ids)
    with pytest.raises(BadCutError, match=f"'{BAD_ID}': {BAD_FEATURES}"):
        AsrDataset(PrecomputedFeatures())[cuts]
    with pytest.raises(BadCutError, match=BAD_FEATURES):
        check_cut(bad, audio="none", features=True)


def test_errors_cross_dataloader_workers(tmp_path, good_cuts):
    bad, _ = _bad_cut(tmp_path, "garbage_bytes")
    cuts = _with_bad(good_cuts, bad)

    def loader(on_error):
        return torch.utils.data.DataLoader(
            AsrDataset(on_error=on_error), sampler=[cuts], batch_size=None, num_workers=1
        )

    (batch,) = list(loader("skip"))
    assert batch["skipped"] == [{"cut_id": BAD_ID, "reason": CORRUPT_AUDIO}]
    with pytest.raises(BadCutError) as info:
        list(loader("raise"))
    assert (info.value.cut_id, info.value.reason) == (BAD_ID, CORRUPT_AUDIO)
