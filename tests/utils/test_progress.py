"""Progress bars (training, decoding, synthesis, features): on in a terminal (a pseudo-terminal here) with
INFO going to the log file only; off under CI=true, ASR_KD_PROGRESS=0, a false setting or without a terminal,
and then the console log is the log file's."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from asr_kd.testing.recipe import make_toy_recipe
from asr_kd.utils.progress import progress_enabled

REPO = Path(__file__).resolve().parents[2]
#: a log record line of the train / decode CLIs
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) ")


@pytest.fixture
def tty():
    """A writable stream on the slave side of a pseudo-terminal (``isatty()`` is True)."""
    master, slave = pty.openpty()
    stream = open(slave, "w")
    yield stream
    stream.close()
    os.close(master)


def test_progress_enabled_rules(tty, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ASR_KD_PROGRESS", raising=False)
    assert progress_enabled(stream=tty) and not progress_enabled(stream=io.StringIO())
    assert not progress_enabled(False, stream=tty)
    assert progress_enabled(True, stream=io.StringIO())  # asked for explicitly
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled(stream=tty) and progress_enabled(True, stream=tty)
    monkeypatch.setenv("ASR_KD_PROGRESS", "0")
    assert not progress_enabled(True, stream=tty)
    monkeypatch.delenv("CI")
    monkeypatch.setenv("ASR_KD_PROGRESS", "1")
    assert progress_enabled(stream=io.StringIO())


def run_cli(args: list[str], cwd: Path, *, terminal: bool, **env: str) -> tuple[int, str, str]:
    """``(exit status, stderr, stdout)`` of ``python -m <args>``; stderr is a 120-column pseudo-terminal
    when ``terminal``, else a pipe. ``CI`` and ``ASR_KD_PROGRESS`` are unset unless given in ``env``."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("CI", "ASR_KD_PROGRESS")}
    full_env.update(PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1", **env)
    cmd = [sys.executable, "-m", *args]
    if not terminal:
        p = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)
        return p.returncode, p.stderr, p.stdout
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    p = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed its side
                break
            if not data:
                break
            chunks.append(data)
        elif p.poll() is not None:
            break
    out = p.stdout.read().decode()
    p.wait(timeout=60)
    os.close(master)
    return p.returncode, b"".join(chunks).decode(errors="replace"), out


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    make_toy_recipe(root)
    return root


def _train_args(recipe: Path, exp: Path) -> list[str]:
    return [
        "asr_kd.bin.train",
        "--config",
        str(recipe / "conf.yaml"),
        "--exp-dir",
        str(exp),
        "--max-steps",
        "6",
        "--num-threads",
        "1",
        "training.progress_bar=null",  # the toy recipe turns the bar off: back to automatic
        "training.valid_decode=ctc-greedy",
    ]


def _log_lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.replace("\r\n", "\n").split("\n") if LOG_LINE.match(line)]


def test_train_in_a_terminal_draws_the_bar_and_logs_to_the_file(recipe, tmp_path):
    exp = tmp_path / "exp"
    rc, console, stdout = run_cli(_train_args(recipe, exp), tmp_path, terminal=True)
    assert rc == 0, console
    assert re.search(r"train: +\d+%\|", console) and "/6 [" in console  # the bar, steps of max_steps
    assert "audio-s/s" in console and "lr=" in console and "eta " in console
    assert f"tensorboard --logdir {exp / 'tensorboard'}" in console  # said once, above the bar
    assert _log_lines(console) == []  # no INFO line breaks the bar
    log = (exp / "train.log").read_text()
    assert "epoch 0 step 1: loss=" in log and "step 6: validation loss=" in log and " wer=" in log
    assert "train: stopped (max_steps) at step 6" in stdout


@pytest.mark.parametrize("terminal, env", [(True, {"CI": "true"}), (True, {"ASR_KD_PROGRESS": "0"}), (False, {})])
def test_no_bar_and_the_console_log_is_the_log_file(recipe, tmp_path, terminal, env):
    exp = tmp_path / "exp"
    rc, console, _ = run_cli(_train_args(recipe, exp), tmp_path, terminal=terminal, **env)
    assert rc == 0, console
    assert "%|" not in console and "audio-s/s" not in console
    lines = _log_lines(console)
    assert lines and lines == (exp / "train.log").read_text().splitlines()


def test_decode_in_a_terminal_draws_the_bar_and_logs_to_decode_log(recipe, tmp_path):
    from asr_kd.bin import train

    exp = tmp_path / "exp"
    conf = str(recipe / "conf.yaml")
    assert train.main(["--config", conf, "--exp-dir", str(exp), "--max-steps", "1", "--num-threads", "1"]) == 0
    args = ["asr_kd.bin.decode", "--exp-dir", str(exp), "--split", "dev", "--num-threads", "1"]
    rc, console, stdout = run_cli(args, tmp_path, terminal=True)
    assert rc == 0, console
    assert re.search(r"decode dev ctc-greedy: +\d+%\|", console) and _log_lines(console) == []
    assert "dev ctc-greedy: WER" in stdout
    assert "asr_kd.bin.decode: model " in (exp / "decode" / "decode.log").read_text()
    rc, console, _ = run_cli(args, tmp_path, terminal=True, CI="true")
    assert rc == 0 and "%|" not in console and any("asr_kd.bin.decode: model " in x for x in _log_lines(console))


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox")
@pytest.mark.parametrize("bar", [True, False])
def test_synthesis_bar_or_the_periodic_lines(tmp_path, monkeypatch, capsys, bar):
    from asr_kd.corpus import synth as S

    monkeypatch.setenv("ASR_KD_PROGRESS", "1" if bar else "0")  # capsys is no terminal: force either way
    plan = S.plan_split(["HELLO WORLD", "A SMALL TEST", "ONE MORE LINE"], "dev", 3, seed=0)
    assert S.synthesize(plan, tmp_path / "audio", nj=1) == 3
    out, err = capsys.readouterr()
    lines = [x for x in out.splitlines() if x.startswith("synth: ")]
    if bar:
        assert re.search(r"synth: 100%\|.*\| 3/3", err) and len(lines) == 1 and lines[0].startswith("synth: 3/3 ")
    else:
        assert "%|" not in err and [x.split(" (")[0] for x in lines] == ["synth: 1/3", "synth: 2/3", "synth: 3/3"]


@pytest.mark.parametrize("bar", [True, False])
def test_feature_bar(tmp_path, monkeypatch, capsys, bar):
    import numpy as np
    import soundfile as sf
    from lhotse import CutSet, Recording

    from asr_kd.corpus.features import compute_fbank

    rng = np.random.default_rng(0)
    cuts = []
    for i, dur in enumerate((0.5, 1.25)):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(16000 * dur))).astype("float32"), 16000, subtype="PCM_16")
        cuts.append(Recording.from_file(path, recording_id=f"u{i}").to_cut())
    CutSet.from_cuts(cuts).to_file(tmp_path / "synth_cuts_dev.jsonl.gz")
    monkeypatch.setenv("ASR_KD_PROGRESS", "1" if bar else "0")
    (out,) = compute_fbank(tmp_path, tmp_path / "fbank", "synth", ["dev"], extractor="lhotse")
    assert len(CutSet.from_file(out)) == 2
    err = capsys.readouterr().err
    assert ("2/2" in err and "%|" in err) if bar else "%|" not in err


def test_a_second_log_file_replaces_the_first(tmp_path):
    import logging

    from asr_kd.utils.progress import add_log_file

    log = logging.getLogger("asr_kd.test_progress")
    log.setLevel(logging.INFO)
    first = add_log_file(tmp_path / "a.log")
    log.info("one")
    second = add_log_file(tmp_path / "b.log")
    try:
        log.info("two")
    finally:
        logging.getLogger().removeHandler(second)
        second.close()
    assert first not in logging.getLogger().handlers
    assert [x.split(": ")[-1] for x in (tmp_path / "a.log").read_text().splitlines()] == ["one"]
    assert [x.split(": ")[-1] for x in (tmp_path / "b.log").read_text().splitlines()] == ["two"]
