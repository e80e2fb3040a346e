"""Worker for test_training_ddp.py: one DDP step of the Trainer on this rank's half of a global batch."""

from __future__ import annotations

import os

import torch


def global_batch():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 4, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    return {"x": x, "y": y, "cut_ids": [f"c{i}" for i in range(8)]}


def make(model_seed=0):
    from training_toy import TinyModel, loss_fn

    from asr_kd.training import Trainer, TrainerConfig, build_optimizer

    torch.manual_seed(model_seed)
    model = TinyModel(dropout=0.0)
    return model, loss_fn, build_optimizer, Trainer, TrainerConfig


def run_rank(rank: int, world_size: int, port: int, out_dir: str, nan_rank: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from asr_kd.training import ddp

    info = ddp.setup_distributed()
    assert info.backend == "gloo" and ddp.get_world_size() == world_size
    # different init per rank on purpose: DDP must broadcast rank 0's parameters
    model, loss_fn, build_optimizer, Trainer, TrainerConfig = make(model_seed=rank)
    model = ddp.wrap_model(model, info)
    opt = build_optimizer(model.parameters(), {"name": "adamw", "lr": 1e-2})
    cfg = TrainerConfig(grad_clip=0.2, tensorboard=False, progress_bar=False)
    trainer = Trainer(model, opt, loss_fn, [], cfg=cfg, batch_duration_fn=lambda b: float(len(b["y"])))
    b = global_batch()
    per = 8 // world_size
    local = {
        "x": b["x"][rank * per : (rank + 1) * per],
        "y": b["y"][rank * per : (rank + 1) * per],
        "cut_ids": b["cut_ids"][rank * per : (rank + 1) * per],
    }
    if nan_rank >= 0:  # a bad batch on one rank: every rank must skip it, nobody hangs
        bad = dict(local, x=local["x"] * (float("nan") if rank == nan_rank else 1.0))
        assert trainer.train_step(bad) is None
        assert trainer.num_bad_batches == 1
        # an empty batch on rank 0 only: every rank skips it, not counted as bad
        empty = {k: (v[:0] if rank == 0 else v) for k, v in local.items()}
        assert trainer.train_step(empty) is None
        assert trainer.num_bad_batches == 1
    stats = trainer.train_step(local)
    assert stats is not None
    # audio_seconds sums every rank's batches ("1 second per cut" here): skipped batches count too
    expected = 8.0 + (4.0 + 4.0 + 4.0 if nan_rank >= 0 else 0.0)  # good + NaN (both ranks) + empty (rank 1)
    assert trainer.audio_seconds == expected, trainer.audio_seconds
    ddp.barrier()
    if ddp.is_main_process():
        from asr_kd.training.checkpoint import unwrap_model

        sd = {k: v.clone() for k, v in unwrap_model(model).state_dict().items()}
        torch.save({"params": sd, "grad_norm": stats["grad_norm"]}, os.path.join(out_dir, "ddp.pt"))
    ddp.cleanup()
