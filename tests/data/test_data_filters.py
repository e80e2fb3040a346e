"""Tests for asr_kd.data.filters and asr_kd.data.stats: every drop has a reason and a count."""

from __future__ import annotations

import logging

import pytest
import torch
from lhotse import CutSet

from asr_kd.data.filters import (
    TOO_FEW_FRAMES,
    TOO_LONG,
    TOO_SHORT,
    CutFilter,
    conv2d_subsampling_4,
    cut_num_frames,
    filter_cuts,
)
from asr_kd.data.stats import FilterStats
from asr_kd.data.validation import BadCutError
from asr_kd.testing import make_cut

LONG_TEXT = "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG AND SHE STRUCK HER HEAD"


def test_conv2d_subsampling_4_matches_a_real_conv_stack():
    # icefall's Conv2dSubsampling on the time axis: 3x3 conv stride 1, then two 3x3 convs stride 2
    convs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 1, 3, stride=(1, 1)),
        torch.nn.Conv2d(1, 1, 3, stride=(2, 2)),
        torch.nn.Conv2d(1, 1, 3, stride=(2, 2)),
    )
    for T in range(9, 80):
        with torch.no_grad():
            out = convs(torch.zeros(1, 1, T, 80))
        assert conv2d_subsampling_4(T) == out.size(2), T
    assert conv2d_subsampling_4(100) == 23
    assert conv2d_subsampling_4(8) == 0


@pytest.fixture
def mixed_cuts(tmp_path, tiny_tokenizer):
    cuts = [
        make_cut(tmp_path, "ok-1", duration=1.2),
        make_cut(tmp_path, "short", duration=0.3),
        make_cut(tmp_path, "long", duration=6.0),
        make_cut(tmp_path, "ok-2", duration=2.0, text="A STITCH IN TIME SAVES NINE"),
        # 0.7 s -> T = 70 -> T' = 16 frames, fewer than the tokens of LONG_TEXT
        make_cut(tmp_path, "dense", duration=0.7, text=LONG_TEXT),
    ]
    assert conv2d_subsampling_4(70) == 16 < len(tiny_tokenizer.encode(LONG_TEXT))
    return CutSet.from_cuts(cuts)


def test_filter_counts_each_reason_and_logs(mixed_cuts, tiny_tokenizer, caplog):
    f = CutFilter(min_duration=0.5, max_duration=5.0, tokenizer=tiny_tokenizer, name="train")
    with caplog.at_level(logging.INFO, logger="asr_kd"):
        kept = filter_cuts(mixed_cuts, f)
    assert list(kept.ids) == ["ok-1", "ok-2"]
    assert f.stats.kept == 2
    assert dict(f.stats.dropped) == {TOO_SHORT: 1, TOO_LONG: 1, TOO_FEW_FRAMES: 1}
    assert f.stats.examples == {TOO_SHORT: ["short"], TOO_LONG: ["long"], TOO_FEW_FRAMES: ["dense"]}
    text = caplog.text
    for cut_id in ("short", "long", "dense"):
        assert f"dropping cut {cut_id}" in text
    assert "train: kept 2 of 5 cuts; dropped 3 (too_few_frames=1, too_long=1, too_short=1)" in text


def test_subsampling_formula_is_a_parameter(mixed_cuts, tiny_tokenizer):
    f = CutFilter(
        min_duration=None, max_duration=None, tokenizer=tiny_tokenizer, subsampled_frames=lambda T: T
    )  # no subsampling: 70 frames > tokens
    assert len(filter_cuts(mixed_cuts, f)) == 5
    assert f.stats.num_dropped == 0


def test_without_tokenizer_only_empty_outputs_are_dropped(tmp_path):
    cuts = CutSet.from_cuts([make_cut(tmp_path, "tiny", duration=0.05), make_cut(tmp_path, "fine", duration=0.5)])
    assert cut_num_frames(cuts[0]) == 5 and conv2d_subsampling_4(5) < 1
    f = CutFilter(min_duration=None, max_duration=None)
    assert list(filter_cuts(cuts, f).ids) == ["fine"]
    assert dict(f.stats.dropped) == {TOO_FEW_FRAMES: 1}


def test_lazy_cutset_is_counted_while_iterated(mixed_cuts, tiny_tokenizer, tmp_path):
    path = tmp_path / "cuts.jsonl.gz"
    mixed_cuts.to_file(path)
    lazy = CutSet.from_jsonl_lazy(path)
    f = CutFilter(min_duration=0.5, max_duration=5.0, tokenizer=tiny_tokenizer)
    filtered = filter_cuts(lazy, f)
    assert f.stats.num_seen == 0  # nothing evaluated yet
    assert [c.id for c in filtered] == ["ok-1", "ok-2"]
    assert f.stats.num_seen == 5 and f.stats.num_dropped == 3


def test_untokenizable_text_is_an_error_not_a_silent_drop(tmp_path, tiny_tokenizer):
    cuts = CutSet.from_cuts([make_cut(tmp_path, "digits", duration=1.0, text="ROOM 101")])
    with pytest.raises(BadCutError, match="digits.*untokenizable"):
        filter_cuts(cuts, CutFilter(tokenizer=tiny_tokenizer))


def test_filter_stats_merge_and_dict():
    a, b = FilterStats("a", max_examples=2), FilterStats("b")
    a.keep(3)
    a.drop("x", "too_long")
    b.keep()
    for i in range(3):
        b.drop(f"y{i}", "too_long")
    b.drop("z", "empty_text")
    a.merge(b)
    assert a.as_dict() == {
        "name": "a",
        "kept": 4,
        "dropped": {"too_long": 4, "empty_text": 1},
        "examples": {"too_long": ["x", "y0"], "empty_text": ["z"]},
    }
    assert a.num_seen == 9


def test_filter_stats_add_skipped_counts_without_relogging(caplog):
    stats = FilterStats("train")
    with caplog.at_level(logging.INFO, logger="asr_kd"):
        stats.add_skipped([{"cut_id": "a", "reason": "corrupt_audio"}, {"cut_id": "b", "reason": "corrupt_audio"}])
    assert dict(stats.dropped) == {"corrupt_audio": 2}
    assert stats.examples == {"corrupt_audio": ["a", "b"]}
    assert caplog.text == ""


def test_filter_counts_each_cut_once_over_several_passes():
    """Samplers iterate the CutSet several times (bucket estimation, epochs): kept/dropped counts are
    per cut, not per pass, and the decision is stable."""
    import tempfile

    from asr_kd.data.filters import CutFilter
    from asr_kd.testing.dummies import make_cutset

    with tempfile.TemporaryDirectory() as d:
        cuts = make_cutset(d, [0.3, 1.2, 1.5, 2.0])
        f = CutFilter(min_duration=1.0, max_duration=None)
        for _ in range(3):
            kept = [c.id for c in cuts if f(c)]
            assert len(kept) == 3
        assert f.stats.kept == 3 and f.stats.num_dropped == 1 and f.stats.num_seen == 4


@pytest.mark.parametrize(
    "text,reason",
    [("", "empty_text"), ("   ", "empty_text"), ("你好 世界", "untokenizable"), ("THE DOG 🐶", "untokenizable")],
)
def test_bad_text_is_dropped_counted_and_named_with_skip(tmp_path, tiny_tokenizer, caplog, text, reason):
    """on_error="skip": an empty or unencodable transcript is a counted, logged drop, not a BadCutError;
    on_error="raise" (the default) still raises, naming the cut."""
    good = make_cut(tmp_path, "good", duration=1.5, text="THE DOG")
    bad = make_cut(tmp_path, "bad-text", duration=1.5, text=text)
    cuts = CutSet.from_cuts([good, bad])
    with pytest.raises(BadCutError, match=f"bad-text.*{reason}"):
        filter_cuts(cuts, CutFilter(tokenizer=tiny_tokenizer))
    f = CutFilter(tokenizer=tiny_tokenizer, on_error="skip", name="train filters")
    with caplog.at_level(logging.INFO, logger="asr_kd.data.stats"):
        kept = filter_cuts(cuts, f)
    assert list(kept.ids) == ["good"]
    assert f.stats.kept == 1 and dict(f.stats.dropped) == {reason: 1} and f.stats.examples[reason] == ["bad-text"]
    named = [r for r in caplog.records if "bad-text" in r.getMessage()]
    assert named and named[0].levelno == logging.WARNING and reason in named[0].getMessage()


def test_cut_filter_rejects_an_unknown_on_error():
    with pytest.raises(ValueError, match="on_error"):
        CutFilter(on_error="ignore")
