"""The lm_repr_transfer runner of egs/synth/ASR (run_repr_kd.sh) and its configs: usage, argument checks, every
row's config building the same student + its regression networks (tiny BERTs stand in for the teachers; no
training), and the mapped layers each row documents."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ASR = Path(__file__).resolve().parents[2] / "egs" / "synth" / "ASR"
#: row -> (config, {teacher name: mapped layers of a 6-layer MiniLM / 12-layer MPNet})
ROWS = {
    "last1": ("transducer_last1.yaml", {"minilm": [6]}),
    "last3": ("transducer_last3.yaml", {"minilm": [4, 5, 6]}),
    "first3": ("transducer_first3.yaml", {"minilm": [1, 2, 3]}),
    "uniform3": ("transducer_uniform3.yaml", {"minilm": [2, 4, 6]}),
    "random3": ("transducer_random3.yaml", {"minilm": [1, 4, 6]}),
    "uniform3_ctx": ("transducer_uniform3_ctx.yaml", {"minilm_ctx": [2, 4, 6]}),
    "uniform3_ctx_mpnet": ("transducer_uniform3_ctx_mpnet.yaml", {"minilm_ctx": [2, 4, 6], "mpnet_ctx": [4, 8, 12]}),
    "uniform3_ctx_mpnet384": (
        "transducer_uniform3_ctx_mpnet384.yaml",
        {"minilm_ctx": [2, 4, 6], "mpnet_ctx": [4, 8, 12]},
    ),
}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ASR / "run_repr_kd.sh"), *args], capture_output=True, text=True, timeout=60)


def test_help_and_bad_arguments():
    proc = run("--help")
    assert proc.returncode == 0 and "Usage" in proc.stdout and "Stages:" in proc.stdout
    assert "set -euo" not in proc.stdout
    bad = run("--rows", "last1 no_such_row")
    assert bad.returncode != 0 and "unknown row 'no_such_row'" in bad.stderr
    bad = run("--mpnet-proj", "100")
    assert bad.returncode != 0 and "--mpnet-proj must be 0 or 384" in bad.stderr
    bad = run("--bogus")
    assert bad.returncode != 0 and "unknown option" in bad.stderr


def test_runner_uses_the_shared_train_to():
    text = (ASR / "run_repr_kd.sh").read_text()
    assert "source local/log.sh" in text and "train_to " in text and "asr_kd.bin.train" not in text
    for row, (conf, _) in ROWS.items():
        assert (ASR / "conf" / "repr" / conf).is_file()
        if row != "uniform3_ctx_mpnet384":
            assert f"{row}|" in text or f"|{row})" in text or f"|{row}|" in text


@pytest.mark.parametrize("row", sorted(ROWS))
def test_row_configs_build_the_same_student_and_their_regression_networks(row, tiny_berts):
    pytest.importorskip("transformers")
    from asr_kd.bin.train import config_schema
    from asr_kd.kd import build_kd_loss_fn
    from asr_kd.kd.repr import OfflineReprTeacher
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.training.config import load_config, validate_config

    conf, layers = ROWS[row]
    cfg = load_config(ASR / "conf" / "repr" / conf)
    validate_config(cfg, config_schema())
    base = load_config(ASR / "conf" / "repr" / "transducer_l4.yaml")
    assert cfg["model"] == base["model"] and cfg["training"] == base["training"] and cfg["data"] == base["data"]
    assert base["model"]["transducer"] and base["data"]["manifest_dir"] == "data/kd_repr"
    assert cfg["kd"]["teacher"] == {"type": "offline_repr", "models": list(layers)}
    dirs, lang = tiny_berts  # stand-ins of the teachers' depths: a 6- and a 12-layer tiny BERT
    method = dict(cfg["kd"]["methods"][0], lang_dir=str(lang))
    method["teachers"] = [
        dict(t, model_dir=str(dirs[12 if t["name"].startswith("mpnet") else 6])) for t in method["teachers"]
    ]
    assert method["name"] == "lm_repr_transfer" and method["loss"] == "l1"
    student = build_asr_model(dict(cfg["model"], vocab_size=40))
    loss_fn = build_kd_loss_fn(dict(cfg["kd"], methods=[method]), student, "cpu", max_steps=10)
    assert isinstance(loss_fn.teacher, OfflineReprTeacher)
    m = loss_fn.entries[0].method
    assert {s.name: s.layers for s in m.specs} == layers
    assert sorted(m.regressors) == sorted(f"{n}_l{k}" for n, ks in layers.items() for k in ks)
    proj = [t.get("proj_dim") for t in cfg["kd"]["methods"][0]["teachers"] if t["name"] == "mpnet_ctx"]
    for s in m.specs:
        assert s.dim == (proj[0] if s.name == "mpnet_ctx" and proj and proj[0] else 8)
    assert any(k.startswith("kd_aux.") for k in student.state_dict())
