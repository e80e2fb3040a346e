"""The CLIs print a user's mistake as one line and exit 2 (asr_kd.bin.run_main), not as a traceback."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asr_kd.bin import USER_ERRORS, run_main

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "egs" / "synth" / "ASR" / "conf" / "zipformer_ctc_s.yaml"


@pytest.mark.parametrize("name", sorted(USER_ERRORS))
def test_every_user_error_names_an_exception_class(name):
    module, _, qualname = name.rpartition(".")
    cls = getattr(importlib.import_module(module), qualname)
    assert isinstance(cls, type) and issubclass(cls, Exception)


def _train(tmp_path, *overrides, env=None):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "asr_kd.bin.train",
            "--config",
            str(CONF),
            "--exp-dir",
            str(tmp_path / "exp"),
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_train_typo_is_one_line_and_status_2(tmp_path):
    proc = _train(tmp_path, "optim.lrr=1e-3")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train: error: ConfigError: unknown optim config keys ['lrr']; known: [")
    assert not (tmp_path / "exp").exists()  # nothing written


def test_traceback_on_request(tmp_path):
    proc = _train(tmp_path, "training.ckpt_interval=five", env={"ASR_KD_TRACEBACK": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "training.ckpt_interval must be an integer, not 'five'" in proc.stderr


def test_run_main_passes_other_errors_and_statuses():
    from asr_kd.training.config import ConfigError

    def bad_config():
        raise ConfigError("x.y must be a number")

    def bug():
        raise KeyError("a bug")

    assert run_main(lambda: 0, "p") == 0 and run_main(lambda: None, "p") == 0 and run_main(lambda: 3, "p") == 3
    assert run_main(bad_config, "p") == 2
    with pytest.raises(KeyError):
        run_main(bug, "p")


def test_missing_input_file_is_one_line_and_status_2(tmp_path):
    """A missing manifest (FileNotFoundError naming it) is a user error: one line, status 2, nothing written."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "asr_kd.bin.dump_mlm",
            "--model-dir",
            str(tmp_path / "no_mlm"),
            "--splits",
            "test",
            "--manifest-dir",
            str(tmp_path / "fbank"),
            "--out-dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dump_mlm: error: FileNotFoundError: ") and "synth_cuts_test.jsonl.gz" in last, last
    assert not (tmp_path / "out").exists()

    def missing():
        raise FileNotFoundError("x.txt not found")

    assert run_main(missing, "p") == 2
