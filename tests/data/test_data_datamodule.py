"""Tests for asr_kd.data.datamodule: DataLoaders, DDP split, exact resume, seeds, augmentation wiring."""

from __future__ import annotations

import io

import pytest
import torch

from asr_kd.data.augment import SpecAugmentConfig
from asr_kd.data.datamodule import AsrDataConfig, AsrDataModule, resolve_world
from asr_kd.data.features import num_frames
from asr_kd.testing import make_cutset

pytestmark = pytest.mark.filterwarnings("ignore:You are using DynamicBucketingSampler")


@pytest.fixture
def many_cuts(tmp_path):
    durations = [0.5 + 0.1 * (i % 17) for i in range(40)]  # 0.5 .. 2.1 s
    return make_cutset(tmp_path / "audio", durations)


def _config(**kw):
    base = dict(
        max_duration=5.0, num_buckets=4, num_workers=0, shuffle=True, drop_last=False, seed=7, spec_augment=False
    )
    base.update(kw)
    return AsrDataConfig(**base)


def _batch_ids(sampler):
    return [list(b.ids) for b in sampler]


def test_train_loader_yields_padded_batches_covering_the_epoch(many_cuts, tiny_tokenizer):
    dm = AsrDataModule(_config(), tokenizer=tiny_tokenizer)
    by_id = {c.id: c for c in many_cuts}
    seen = []
    for batch in dm.train_dataloader(many_cuts):
        x, lens, sup = batch["inputs"], batch["feature_lens"], batch["supervisions"]
        ids = sup["cut_id"]
        assert x.shape == (len(ids), int(lens.max()), 80)
        assert lens.tolist() == [num_frames(by_id[i].duration) for i in ids]
        assert sum(by_id[i].duration for i in ids) <= 5.0 + 1e-6
        assert sup["token_lens"].tolist() == [len(t) for t in sup["tokens"]]
        seen.extend(ids)
    assert sorted(seen) == sorted(by_id)  # every cut exactly once


def test_ddp_ranks_get_disjoint_batches_covering_the_set(many_cuts):
    ids = {}
    for rank in (0, 1):
        dm = AsrDataModule(_config(), world_size=2, rank=rank)
        ids[rank] = _batch_ids(dm.train_dataloader(many_cuts).sampler)
    assert len(ids[0]) == len(ids[1])  # same number of steps on every rank
    flat = {r: [c for b in ids[r] for c in b] for r in (0, 1)}
    assert not set(flat[0]) & set(flat[1])
    assert sorted(flat[0] + flat[1]) == sorted(many_cuts.ids)


def test_world_size_and_rank_resolution():
    assert resolve_world() == (1, 0)  # torch.distributed not initialised
    assert resolve_world(4, 3) == (4, 3)
    with pytest.raises(ValueError, match="rank"):
        resolve_world(2, 2)


def test_sampler_order_is_seeded_and_changes_with_epoch(many_cuts):
    def epoch_ids(seed, epoch):
        sampler = AsrDataModule(_config(seed=seed)).train_dataloader(many_cuts).sampler
        sampler.set_epoch(epoch)
        return _batch_ids(sampler)

    assert epoch_ids(7, 0) == epoch_ids(7, 0)
    assert epoch_ids(7, 0) != epoch_ids(7, 1)
    assert epoch_ids(7, 0) != epoch_ids(8, 0)


@pytest.mark.parametrize("consumed", [1, 3])
def test_resumed_sampler_yields_exactly_the_remaining_batches(many_cuts, consumed):
    dm = AsrDataModule(_config())
    sampler = dm.train_dataloader(many_cuts).sampler
    sampler.set_epoch(2)
    full_epoch = _batch_ids(sampler)
    it = iter(sampler)  # (a sampler is its own iterator: iter() restarts the epoch)
    done = [list(next(it).ids) for _ in range(consumed)]
    state = sampler.state_dict()
    remaining = full_epoch[consumed:]
    assert done == full_epoch[:consumed] and remaining

    buf = io.BytesIO()  # as it would travel through a checkpoint
    torch.save(state, buf)
    buf.seek(0)
    restored = torch.load(buf, weights_only=False)

    loader = dm.train_dataloader(many_cuts, sampler_state_dict=restored)
    assert _batch_ids(loader.sampler) == remaining
    assert sorted(c for b in done + remaining for c in b) == sorted(many_cuts.ids)
    assert state == restored  # the caller's state dict is not consumed

    # through the DataLoader (batches are sorted by duration inside the dataset)
    loader = dm.train_dataloader(many_cuts, sampler_state_dict=restored)  # reusable
    got = [sorted(b["supervisions"]["cut_id"]) for b in loader]
    assert got == [sorted(b) for b in remaining]


def test_workers_are_seeded_so_augmented_batches_repeat(many_cuts):
    cfg = _config(num_workers=2, spec_augment=True, spec_augment_config=SpecAugmentConfig(p=1.0, time_warp=0))
    cuts = many_cuts.subset(first=12)

    def run():
        return [b["inputs"] for b in AsrDataModule(cfg).train_dataloader(cuts)]

    a, b = run(), run()
    assert len(a) == len(b) > 1
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    # and SpecAugment did something
    clean = [b["inputs"] for b in AsrDataModule(_config(num_workers=0)).train_dataloader(cuts)]
    assert any(not torch.equal(x, y) for x, y in zip(a, clean))


def test_valid_and_test_loaders_are_plain_and_ordered(many_cuts, tiny_tokenizer):
    cfg = _config(spec_augment=True, spec_augment_config=SpecAugmentConfig(p=1.0))
    dm = AsrDataModule(cfg, tokenizer=tiny_tokenizer)
    many_cuts = many_cuts.subset(first=16)
    v1 = list(dm.valid_dataloader(many_cuts))
    v2 = list(dm.valid_dataloader(many_cuts))
    assert [b["supervisions"]["cut_id"] for b in v1] == [b["supervisions"]["cut_id"] for b in v2]
    for a, b in zip(v1, v2):
        torch.testing.assert_close(a["inputs"], b["inputs"], rtol=0, atol=0)  # no augmentation
    assert "tokens" in v1[0]["supervisions"]

    t = list(dm.test_dataloader(many_cuts))
    assert sorted(c for b in t for c in b["supervisions"]["cut_id"]) == sorted(many_cuts.ids)
    assert all(list(b["cuts"].ids) == b["supervisions"]["cut_id"] for b in t)
    assert "tokens" not in t[0]["supervisions"]


def test_speed_perturbation_in_training(many_cuts):
    cuts = many_cuts.subset(first=6)
    dm = AsrDataModule(_config(speed_perturb=True, max_duration=100.0))
    by_id = {c.id: c for c in cuts}
    seen = {}
    for batch in dm.train_dataloader(cuts):
        for cut_id, n in zip(batch["supervisions"]["cut_id"], batch["feature_lens"].tolist()):
            seen[cut_id] = n
    assert len(seen) == 18
    for cut_id, c in by_id.items():
        assert seen[cut_id] == num_frames(c.duration)
        for f in (0.9, 1.1):
            assert abs(seen[f"{cut_id}_sp{f}"] - c.duration / f * 100) <= 1


def test_speed_perturbation_needs_on_the_fly_features():
    with pytest.raises(ValueError, match="on_the_fly_feats"):
        AsrDataModule(_config(speed_perturb=True, on_the_fly_feats=False))


def test_noise_mixing_in_training_only(tmp_path, many_cuts):
    from lhotse import CutSet

    from asr_kd.testing import make_noise_cut

    noise = CutSet.from_cuts([make_noise_cut(tmp_path, "noise", duration=2.5, amplitude=0.3)])
    noise.to_file(tmp_path / "noise_cuts.jsonl.gz")
    cuts = many_cuts.subset(first=5)
    dm = AsrDataModule(_config(noise_cuts=tmp_path / "noise_cuts.jsonl.gz", noise_prob=1.0, noise_snr=(0.0, 0.0)))
    dm_clean = AsrDataModule(_config())
    noisy = {i: x for b in dm.train_dataloader(cuts) for i, x in zip(b["supervisions"]["cut_id"], b["inputs"])}
    clean = {i: x for b in dm_clean.train_dataloader(cuts) for i, x in zip(b["supervisions"]["cut_id"], b["inputs"])}
    assert noisy.keys() == clean.keys()
    for i in clean:
        assert noisy[i].shape == clean[i].shape
        assert not torch.allclose(noisy[i], clean[i], atol=0.5)
    valid = {i: x for b in dm.valid_dataloader(cuts) for i, x in zip(b["supervisions"]["cut_id"], b["inputs"])}
    for i in clean:
        torch.testing.assert_close(valid[i], clean[i], rtol=0, atol=0)


def test_dither_only_in_training(many_cuts):
    dm = AsrDataModule(_config(train_dither=1.0 / 32768, fbank_backend="lhotse"))
    assert dm.train_dataset().input_strategy.extractor.config.dither == pytest.approx(1 / 32768)
    valid = dm.valid_dataloader(many_cuts).dataset
    assert valid.input_strategy.extractor.config.dither == 0.0
    assert valid.spec_augment is None


def test_worker_augmentation_depends_on_epoch_and_batch_index_only(many_cuts):
    """With workers, a batch's SpecAugment draw is a function of (seed, rank, epoch, batch index): the
    same with 1 or 2 workers, different in another epoch, and the same after a mid-epoch restore of the
    sampler (what makes resume exact with workers)."""
    aug = dict(spec_augment=True, spec_augment_config=SpecAugmentConfig(p=1.0, time_warp=0))
    cuts = many_cuts.subset(first=16)

    def epoch(num_workers, ep, consumed=0):
        dm = AsrDataModule(_config(num_workers=num_workers, **aug))
        state = None
        if consumed:
            sampler = dm.train_dataloader(cuts).sampler
            sampler.set_epoch(ep)
            it = iter(sampler)
            for _ in range(consumed):
                next(it)
            state = sampler.state_dict()
        loader = dm.train_dataloader(cuts, sampler_state_dict=state)
        if state is None:
            loader.sampler.set_epoch(ep)
        return [(tuple(b["supervisions"]["cut_id"]), b["inputs"]) for b in loader]

    one, two = epoch(1, 0), epoch(2, 0)
    assert len(one) == len(two) > 3
    for (ids_a, x), (ids_b, y) in zip(one, two):
        assert ids_a == ids_b
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    resumed = epoch(2, 0, consumed=3)
    assert [ids for ids, _ in resumed] == [ids for ids, _ in one[3:]]
    for (_, x), (_, y) in zip(resumed, one[3:]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    # another epoch (unshuffled: the same batches) draws other masks
    loader = AsrDataModule(_config(num_workers=2, shuffle=False, **aug)).train_dataloader(cuts)
    epochs = []
    for ep in (0, 1):
        loader.sampler.set_epoch(ep)
        epochs.append([(tuple(b["supervisions"]["cut_id"]), b["inputs"]) for b in loader])
    assert [ids for ids, _ in epochs[0]] == [ids for ids, _ in epochs[1]]
    assert all(not torch.equal(x, y) for (_, x), (_, y) in zip(*epochs))
