"""Tests for asr_kd.corpus.voices."""

from __future__ import annotations

import shutil

import pytest

from asr_kd.corpus import voices as V


def test_pools_are_disjoint_and_cover_the_holdout_rule():
    train, held = set(V.train_voices()), set(V.heldout_voices())
    assert not train & held
    assert len(train) == len(V.TRAIN_ACCENTS) * (len(V.VARIANTS) - len(V.HELDOUT_VARIANTS))
    assert len(train) >= 100  # dozens of training voices at least
    for voice in train:
        accent, variant = V.parse_voice(voice)
        assert accent in V.TRAIN_ACCENTS and variant not in V.HELDOUT_VARIANTS
    for voice in held:
        accent, variant = V.parse_voice(voice)
        assert accent in V.HELDOUT_ACCENTS or variant in V.HELDOUT_VARIANTS
    # every held-out accent is paired with every variant, every held-out variant with every accent
    assert {V.parse_voice(v)[0] for v in held} == set(V.TRAIN_ACCENTS + V.HELDOUT_ACCENTS)
    assert set(V.HELDOUT_VARIANTS) <= set(V.VARIANTS)
    assert not set(V.HELDOUT_ACCENTS) & set(V.TRAIN_ACCENTS)


def test_voices_for_split():
    assert V.voices_for_split("train") == V.train_voices()
    assert V.voices_for_split("dev") == V.voices_for_split("test") == V.heldout_voices()
    assert V.voice_name("en-us", "f3") == "en-us+f3"
    assert V.parse_voice("en-gb-x-rp+klatt2") == ("en-gb-x-rp", "klatt2")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_all_listed_voices_are_installed():
    V.check_voices()
