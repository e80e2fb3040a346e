"""The train CLI with broken configs, changed settings on resume, damaged checkpoints and an unwritable
experiment directory (issue 12): each fails early with a message naming the key or the file, or
recovers and says so."""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest
import torch
import yaml

from asr_kd.testing.recipe import make_toy_recipe
from asr_kd.training.checkpoint import CorruptCheckpointError
from asr_kd.training.config import ConfigError


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    make_toy_recipe(root)
    return root


def train(recipe, exp, *args):
    from asr_kd.bin import train as train_cli

    return train_cli.main(["--config", str(recipe / "conf.yaml"), "--exp-dir", str(exp), *args])


def snapshot(exp):
    """{name: bytes} of everything in ``exp`` except the log (which an error may append to)."""
    return {
        str(p.relative_to(exp)): p.read_bytes() for p in sorted(exp.rglob("*")) if p.is_file() and p.name != "train.log"
    }


# ------------------------------------------------------------------------------------------ typos, types
@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lrr=1e-3", r"unknown optim config keys \['lrr'\]; known: \[.*'lr'"),
        ("training.max_stepz=1", r"unknown training config keys \['max_stepz'\]; known: \[.*'max_steps'"),
        ("scheduler.warmup_stepz=3", r"unknown scheduler config keys \['warmup_stepz'\]; known: \[.*'warmup_steps'"),
        ("loss.normalise=frames", r"unknown loss config keys \['normalise'\]; known: \[.*'normalize'"),
        ("trainig.max_steps=1", r"unknown top-level config keys \['trainig'\]; known: \[.*'training'"),
        ("kd.teachr={}", r"unknown kd config keys \['teachr'\]; known: \['methods', 'teacher', 'total_steps'\]"),
        (
            "data.spec_augment_config.num_freq_maks=1",
            r"unknown data.spec_augment_config config keys \['num_freq_maks'\]",
        ),
    ],
)
def test_a_typo_in_any_section_is_rejected(recipe, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(recipe, tmp_path / "exp", "--max-steps", "1", override)
    assert not (tmp_path / "exp").exists()  # nothing written


@pytest.mark.parametrize(
    "override,message",
    [
        ("training.ckpt_interval=five", "training.ckpt_interval must be an integer, not 'five'"),
        ("data.spec_augment=nope", "data.spec_augment must be true or false, not 'nope'"),
        ("optim.lr=fast", "optim.lr must be a number, not 'fast'"),
        ("data.on_error=skipp", "data.on_error must be one of 'raise', 'skip', not 'skipp'"),
    ],
)
def test_a_wrong_type_fails_at_start_up(recipe, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(recipe, tmp_path / "exp", "--max-steps", "1", override)
    assert not (tmp_path / "exp").exists()


def test_a_typo_in_the_kd_teacher_is_rejected(recipe, tmp_path):
    """kd.teacher options go through the same check (before: TypeError 'unexpected keyword argument')."""
    kd = "kd={teacher: {type: offline, feilds: [kd_ctc_topk]}, methods: []}"
    with pytest.raises(ConfigError, match=r"unknown kd.teacher config keys \['feilds'\]; known: \['fields', 'type'\]"):
        train(recipe, tmp_path / "exp", "--max-steps", "1", kd)
    assert not (tmp_path / "exp" / "config.yaml").exists()


# ------------------------------------------------------------------------------------------ resume
def test_changed_lr_and_schedule_on_resume_apply_are_logged_and_recorded(recipe, tmp_path):
    """2 steps at lr 1e-3 / warm-up 2, resumed to 4 steps with lr 5e-4 / warm-up 5: the lr of step 4 is
    that of a run with the new settings throughout; config.yaml says what ran, config-history/ keeps both."""
    common = ["training.ckpt_interval=2", "training.valid_interval=0"]
    new = ["optim.lr=5e-4", "scheduler.warmup_steps=5"]
    assert train(recipe, tmp_path / "ref", "--max-steps", "4", *common, *new) == 0
    exp = tmp_path / "exp"
    assert train(recipe, exp, "--max-steps", "2", *common) == 0
    assert train(recipe, exp, "--max-steps", "4", *common, *new) == 0

    log = (exp / "train.log").read_text()
    assert "resume: optim.lr 0.001 -> 0.0005 applied" in log
    assert "resume: scheduler setting warmup_steps 2 -> 5 applied" in log
    lr = torch.load(exp / "checkpoint-4.pt", weights_only=True)["optimizer"]["param_groups"][0]["lr"]
    ref = torch.load(tmp_path / "ref" / "checkpoint-4.pt", weights_only=True)["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(ref, rel=1e-9)

    assert yaml.safe_load((exp / "config.yaml").read_text())["optim"]["lr"] == 5e-4
    history = sorted((exp / "config-history").glob("*.yaml"))
    assert [p.name for p in history] == ["001-step-0.yaml", "002-step-2.yaml"]
    assert yaml.safe_load(history[0].read_text())["optim"]["lr"] == 1e-3
    text = history[1].read_text()
    assert "resumed from" in text and "optim.lr: 0.001 -> 0.0005" in text


def test_a_changed_optimizer_setting_is_refused_on_resume(recipe, tmp_path):
    exp = tmp_path / "exp"
    assert train(recipe, exp, "--max-steps", "2") == 0
    before = snapshot(exp)
    with pytest.raises(ConfigError, match=r"cannot change when resuming: optim.betas: .*optimiser state"):
        train(recipe, exp, "--max-steps", "4", "optim.betas=[0.8, 0.9]")
    assert snapshot(exp) == before


def test_a_changed_architecture_on_resume_fails_before_anything_is_written(recipe, tmp_path):
    exp = tmp_path / "exp"
    assert train(recipe, exp, "--max-steps", "2") == 0
    before = snapshot(exp)
    with pytest.raises(ConfigError) as e:
        train(recipe, exp, "--max-steps", "4", "model.encoder.num_layers=2", "model.encoder.d_model=48")
    msg = str(e.value)
    assert "checkpoint-2.pt" in msg and "model architecture differs" in msg
    assert "model.encoder.num_layers: 1 -> 2" in msg and "model.encoder.d_model: 32 -> 48" in msg
    assert len(msg) < 600  # not a load_state_dict dump
    assert snapshot(exp) == before


def test_init_from_a_different_architecture_fails_naming_the_keys(recipe, tmp_path):
    assert train(recipe, tmp_path / "stage1", "--max-steps", "2") == 0
    ckpt = tmp_path / "stage1" / "checkpoint-2.pt"
    exp = tmp_path / "stage2"
    with pytest.raises(ConfigError, match=r"training.init_from=.*checkpoint-2.pt.*model.encoder.d_model: 32 -> 48"):
        train(recipe, exp, "--max-steps", "1", f"training.init_from={ckpt}", "model.encoder.d_model=48")
    assert not (exp / "config.yaml").exists() and not list(exp.glob("*.pt")) and not (exp / "tensorboard").exists()

    # a weights-only file (no model config): the parameters are compared, briefly
    from asr_kd.training.checkpoint import save_checkpoint

    state = torch.load(ckpt, weights_only=True)["model"]
    bare = save_checkpoint(tmp_path / "bare.pt", model=state, rng=None)
    with pytest.raises(ConfigError) as e:
        train(recipe, exp, "--max-steps", "1", f"training.init_from={bare}", "model.encoder.d_model=48")
    msg = str(e.value)
    assert "bare.pt" in msg and "of another shape" in msg and "encoder." in msg and len(msg) < 800


def test_a_truncated_init_from_checkpoint_is_named(recipe, tmp_path):
    assert train(recipe, tmp_path / "stage1", "--max-steps", "2") == 0
    ckpt = tmp_path / "stage1" / "checkpoint-2.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(CorruptCheckpointError, match=r"checkpoint-2\.pt cannot be read.*truncated"):
        train(recipe, tmp_path / "stage2", "--max-steps", "1", f"training.init_from={ckpt}")


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(recipe, tmp_path):
    exp = tmp_path / "exp"
    assert train(recipe, exp, "--max-steps", "4", "training.valid_interval=0") == 0
    latest = exp / "checkpoint-4.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 3])
    assert train(recipe, exp, "--max-steps", "6", "training.valid_interval=0") == 0
    log = (exp / "train.log").read_text()
    assert "checkpoint-4.pt cannot be read" in log and "Falling back to the previous checkpoint" in log
    assert "resumed from" in log and "epoch-1.pt: step 2," in log  # epoch-1.pt = checkpoint-2.pt's state
    assert torch.load(exp / "checkpoint-6.pt", weights_only=True)["step"] == 6


def test_stale_temp_files_are_cleaned_at_start(recipe, tmp_path):
    exp = tmp_path / "exp"
    assert train(recipe, exp, "--max-steps", "2") == 0
    stale = exp / ".checkpoint-4.pt.ab12_cd3.tmp"
    stale.write_bytes(b"")
    assert train(recipe, exp, "--max-steps", "3") == 0
    assert not stale.exists()
    assert (
        ".checkpoint-4.pt.ab12_cd3.tmp (0 bytes): left by an interrupted checkpoint save"
        in (exp / "train.log").read_text()
    )


@contextlib.contextmanager
def read_only_dir(path):
    """Make ``path`` refuse new entries (chmod for users, ``chattr +i`` for root); skip if impossible."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: cannot make a directory read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_unwritable_exp_dir_fails_at_start_up(recipe, tmp_path):
    exp = tmp_path / "exp"
    assert train(recipe, exp, "--max-steps", "2", "training.ckpt_interval=0") == 0
    with read_only_dir(exp):
        with pytest.raises(PermissionError, match=r"experiment directory .*exp is not writable.*--exp-dir"):
            train(recipe, exp, "--max-steps", "6", "training.ckpt_interval=0")
    assert "step 3:" not in (exp / "train.log").read_text()  # no training step was spent


def test_an_epoch_without_batches_stops_at_the_first_one(recipe, tmp_path):
    """max_duration 80 s over 6 cuts of ~1.5 s with drop_last: no bucket ever fills a batch."""
    from asr_kd.training.trainer import EmptyEpochError

    with pytest.raises(EmptyEpochError) as e:
        train(recipe, tmp_path / "exp", "--max-epochs", "5", "data.max_duration=80", "data.num_buckets=20")
    msg = str(e.value)
    assert "epoch 0 produced no training batch" in msg and "max_duration=80" in msg
    assert "corpus of 6 cuts" in msg and "data.num_buckets" in msg


# ------------------------------------------------------------------------------------------ KD teachers
def _damaged_copies(ckpt, tmp_path):
    """(truncated copy, copy with random bytes over its largest tensor) of a checkpoint."""
    import numpy as np

    truncated = tmp_path / "teacher-truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    flipped = tmp_path / "teacher-flipped.pt"
    blob = bytearray(ckpt.read_bytes())
    weights = torch.load(ckpt, weights_only=True)["model"]
    biggest = max(weights.values(), key=lambda t: t.numel())
    offset = blob.find(biggest.contiguous().numpy().tobytes()[:64])
    assert offset > 0
    blob[offset : offset + 64] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
    flipped.write_bytes(bytes(blob))
    return truncated, flipped


def test_a_corrupt_kd_teacher_checkpoint_is_named(recipe, tmp_path):
    """Online teachers (kd.teacher) and dump_teacher: a truncated or overwritten teacher checkpoint
    raises CorruptCheckpointError naming the file, not torch's reader error or a NaN teacher."""
    from asr_kd.bin import dump_teacher
    from asr_kd.kd.teachers import build_teacher

    assert train(recipe, tmp_path / "teacher", "--max-steps", "2") == 0
    truncated, flipped = _damaged_copies(tmp_path / "teacher" / "checkpoint-2.pt", tmp_path)
    with pytest.raises(CorruptCheckpointError, match=r"teacher-truncated\.pt cannot be read.*truncated or corrupt"):
        build_teacher({"type": "asr", "checkpoint": str(truncated)})
    with pytest.raises(CorruptCheckpointError, match=r"teacher-flipped\.pt is corrupt.*checksum"):
        build_teacher({"type": "asr", "checkpoint": str(flipped)})
    kd = "kd={teacher: {type: asr, checkpoint: " + str(truncated) + "}, methods: [{name: ctc_kd, weight: 1.0}]}"
    with pytest.raises(CorruptCheckpointError, match=r"teacher-truncated\.pt cannot be read"):
        train(recipe, tmp_path / "student", "--max-steps", "1", kd)
    for bad, message in ((truncated, "cannot be read"), (flipped, "is corrupt")):
        with pytest.raises(CorruptCheckpointError, match=rf"{bad.name} {message}"):
            dump_teacher.main(["--checkpoint", str(bad), "--splits", "dev", "--out-dir", str(tmp_path / "kd")])
