"""Tests for asr_kd.data.augment: SpecAugment masks, time warp, speed perturbation, noise mixing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lhotse import CutSet

from asr_kd.data.augment import (
    SpecAugment,
    make_noise_mixer,
    sample_spans,
    speed_perturb,
    time_warp,
)
from asr_kd.testing import make_cut, make_noise_cut

SENTINEL = -1000.0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(lens=(120, 73, 200), num_features=80, seed=0):
    g = _gen(seed)
    x = torch.randn(len(lens), max(lens), num_features, generator=g)
    return x, torch.tensor(lens)


# ---------------------------------------------------------------------- spans
@pytest.mark.parametrize("seed", range(5))
def test_sample_spans_count_width_and_range(seed):
    spans = sample_spans(7, max_width=12, size=50, generator=_gen(seed))
    assert len(spans) == 7
    for start, width in spans:
        assert 0 <= width <= 12
        assert 0 <= start and start + width <= 50


def test_sample_spans_width_limited_by_size():
    spans = sample_spans(20, max_width=100, size=5, generator=_gen(0))
    assert all(w <= 5 and s + w <= 5 for s, w in spans)


def test_time_mask_width_is_proportional_to_length():
    aug = SpecAugment(time_mask_ratio=0.05, max_time_mask_width=100)
    assert aug.max_time_mask_width_for(100) == 5
    assert aug.max_time_mask_width_for(1000) == 50
    assert aug.max_time_mask_width_for(5000) == 100  # the absolute cap
    for T in (40, 100, 700):
        plan = aug.sample(T, 80, _gen(T))
        assert len(plan.time_spans) == 10 and len(plan.freq_spans) == 2
        assert all(w <= math.floor(0.05 * T) for _, w in plan.time_spans)
        assert all(w <= 27 for _, w in plan.freq_spans)


# ---------------------------------------------------------------------- masking
def test_masks_are_exactly_the_planned_spans_and_padding_is_untouched():
    aug = SpecAugment(
        time_warp=0,
        p=1.0,
        mask_value=SENTINEL,
        freq_mask_width=10,
        num_freq_masks=3,
        num_time_masks=4,
        time_mask_ratio=0.1,
    )
    x, lens = _batch()
    g = _gen(123)
    plans = [aug.sample(int(L), x.size(2), g) for L in lens]
    out = aug(x, lens, generator=_gen(123))

    for i, (L, plan) in enumerate(zip(lens.tolist(), plans)):
        expected = x[i].clone()
        for s, w in plan.freq_spans:
            expected[:L, s : s + w] = SENTINEL
        for s, w in plan.time_spans:
            expected[s : s + w, :] = SENTINEL
        torch.testing.assert_close(out[i], expected, rtol=0, atol=0)
        # padding frames keep their values
        torch.testing.assert_close(out[i, L:], x[i, L:], rtol=0, atol=0)
    # the input is not modified
    assert not (x == SENTINEL).any()


def test_mean_mask_value_is_the_utterance_mean():
    aug = SpecAugment(time_warp=0, p=1.0, num_freq_masks=1, freq_mask_width=20, num_time_masks=0)
    x, lens = _batch(lens=(90,), seed=4)
    x = x + 5.0
    plan = aug.sample(90, x.size(2), _gen(9))
    out = aug(x, lens, generator=_gen(9))
    s, w = plan.freq_spans[0]
    if w > 0:
        assert torch.allclose(out[0, :, s : s + w], x[0].mean().expand(90, w))


def test_deterministic_given_a_seed():
    aug = SpecAugment(p=1.0)
    x, lens = _batch(lens=(300, 250), seed=1)
    a = aug(x, lens, generator=_gen(5))
    b = aug(x, lens, generator=_gen(5))
    c = aug(x, lens, generator=_gen(6))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_p_zero_is_identity():
    x, lens = _batch()
    torch.testing.assert_close(SpecAugment(p=0.0)(x, lens), x, rtol=0, atol=0)


# ---------------------------------------------------------------------- time warp
def test_time_warp_moves_the_centre_and_keeps_shape():
    T = 100
    x = torch.arange(T, dtype=torch.float32)[:, None].repeat(1, 3)  # value = frame index
    torch.testing.assert_close(time_warp(x, 40, 40), x)
    y = time_warp(x, 40, 55)
    assert y.shape == (T, 3)
    assert torch.all(y[1:, 0] >= y[:-1, 0])  # still monotonic in time
    # frame 55 of the output shows (about) the content of frame 40 of the input
    assert abs(y[55, 0].item() - 40.0) < 1.0
    assert abs(y[0, 0].item()) < 1.0 and abs(y[-1, 0].item() - (T - 1)) < 1.0


def test_time_warp_only_touches_valid_frames():
    aug = SpecAugment(time_warp=10, p=1.0, num_freq_masks=0, num_time_masks=0)
    x, lens = _batch(lens=(100, 40))
    out = aug(x, lens, generator=_gen(0))
    torch.testing.assert_close(out[1, 40:], x[1, 40:], rtol=0, atol=0)
    plan = aug.sample(100, 80, _gen(0))
    assert plan.warp is not None and abs(plan.warp[1] - plan.warp[0]) <= 10
    # an utterance too short for W=10 (T <= 2W+1) is never warped
    assert aug.sample(21, 80, _gen(0)).warp is None


# ---------------------------------------------------------------------- cut-level
def test_speed_perturb_adds_scaled_copies(dummy_cuts):
    cuts = dummy_cuts.subset(first=3)
    out = list(speed_perturb(cuts, (0.9, 1.1), seed=0))
    assert len(out) == 9
    by_id = {c.id: c for c in out}
    for c in cuts:
        for f in (0.9, 1.1):
            p = by_id[f"{c.id}_sp{f}"]
            assert p.duration == pytest.approx(c.duration / f, abs=1e-3)
            audio = p.load_audio()
            assert audio.shape[1] == pytest.approx(p.duration * 16000, abs=2)
        assert by_id[c.id].duration == c.duration
    # randomly interleaved, not three blocks
    assert [c.id for c in out][:3] != list(cuts.ids)


def test_noise_mixer_preserves_ids_and_hits_the_snr(tmp_path):
    speech = make_cut(tmp_path, "utt", duration=1.5, freq=300.0, seed=1)
    noise = make_noise_cut(tmp_path, "noise", duration=1.0)  # shorter: gets repeated
    mixer = make_noise_mixer(CutSet.from_cuts([noise]), snr=(10.0, 10.0), p=1.0, seed=0)
    mixed = mixer(CutSet.from_cuts([speech]))[0]
    assert mixed.id == "utt" and mixed.duration == pytest.approx(speech.duration)
    assert [s.text for s in mixed.supervisions] == [speech.supervisions[0].text]
    clean = speech.load_audio()[0]
    residual = mixed.load_audio()[0] - clean
    snr = 10 * np.log10(np.sum(clean**2) / np.sum(residual**2))
    assert snr == pytest.approx(10.0, abs=0.5)
    # the 1 s noise is repeated over the 1.5 s cut, not padded with silence
    first, second = residual[:16000], residual[16000:22400]
    assert np.mean(second**2) > 0.5 * np.mean(first**2)
