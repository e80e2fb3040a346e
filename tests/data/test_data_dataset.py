"""Tests for asr_kd.data.dataset.AsrDataset: the batch schema, values and options."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from lhotse import CutSet, LilcomChunkyWriter
from lhotse.dataset.input_strategies import PrecomputedFeatures

from asr_kd.data.augment import SpecAugment
from asr_kd.data.dataset import AsrDataset
from asr_kd.data.features import make_fbank, num_frames

LOG_EPS = math.log(1e-10)


def test_batch_shapes_and_values(dummy_cuts, tiny_tokenizer):
    batch = AsrDataset(tokenizer=tiny_tokenizer)[dummy_cuts]
    x, lens, sup = batch["inputs"], batch["feature_lens"], batch["supervisions"]
    N = len(dummy_cuts)
    by_id = {c.id: c for c in dummy_cuts}

    assert x.dtype == torch.float32 and lens.dtype == torch.int64
    assert x.shape == (N, max(lens), 80)
    assert len(sup["cut_id"]) == N and sorted(sup["cut_id"]) == sorted(by_id)
    durations = [by_id[i].duration for i in sup["cut_id"]]
    assert durations == sorted(durations, reverse=True)  # longest first
    assert lens.tolist() == [num_frames(d) for d in durations]
    assert lens.tolist() == sorted(lens.tolist(), reverse=True)

    extractor = make_fbank()
    for i, cut_id in enumerate(sup["cut_id"]):
        cut = by_id[cut_id]
        ref = extractor.extract(cut.load_audio()[0], cut.sampling_rate)
        L = int(lens[i])
        np.testing.assert_allclose(x[i, :L].numpy(), ref, atol=1e-5)
        assert torch.allclose(x[i, L:], torch.full_like(x[i, L:], LOG_EPS))  # padding
        assert sup["text"][i] == cut.supervisions[0].text
        assert sup["tokens"][i] == tiny_tokenizer.encode(cut.supervisions[0].text)
        assert sup["token_lens"][i] == len(sup["tokens"][i])
    assert batch["skipped"] == []
    assert "cuts" not in batch


def test_without_tokenizer_there_are_no_tokens(dummy_cuts):
    sup = AsrDataset()[dummy_cuts.subset(first=2)]["supervisions"]
    assert set(sup) == {"cut_id", "text"}


def test_return_cuts(dummy_cuts):
    batch = AsrDataset(return_cuts=True)[dummy_cuts.subset(first=3)]
    assert list(batch["cuts"].ids) == batch["supervisions"]["cut_id"]


def test_text_of_several_supervisions_is_joined_in_time_order(dummy_cuts):
    cut = dummy_cuts[0]
    s = cut.supervisions[0]
    cut = replace(
        cut,
        supervisions=[
            replace(s, id="b", start=0.5, duration=0.5, text="WORLD  AGAIN"),
            replace(s, id="a", start=0.0, duration=0.5, text=" HELLO"),
        ],
    )
    batch = AsrDataset()[CutSet.from_cuts([cut])]
    assert batch["supervisions"]["text"] == ["HELLO WORLD AGAIN"]


def test_precomputed_features_match_on_the_fly(dummy_cuts, tmp_path):
    stored = dummy_cuts.compute_and_store_features(
        make_fbank(), tmp_path / "feats", storage_type=LilcomChunkyWriter, progress_bar=False
    )
    a = AsrDataset(PrecomputedFeatures())[stored]
    b = AsrDataset()[dummy_cuts]
    assert a["supervisions"]["cut_id"] == b["supervisions"]["cut_id"]
    torch.testing.assert_close(a["feature_lens"], b["feature_lens"])
    # lilcom compression is lossy (about 0.1 dB)
    assert (a["inputs"] - b["inputs"]).abs().max() < 0.05


def test_spec_augment_changes_valid_frames_only(dummy_cuts):
    torch.manual_seed(0)
    clean = AsrDataset()[dummy_cuts]
    aug = AsrDataset(spec_augment=SpecAugment(p=1.0, time_warp=0, mask_value=-50.0))[dummy_cuts]
    torch.testing.assert_close(aug["feature_lens"], clean["feature_lens"])
    changed = aug["inputs"] != clean["inputs"]
    assert changed.any()
    for i, L in enumerate(clean["feature_lens"].tolist()):
        assert not changed[i, L:].any()
        assert torch.all(aug["inputs"][i][changed[i]] == -50.0)


def test_on_error_value_is_checked():
    with pytest.raises(ValueError, match="on_error"):
        AsrDataset(on_error="warn")
