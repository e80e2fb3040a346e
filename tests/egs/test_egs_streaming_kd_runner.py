"""The streaming-KD runner of egs/synth/ASR (run_streaming_kd.sh) and conf/streaming: usage, argument and
chunk checks at start-up, the shared train_to, and every row's config building its student and KD methods
against the committed full-context teacher (no training)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ASR = Path(__file__).resolve().parents[2] / "egs" / "synth" / "ASR"
TEACHER = ASR / "pretrained" / "zipformer_transducer_s"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ASR / "run_streaming_kd.sh"), *args], capture_output=True, text=True, timeout=120
    )


def test_help_bad_arguments_and_chunk_checks():
    proc = run("--help")
    assert proc.returncode == 0 and "Usage" in proc.stdout and "Stages:" in proc.stdout
    assert "set -euo" not in proc.stdout
    bad = run("--rows", "no_kd no_such_row")
    assert bad.returncode != 0 and "unknown row 'no_such_row'" in bad.stderr
    bad = run("--bogus")
    assert bad.returncode != 0 and "unknown option" in bad.stderr
    bad = run("--dynamic", "maybe")
    assert bad.returncode != 0 and "--dynamic true|false" in bad.stderr
    bad = run("--stop-stage", "0", "--chunk-ms", "120")
    assert bad.returncode != 0 and "must be a multiple of 4" in bad.stderr
    bad = run("--stop-stage", "0", "--chunk-ms", "100")
    assert bad.returncode != 0 and "output frames are 40 ms" in bad.stderr
    bad = run("--stop-stage", "0", "--left-ms", "600")
    assert bad.returncode != 0 and "not a whole number of 160 ms chunks" in bad.stderr
    if TEACHER.is_dir():
        ok = run("--stop-stage", "0")
        assert ok.returncode == 0, ok.stderr
        assert "chunk 160 ms = 4 frames, left context 640 ms = 4 chunks" in ok.stdout


def test_runner_uses_the_shared_train_to_and_every_config():
    text = (ASR / "run_streaming_kd.sh").read_text()
    assert "source local/log.sh" in text and "train_to " in text and "asr_kd.bin.train" not in text
    confs = set(re.findall(r"echo conf/streaming/([\w.]+\.yaml)", text))
    have = {p.name for p in (ASR / "conf" / "streaming").glob("*.yaml")}
    assert confs <= have and have - confs == {"student_s_dynamic.yaml"}
    # --dynamic true gives every row the dynamic config's training.chunk
    import yaml

    from asr_kd.training.config import load_config

    line = re.search(r'chunk_cfg="training\.chunk=(\{dynamic: true[^"]*\})"', text).group(1)
    want = load_config(ASR / "conf" / "streaming" / "student_s_dynamic.yaml")["training"]["chunk"]
    assert yaml.safe_load(line) == want


def _rows():
    return sorted(p.name for p in (ASR / "conf" / "streaming").glob("*.yaml"))


@pytest.mark.parametrize("conf", _rows())
def test_row_config_builds_student_and_methods(conf):
    from asr_kd.kd import build_kd_loss_fn
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.training.asr_task import ChunkConfig
    from asr_kd.training.config import load_config

    cfg = load_config(ASR / "conf" / "streaming" / conf)
    model_cfg = dict(cfg["model"], vocab_size=128)
    model_cfg["encoder"] = {**model_cfg["encoder"], "input_dim": 80}
    student = build_asr_model(model_cfg)
    assert student.encoder.causal and student.encoder.num_layers == 8 and student.transducer is not None
    chunk = ChunkConfig.from_dict(cfg["training"]["chunk"]).for_encoder(student.encoder)
    if not chunk.dynamic:
        assert (chunk.chunk_size, chunk.left_context) == (4, 4)  # 160 ms, 640 ms
    if not cfg.get("kd"):
        return
    if not TEACHER.is_dir():
        pytest.skip("no pretrained teacher bundle")
    kd = dict(cfg["kd"], teacher={"type": "asr", "checkpoint": str(TEACHER)})
    fn = build_kd_loss_fn(kd, student, "cpu", normalize="frames", chunk=chunk)
    assert fn.teacher.model.encoder.num_layers == student.encoder.num_layers  # same depth
    assert not getattr(fn.teacher.model.encoder, "causal", False)  # full context
    method = fn.entries[0].method
    if fn.entries[0].name == "streaming_kd":
        assert method.pairs == [(2, 2), (4, 4), (6, 6), (8, 8)]
        names = {k.split(".")[4] for k in student.state_dict() if k.startswith("kd_aux.")}
        want = {"in_proj", "transformer", "out_proj"} if method.mode == "branch" else set()
        assert want <= names
        assert ("lstm" in names) == (method.mode == "branch" and bool(method.weights["skd_apc"]))
