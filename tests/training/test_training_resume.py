"""Exact resume: train 2k steps straight == train k, stop, resume in fresh objects, train to 2k."""

from __future__ import annotations

import pytest
import torch
from training_toy import ListBatches, TinyModel, lhotse_loader, loss_fn

from asr_kd.training import Trainer, TrainerConfig, build_optimizer, build_scheduler, find_latest, seed_everything


def make_trainer(exp_dir, max_steps, loader_kind, num_workers=0, ckpt_interval=0):
    seed_everything(123)
    model = TinyModel()
    opt = build_optimizer(model.parameters(), {"name": "adamw", "lr": 3e-2})
    sched = build_scheduler(opt, {"name": "eden", "warmup_steps": 3, "lr_batches": 10, "lr_epochs": 2})
    if loader_kind == "lhotse":
        dl, sampler = lhotse_loader(num_workers=num_workers, global_noise=num_workers == 0)
    else:
        dl, sampler = ListBatches(), None
    cfg = TrainerConfig(
        max_steps=max_steps,
        max_epochs=None,
        log_interval=5,
        valid_interval=0,
        ckpt_interval=ckpt_interval,
        keep_last=2,
        tensorboard=False,
        progress_bar=False,
    )
    return Trainer(
        model, opt, loss_fn, dl, scheduler=sched, sampler=sampler, exp_dir=exp_dir, cfg=cfg, config={"seed": 123}
    )


def params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize(
    "loader_kind,num_workers,k",
    [("lhotse", 0, 7), ("list", 0, 13), ("lhotse", 1, 11)],
    ids=["lhotse-sampler", "skip-batches", "lhotse-prefetching-worker"],
)
def test_resume_is_exact(tmp_path, loader_kind, num_workers, k):
    total = 2 * k
    straight = make_trainer(tmp_path / "a", total, loader_kind, num_workers)
    res = straight.fit()
    assert res["step"] == total and res["epoch"] >= 1, res  # the run crosses an epoch boundary

    first = make_trainer(tmp_path / "b", k, loader_kind, num_workers)
    assert not first.resume()  # nothing to resume from yet
    assert first.fit()["stopped_because"] == "max_steps"
    latest = find_latest(tmp_path / "b")
    assert latest is not None and latest.name == f"checkpoint-{k}.pt"
    del first  # "kill"

    # fresh process state: different RNG, different init
    torch.manual_seed(999)
    second = make_trainer(tmp_path / "b", total, loader_kind, num_workers)
    torch.manual_seed(4242)
    assert second.resume()
    assert second.step == k
    res2 = second.fit()
    assert res2["step"] == total and res2["epoch"] == res["epoch"]

    a, b = params(straight), params(second)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert torch.equal(torch.get_rng_state(), torch.get_rng_state())  # both runs ended in this process
    assert straight.optimizer.param_groups[0]["lr"] == second.optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("first_steps", [10, 12], ids=["stop-at-epoch-end", "from-epoch-file"])
def test_resume_at_epoch_boundary(tmp_path, first_steps):
    """ListBatches has 10 batches per epoch. Stopping at step 10 writes checkpoint-10 (10 batches
    consumed); resuming from epoch-1.pt (step 10, next epoch) must give the same result too."""
    straight = make_trainer(tmp_path / "a", 25, "list")
    straight.fit()
    first = make_trainer(tmp_path / "b", first_steps, "list")
    first.fit()
    if first_steps == 12:
        assert (tmp_path / "b" / "epoch-1.pt").is_file()
        (tmp_path / "b" / "checkpoint-12.pt").unlink()
        assert find_latest(tmp_path / "b").name == "epoch-1.pt"
    second = make_trainer(tmp_path / "b", 25, "list")
    assert second.resume()
    expected = (1, 0, 10) if first_steps == 12 else (0, 10, 10)
    assert (second.epoch, second.batches_consumed, second.step) == expected
    second.fit()
    for name, v in params(straight).items():
        assert torch.equal(v, params(second)[name]), name


def test_periodic_checkpoints_and_cleanup(tmp_path):
    t = make_trainer(tmp_path, 12, "list", ckpt_interval=3)
    t.fit()
    names = sorted(p.name for p in tmp_path.glob("*.pt"))
    # keep_last=2 periodic ones (the final stop at step 12 writes checkpoint-12) + the epoch-1 file
    assert names == ["checkpoint-12.pt", "checkpoint-9.pt", "epoch-1.pt"], names
    assert not list(tmp_path.glob(".*.tmp"))
