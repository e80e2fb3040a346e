"""The train CLI end to end on a few dummy cuts: train, stop, resume, average."""

from __future__ import annotations

import pytest
import torch

from asr_kd.testing.recipe import make_toy_recipe


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    make_toy_recipe(root)
    return root


def test_train_resume_average(recipe, tmp_path):
    from asr_kd.bin import average, train
    from asr_kd.training import find_latest

    exp = tmp_path / "exp"
    conf = str(recipe / "conf.yaml")
    assert train.main(["--config", conf, "--exp-dir", str(exp), "--max-steps", "3", "optim.lr=2e-3"]) == 0
    assert find_latest(exp).name == "checkpoint-3.pt"
    ck = torch.load(exp / "checkpoint-3.pt", weights_only=True)
    assert ck["step"] == 3 and ck["config"]["optim"]["lr"] == 2e-3
    assert ck["config"]["model"]["vocab_size"] == 40 and ck["config"]["model"]["encoder"]["input_dim"] == 80
    assert (exp / "config.yaml").is_file() and (exp / "train.log").is_file()
    assert any((exp / "tensorboard").iterdir())

    with pytest.raises(SystemExit):
        train.main(["--config", conf, "--exp-dir", str(exp), "--max-steps", "5", "--no-resume"])

    assert train.main(["--config", conf, "--exp-dir", str(exp), "--max-steps", "5"]) == 0
    log = (exp / "train.log").read_text()
    assert "resumed from" in log and "checkpoint-3.pt" in log
    assert torch.load(find_latest(exp), weights_only=True)["step"] == 5

    assert average.main(["--exp-dir", str(exp), "--avg", "2", "--out", str(exp / "avg.pt")]) == 0
    from asr_kd.models.asr_model import build_asr_model

    model = build_asr_model(ck["config"]["model"])
    from asr_kd.training import load_checkpoint
    from asr_kd.training.asr_task import load_asr_model

    load_checkpoint(exp / "avg.pt", model=model)
    loaded, config = load_asr_model(exp / "avg.pt")
    assert not loaded.training and config["data"]["prefix"] == "toy"
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


@pytest.mark.slow
def test_train_under_torchrun(recipe, tmp_path):
    """Two gloo processes through torchrun: rank 0 writes the checkpoint and the log."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    exp = tmp_path / "exp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "asr_kd.bin.train",
        "--config",
        str(recipe / "conf.yaml"),
        "--exp-dir",
        str(exp),
        "--max-steps",
        "2",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = torch.load(exp / "checkpoint-2.pt", weights_only=True)
    assert ck["meta"]["world_size"] == 2 and len(ck["rng"]["per_rank"]) == 2
    assert "world size 2" in (exp / "train.log").read_text()


def test_cli_resume_is_exact_with_real_model_and_data(recipe, tmp_path):
    """AsrDataModule (lhotse sampler, SpecAugment in the main process) + AsrModel: 2 + 3 steps with a
    stop in between give bitwise the parameters of 5 steps straight (epochs have 2-3 batches here)."""
    from asr_kd.bin import train

    conf = str(recipe / "conf.yaml")
    common = ["data.spec_augment=true", "training.ckpt_interval=0", "training.valid_interval=0"]
    train.main(["--config", conf, "--exp-dir", str(tmp_path / "a"), "--max-steps", "5", *common])
    train.main(["--config", conf, "--exp-dir", str(tmp_path / "b"), "--max-steps", "2", *common])
    train.main(["--config", conf, "--exp-dir", str(tmp_path / "b"), "--max-steps", "5", *common])
    a = torch.load(tmp_path / "a" / "checkpoint-5.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint-5.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] >= 1
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def test_icefall_style_config_scaled_adam_model_avg_dynamic_chunks(recipe, tmp_path):
    """scaled_adam + eden + average_period + dynamic chunks from the YAML, then the averaged model."""
    from asr_kd.bin import average, train
    from asr_kd.training.asr_task import load_asr_model
    from asr_kd.training.checkpoint import average_checkpoints_with_averaged_model

    exp = tmp_path / "exp"
    conf = str(recipe / "conf.yaml")
    args = [
        "--config",
        conf,
        "--exp-dir",
        str(exp),
        "--max-steps",
        "4",
        "optim={name: scaled_adam, lr: 0.045}",
        "scheduler={name: eden, lr_batches: 100, lr_epochs: 2, warmup_batches: 2}",
        "training.average_period=1",
        "training.chunk={dynamic: true, max_chunk: 4, max_left_chunks: 2}",
        "training.valid_interval=0",
    ]
    assert train.main(args) == 0
    log = (exp / "train.log").read_text()
    assert "training.grad_clip defaults to null" in log and "chunk training: ChunkConfig(dynamic=True" in log
    ck = torch.load(exp / "checkpoint-4.pt", weights_only=True)
    assert ck["config"]["training"]["grad_clip"] is None and ck["meta"]["audio_seconds"] > 0
    assert ck["optimizer"]["param_groups"][0]["param_names"][0].startswith("encoder.")
    assert set(ck["model_avg"]) == {k for k, v in ck["model"].items() if v.is_floating_point()}

    assert average.main(["--exp-dir", str(exp), "--avg", "1", "--use-averaged-model"]) == 0  # checkpoint-2, -4
    avg = torch.load(exp / "averaged.pt", weights_only=True)
    ref = average_checkpoints_with_averaged_model(exp / "checkpoint-2.pt", exp / "checkpoint-4.pt")
    for k, v in ref.items():
        assert torch.equal(avg["model"][k], v), k
    model, _ = load_asr_model(exp / "checkpoint-4.pt", use_averaged_model=True)
    from asr_kd.training.checkpoint import averaged_state_dict

    expected = averaged_state_dict(ck["model"], ck["model_avg"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    with pytest.raises(ValueError, match="model_avg"):
        load_asr_model(exp / "averaged.pt", use_averaged_model=True)


def test_unknown_chunk_key_is_rejected(recipe, tmp_path):
    from asr_kd.bin import train

    with pytest.raises(ValueError, match="unknown key 'max_chunks' in training.chunk; known keys: dynamic"):
        train.main(
            [
                "--config",
                str(recipe / "conf.yaml"),
                "--exp-dir",
                str(tmp_path / "exp"),
                "--max-steps",
                "1",
                "training.chunk={dynamic: true, max_chunks: 4}",
            ]
        )
