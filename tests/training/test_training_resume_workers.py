"""Exact resume with DataLoader workers: SpecAugment runs in the worker processes, seeded per batch
from (seed, rank, epoch, batch index), so a stopped and resumed run matches an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from asr_kd.testing.recipe import make_toy_recipe


@pytest.mark.parametrize("num_workers", [1, 2])
def test_cli_resume_is_exact_with_workers(tmp_path, num_workers):
    """2 + 3 steps (stopped mid-epoch, resumed) give bitwise the parameters of 5 steps straight, with
    SpecAugment in ``num_workers`` worker processes (epochs have 2-3 batches here)."""
    from asr_kd.bin import train

    conf = str(make_toy_recipe(tmp_path / "recipe"))
    common = [
        f"data.num_workers={num_workers}",
        "data.spec_augment=true",
        "data.spec_augment_config={time_warp: 0}",
        "training.ckpt_interval=0",
        "training.valid_interval=0",
    ]

    def run(exp, steps):
        assert train.main(["--config", conf, "--exp-dir", str(tmp_path / exp), "--max-steps", str(steps), *common]) == 0

    run("a", 5)
    run("b", 3)
    run("b", 5)
    a = torch.load(tmp_path / "a" / "checkpoint-5.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint-5.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] >= 1
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
