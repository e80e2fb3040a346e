"""Faults around checkpoints and the loop: corrupt / truncated files, stale temp files, bad-batch step
numbers, an epoch without batches (issue 12)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn
from training_toy import ListBatches, TinyModel, loss_fn

from asr_kd.training import LossOutput, Trainer, TrainerConfig, build_optimizer
from asr_kd.training import checkpoint as ck
from asr_kd.training.trainer import EmptyEpochError


class WideModel(nn.Module):
    """A (256, 256) weight, so that bytes in the middle of the file are tensor data."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(256, 256)


def _overwrite_tensor_bytes(path, tensor: torch.Tensor, seed: int = 0) -> None:
    """Write 64 random bytes over the stored data of ``tensor`` inside the checkpoint file."""
    blob = bytearray(path.read_bytes())
    needle = tensor.detach().contiguous().numpy().tobytes()[4096 : 4096 + 64]
    offset = blob.find(needle)
    assert offset > 0, "tensor data not found in the file"
    blob[offset : offset + 64] = np.random.default_rng(seed).integers(0, 256, 64, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(blob))


def test_random_bytes_inside_a_tensor_are_detected(tmp_path):
    model = WideModel()
    p = ck.save_checkpoint(tmp_path / "checkpoint-2.pt", model=model, step=2)
    assert ck.read_checkpoint(p)["checksum"].startswith("sha256:")
    _overwrite_tensor_bytes(p, model.lin.weight)
    raw = torch.load(p, weights_only=True)  # torch itself does not notice
    assert not torch.equal(raw["model"]["lin.weight"], model.lin.weight)
    with pytest.raises(ck.CorruptCheckpointError, match=r"checkpoint-2\.pt is corrupt.*checksum"):
        ck.load_checkpoint(p, model=WideModel())


def test_truncated_file_is_named(tmp_path):
    p = ck.save_checkpoint(tmp_path / "checkpoint-4.pt", model=WideModel(), step=4)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ck.CorruptCheckpointError, match=r"checkpoint-4\.pt cannot be read.*truncated or corrupt"):
        ck.load_checkpoint(p)


def test_checkpoint_without_checksum_still_loads(tmp_path, caplog):
    """Files written before checksums existed load, with a warning."""
    model = TinyModel()
    old = {k: None for k in ck.CHECKPOINT_KEYS if k != "checksum"}
    old.update(model={k: v.clone() for k, v in model.state_dict().items()}, step=3, epoch=0, config={}, meta={})
    torch.save(old, tmp_path / "checkpoint-3.pt")
    m2 = TinyModel()
    with caplog.at_level(logging.WARNING, logger="asr_kd.training.checkpoint"):
        out = ck.load_checkpoint(tmp_path / "checkpoint-3.pt", model=m2)
    assert out["step"] == 3 and torch.equal(m2.l1.weight, model.l1.weight)
    assert "checkpoint-3.pt has no checksum" in caplog.text


def _trainer(exp_dir, max_steps, ckpt_interval=2, loss=loss_fn, dl=None, **cfg):
    torch.manual_seed(0)
    model = TinyModel(dropout=0.0)
    opt = build_optimizer(model.parameters(), {"lr": 1e-2})
    c = dict(
        max_steps=max_steps,
        max_epochs=None,
        log_interval=1,
        valid_interval=0,
        ckpt_interval=ckpt_interval,
        keep_last=10,
        tensorboard=False,
        progress_bar=False,
    )
    c.update(cfg)
    return Trainer(model, opt, loss, dl if dl is not None else ListBatches(), exp_dir=exp_dir, cfg=TrainerConfig(**c))


@pytest.mark.parametrize("damage", ["truncate", "random-bytes"])
def test_resume_falls_back_from_a_bad_latest_checkpoint(tmp_path, caplog, damage):
    _trainer(tmp_path, 6).fit()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pt")) == [
        "checkpoint-2.pt",
        "checkpoint-4.pt",
        "checkpoint-6.pt",
    ]
    bad = tmp_path / "checkpoint-6.pt"
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:1000])
    else:
        weight = torch.load(bad, weights_only=True)["model"]["l1.weight"]
        blob = bytearray(bad.read_bytes())
        offset = blob.find(weight.numpy().tobytes())
        assert offset > 0
        blob[offset : offset + 16] = bytes(range(16))
        bad.write_bytes(bytes(blob))
    t = _trainer(tmp_path, 8)
    with caplog.at_level(logging.WARNING):
        assert t.resume()
    assert t.step == 4
    assert "checkpoint-6.pt" in caplog.text and "Falling back to the previous checkpoint" in caplog.text


def test_resume_with_no_readable_checkpoint_refuses_to_start_afresh(tmp_path):
    _trainer(tmp_path, 2).fit()
    (tmp_path / "checkpoint-2.pt").write_bytes(b"\0" * 100)
    with pytest.raises(ck.CorruptCheckpointError, match=r"no checkpoint in .* can be read \(checkpoint-2\.pt"):
        _trainer(tmp_path, 4).resume()


def test_stale_temp_files_are_removed(tmp_path):
    stale = tmp_path / ".checkpoint-8.pt.k2x_9abc.tmp"
    stale.write_bytes(b"")
    keep = tmp_path / "notes.tmp"
    keep.write_text("mine")
    assert ck.clean_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and keep.exists()


def test_bad_batch_warning_uses_the_loss_line_step_numbers(caplog):
    """The 3rd batch is bad: its warning says step 3, as the loss line of the 3rd batch would."""

    def bad_third(model, batch, step):
        out = loss_fn(model, batch, step)
        return LossOutput(loss=out.loss * float("nan"), cut_ids=out.cut_ids) if step == 2 else out

    t = _trainer(None, 4, ckpt_interval=0, loss=bad_third)
    with caplog.at_level(logging.INFO, logger="asr_kd.training.trainer"):
        t.fit()
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("step 3: skipping batch (non-finite loss") for m in lines), lines
    assert any(m.startswith("epoch 0 step 2: ") for m in lines) and any(m.startswith("epoch 0 step 4: ") for m in lines)
    assert not any(m.startswith("epoch 0 step 3: ") for m in lines)  # the skipped step logs no loss


def test_an_epoch_without_batches_stops_training(tmp_path, dummy_cuts):
    """A bucketing sampler whose buckets never fill max_duration (drop_last): error at the first epoch."""
    from lhotse.dataset import DynamicBucketingSampler

    sampler = DynamicBucketingSampler(dummy_cuts, max_duration=80.0, num_buckets=4, drop_last=True, shuffle=True)
    assert not list(sampler)

    class CutsDataset(torch.utils.data.Dataset):
        def __getitem__(self, cuts):
            return {"cut_ids": [c.id for c in cuts]}

    dl = torch.utils.data.DataLoader(CutsDataset(), sampler=sampler, batch_size=None)
    t = _trainer(tmp_path, None, dl=dl, max_epochs=200)
    with pytest.raises(EmptyEpochError) as e:
        t.fit()
    msg = str(e.value)
    assert "epoch 0 produced no training batch" in msg
    assert "max_duration=80.0" in msg and "num_buckets=" in msg and "drop_last=True" in msg
    assert "8 cuts" in msg and "data.num_buckets" in msg
    assert t.epoch == 0 and not list(tmp_path.glob("epoch-*.pt"))
