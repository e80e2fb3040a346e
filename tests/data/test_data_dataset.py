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


def _stereo_cut(tmp_path, text: str = "THE DOG"):
    """A 2-channel 16-bit wav (different signals per channel) as the ``MultiCut`` Lhotse makes of it,
    with one supervision spanning both channels; returns ``(cut, samples (2, N) float32)``."""
    import soundfile as sf
    from lhotse import Recording, SupervisionSegment

    from asr_kd.testing import synth_signal

    samples = np.stack([synth_signal(1.2, freq=300.0, seed=1), synth_signal(1.2, freq=700.0, seed=2)])
    sf.write(str(tmp_path / "stereo.wav"), samples.T, 16000, subtype="PCM_16")
    cut = Recording.from_file(tmp_path / "stereo.wav", recording_id="stereo").to_cut()
    sup = SupervisionSegment(
        id="stereo", recording_id="stereo", start=0.0, duration=cut.duration, channel=[0, 1], text=text
    )
    return replace(cut, supervisions=[sup]), sf.read(str(tmp_path / "stereo.wav"), dtype="float32")[0].T


@pytest.mark.parametrize("backend", ["lhotse", "kaldifeat"])
def test_stereo_audio_is_down_mixed_with_a_warning(tmp_path, tiny_tokenizer, caplog, backend):
    """A 2-channel cut (kaldifeat used to fail on it with a bare AssertionError) is down-mixed to the
    mean of its channels: its features are those of the mono mix, its transcript is not repeated
    per channel, and a WARNING names the cut and its channel count."""
    import logging

    from lhotse.dataset.input_strategies import OnTheFlyFeatures

    from asr_kd.data.features import kaldifeat_available

    if backend == "kaldifeat" and not kaldifeat_available():
        pytest.skip("kaldifeat is not installed")
    cut, samples = _stereo_cut(tmp_path)
    assert cut.num_channels == 2 and samples.shape[0] == 2
    fbank = make_fbank(80, backend=backend)
    ds = AsrDataset(OnTheFlyFeatures(fbank), tokenizer=tiny_tokenizer, name="train")
    with caplog.at_level(logging.WARNING, logger="asr_kd.data.dataset"):
        batch = ds[CutSet.from_cuts([cut])]
        ds[CutSet.from_cuts([cut])]  # a second epoch: no second warning
    warnings = [r.getMessage() for r in caplog.records if "stereo" in r.getMessage()]
    assert warnings == ["train: cut stereo has 2 audio channels: down-mixing to mono (the mean of the channels)"]
    assert batch["supervisions"]["text"] == ["THE DOG"]
    assert batch["supervisions"]["tokens"] == [tiny_tokenizer.encode("THE DOG")]
    expected = torch.as_tensor(fbank.extract(samples.mean(axis=0), 16000))
    assert batch["inputs"].shape == (1, expected.shape[0], 80)
    torch.testing.assert_close(batch["inputs"][0], expected, atol=1e-3, rtol=1e-4)
