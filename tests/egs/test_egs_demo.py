"""egs/synth/ASR/demo.sh (``make demo``): the few-step demo end to end, and its bad-input checks
(teacher bundle missing or corrupt, a second demo in the same tree, a disk too small for the corpus).

The end-to-end test runs ``DEMO_QUICK=1`` (tiny corpus, 4 steps per student) into temporary directories;
it needs espeak-ng and sox, and the text .debs (cached in egs/synth/ASR/download/).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ASR = Path(__file__).resolve().parents[2] / "egs" / "synth" / "ASR"
BUNDLE = ASR / "pretrained" / "zipformer_transducer_s"
needs_corpus_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("espeak-ng", "sox", "dpkg-deb", "apt-get", "flock")),
    reason="needs espeak-ng, sox, apt-get/dpkg-deb and flock",
)


def demo(tmp_path: Path, timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    full = {
        **os.environ,
        "CI": "true",
        "DEMO_QUICK": "1",
        "DEMO_DATA_DIR": str(tmp_path / "data"),
        "DEMO_EXP_DIR": str(tmp_path / "exp"),
        **env,
    }
    return subprocess.run(["bash", str(ASR / "demo.sh")], capture_output=True, text=True, timeout=timeout, env=full)


def check_teacher(bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ASR / "local" / "demo.py"), "check-teacher", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ASR,
    )


def test_help():
    proc = subprocess.run(["bash", str(ASR / "demo.sh"), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "DEMO_MINUTES" in proc.stdout and "DEMO_QUICK" in proc.stdout and "set -euo" not in proc.stdout


@pytest.mark.slow
@needs_corpus_tools
def test_quick_demo_end_to_end(tmp_path):
    proc = demo(tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    exp = tmp_path / "exp"
    table = json.loads((exp / "demo_results.json").read_text())
    assert [r["model"] for r in table["rows"]] == ["teacher", "student alone", "student + KD"]
    # every number in the table is the decoder's own record (results.jsonl) of the model it names
    for r in table["rows"]:
        res = Path(r["errs"]).parent / "results.jsonl"
        recorded = [json.loads(line) for line in res.read_text().splitlines()][-1]
        assert (r["wer"], r["cer"], r["rtf"], r["method"]) == (
            recorded["wer"],
            recorded["cer"],
            recorded["rtf"],
            recorded["method"],
        )
        assert r["num_utts"] == 50  # the tiny test split
        assert Path(r["recogs"]).is_file() and Path(r["errs"]).is_file()
    teacher, alone, kd = table["rows"]
    assert teacher["method"].startswith("modified-beam") and alone["method"] == kd["method"] == "ctc-greedy"
    assert alone["steps"] == kd["steps"] == 4 and alone["params"] == kd["params"] < teacher["params"]
    assert teacher["wer"] < 60.0  # the pretrained teacher recognises the tiny test set (27 % on default's)
    md = (exp / "demo_results.md").read_text()
    assert sum(line.startswith("| ") for line in md.splitlines()) == 4  # header + 3 rows
    assert f"| {teacher['wer']:.2f} |" in md and f"| {kd['cer']:.2f} |" in md
    # the KD student read the teacher's stored posteriors; the student alone did not
    assert "ctc_kd=" in (exp / "student_kd_s4" / "train.log").read_text()
    assert "ctc_kd" not in (exp / "student_s4" / "train.log").read_text()
    assert "demo: table" in proc.stdout and "recogs" in proc.stdout
    try:
        import asr_kd.bin.plot  # noqa: F401
    except ImportError:
        pass
    else:
        png = exp / "curves.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in proc.stdout
    # re-running resumes: nothing is trained or decoded again
    again = demo(tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trained to step 4 already" in again.stdout and "decoded already" in again.stdout


def test_missing_and_corrupt_teacher_are_explained(tmp_path):
    missing = check_teacher(tmp_path / "no_such_bundle")
    assert missing.returncode == 2
    assert "no_such_bundle is missing" in missing.stderr and "git checkout --" in missing.stderr
    bundle = tmp_path / "teacher"
    shutil.copytree(BUNDLE, bundle)
    assert check_teacher(bundle).returncode == 0
    model = bundle / "model.pt"
    data = bytearray(model.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # zeros inside the weights: torch loads it fine
    model.write_bytes(bytes(data))
    corrupt = check_teacher(bundle)
    assert corrupt.returncode == 2, corrupt.stdout + corrupt.stderr
    assert "is corrupt" in corrupt.stderr and ("checksum" in corrupt.stderr or "cannot be read" in corrupt.stderr)
    assert f"git checkout -- {bundle}" in corrupt.stderr and "'Reproduce'" in corrupt.stderr
    model.unlink()
    incomplete = check_teacher(bundle)
    assert incomplete.returncode == 2 and "model.pt" in incomplete.stderr


@needs_corpus_tools
def test_demo_stops_before_preparing_with_a_broken_teacher(tmp_path):
    bundle = tmp_path / "teacher"
    shutil.copytree(BUNDLE, bundle)
    (bundle / "tokens.txt").write_text("<blk> 0\n")
    proc = demo(tmp_path, timeout=120, DEMO_TEACHER=str(bundle))
    assert proc.returncode == 2
    assert "demo: error: the pretrained teacher" in proc.stderr and "tokens.txt" in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing was prepared


@needs_corpus_tools
def test_a_second_demo_in_the_same_tree_is_refused(tmp_path):
    lock = ASR / ".demo.lock"
    with open(lock, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a demo is running
        try:
            f.seek(0)
            f.truncate()
            f.write("4242\n")
            f.flush()
            proc = demo(tmp_path, timeout=60)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    assert proc.returncode == 1
    assert "another demo is already running in this tree (pid 4242" in proc.stderr
    assert "egs/synth/ASR/.demo.lock" in proc.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "exp").exists()


@needs_corpus_tools
def test_a_disk_too_small_for_the_corpus_stops_before_synthesis(tmp_path):
    proc = demo(tmp_path, timeout=300, ASR_KD_FREE_BYTES=str(10_000_000))
    assert proc.returncode != 0
    assert "not enough disk for the corpus" in proc.stderr and "10 MB free" in proc.stderr
    # tiny: 400 wavs + their fbank, estimated before any wav is written
    assert "400 new wavs" in proc.stderr
    assert not list((tmp_path / "data").rglob("*.wav"))
