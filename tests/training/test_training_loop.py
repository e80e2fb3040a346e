"""The loop's behaviour: bad batches, limits, logging, validation."""

from __future__ import annotations

import logging

import pytest
import torch
from training_toy import ListBatches, TinyModel, loss_fn

from asr_kd.training import LossOutput, TooManyBadBatchesError, Trainer, TrainerConfig, build_optimizer


def _trainer(tmp_path=None, loss=loss_fn, valid=False, **cfg):
    torch.manual_seed(0)
    model = TinyModel(dropout=0.0)
    opt = build_optimizer(model.parameters(), {"lr": 1e-2})
    defaults = dict(
        max_steps=20,
        max_epochs=None,
        log_interval=5,
        valid_interval=0,
        ckpt_interval=0,
        tensorboard=False,
        progress_bar=False,
    )
    defaults.update(cfg)
    return Trainer(
        model,
        opt,
        loss,
        ListBatches(n=40, batch_size=4),
        valid_dl=ListBatches(8, 4) if valid else None,
        exp_dir=tmp_path,
        cfg=TrainerConfig(**defaults),
    )


def test_loss_decreases_and_validation(tmp_path):
    t = _trainer(tmp_path, valid=True, max_steps=60, valid_interval=20)
    before = t.validate()["loss"]
    res = t.fit()
    assert res["last_valid"]["loss"] < before
    assert set(res["last_valid"]) == {"loss", "ce"}


def test_nan_batches_are_skipped(caplog):
    poisoned = {"utt-003", "utt-017"}

    def nan_loss(model, batch, step):
        out = loss_fn(model, batch, step)
        if poisoned & set(batch["cut_ids"]):
            out.loss = out.loss * float("nan")
        return out

    t = _trainer(loss=nan_loss, max_steps=10)
    with caplog.at_level(logging.WARNING, logger="asr_kd.training.trainer"):
        res = t.fit()
    assert res["num_bad_batches"] == 2 and res["step"] == 10
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    assert "utt-003" in caplog.text and "utt-017" in caplog.text
    # the scheduler-free optimiser saw 8 updates only
    assert t.optimizer.state_dict()["state"][0]["step"].item() == 8


def test_skipped_batch_leaves_parameters_untouched():
    t = _trainer()
    before = [p.clone() for p in t.model.parameters()]
    batch = next(iter(ListBatches()))
    t.loss_fn = lambda m, b, s: LossOutput(loss=m(b["x"]).sum() * float("inf"))
    assert t.train_step(batch) is None
    assert all(torch.equal(a, b) for a, b in zip(before, t.model.parameters()))
    assert all(p.grad is None for p in t.model.parameters())


def test_too_many_consecutive_bad_batches():
    t = _trainer(loss=lambda m, b, s: m(b["x"]).sum() * float("nan"), max_consecutive_bad=4)
    with pytest.raises(TooManyBadBatchesError, match="4 consecutive"):
        t.fit()
    assert t.step == 3  # the 4th bad batch raised inside its step


def test_time_limit_and_epoch_limit(tmp_path):
    t = _trainer(tmp_path, max_steps=None, max_minutes=0.0)
    res = t.fit()
    assert res["stopped_because"] == "max_minutes" and res["step"] == 0
    t = _trainer(tmp_path / "e", max_steps=None, max_epochs=2)
    res = t.fit()
    assert res["stopped_because"] == "max_epochs" and res["step"] == 20 and res["epoch"] == 2
    assert sorted(p.name for p in (tmp_path / "e").glob("*.pt")) == ["epoch-1.pt", "epoch-2.pt"]


def test_tensorboard_scalars(tmp_path):
    t = _trainer(tmp_path, valid=True, max_steps=10, valid_interval=5, tensorboard=True)
    t.fit()
    t.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/ce", "train/lr", "train/grad_norm", "valid/loss"} <= tags


def test_loss_fn_may_return_tensor_or_tuple():
    t = _trainer(loss=lambda m, b, s: torch.nn.functional.cross_entropy(m(b["x"]), b["y"]), max_steps=2)
    assert t.fit()["step"] == 2
    t = _trainer(loss=lambda m, b, s: (torch.nn.functional.cross_entropy(m(b["x"]), b["y"]), {"a": 1.0}), max_steps=2)
    assert t.fit()["step"] == 2


def test_empty_batch_is_skipped_without_counting():
    t = _trainer()
    batch = next(iter(ListBatches()))
    empty = {k: v[:0] for k, v in batch.items()}
    assert t.train_step(empty) is None
    assert t.num_bad_batches == 0 and t.consecutive_bad == 0
