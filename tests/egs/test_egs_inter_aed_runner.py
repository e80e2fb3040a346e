"""The interAED-KD runner of egs/synth/ASR (run_inter_aed.sh) and its configs: usage, argument checks, and
every model's config building its student + KD methods (with a tiny MLM as the tokenizer; no training)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ASR = Path(__file__).resolve().parents[2] / "egs" / "synth" / "ASR"
MODELS = {
    "aed_final": ("aed_kd_final_l4.yaml", ["final"], "mlm"),
    "inter_aed": ("inter_aed_kd_l4.yaml", ["l2", "final"], "mlm"),
    "aed_ref": ("aed_ref_final_l4.yaml", ["final"], "none"),
    "aed_ref_inter": ("aed_ref_inter_l4.yaml", ["l2", "final"], "none"),
}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ASR / "run_inter_aed.sh"), *args], capture_output=True, text=True, timeout=60)


def test_help_and_bad_arguments():
    proc = run("--help")
    assert proc.returncode == 0 and "Usage" in proc.stdout and "Stages:" in proc.stdout
    assert "set -euo" not in proc.stdout
    bad = run("--models", "aed_final no_such_model")
    assert bad.returncode != 0 and "unknown model 'no_such_model'" in bad.stderr
    bad = run("--bogus")
    assert bad.returncode != 0 and "unknown option" in bad.stderr


def test_every_model_has_a_config_the_runner_names():
    text = (ASR / "run_inter_aed.sh").read_text()
    for model, (conf, _, _) in MODELS.items():
        assert f"{model}) echo conf/kd/{conf}" in text
        assert (ASR / "conf" / "kd" / conf).is_file()


@pytest.mark.parametrize("model", sorted(MODELS))
def test_configs_build_student_and_aux_decoders(model, tmp_path):
    pytest.importorskip("transformers")
    import torch

    from asr_kd.bin.train import config_schema
    from asr_kd.kd import build_kd_loss_fn
    from asr_kd.kd.mlm import OfflineMlmTeacher
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.testing.dummies import DUMMY_TEXTS
    from asr_kd.testing.tiny_mlm import make_tiny_mlm
    from asr_kd.training.config import load_config, validate_config

    conf, keys, mode = MODELS[model]
    cfg = load_config(ASR / "conf" / "kd" / conf)
    validate_config(cfg, config_schema())
    base = load_config(ASR / "conf" / "kd" / "ctc_l4.yaml")
    assert cfg["model"] == base["model"] and cfg["training"] == base["training"]  # same student, same run
    method = dict(cfg["kd"]["methods"][0])
    assert method["name"] == "inter_aed_kd" and method["tokenizer_dir"] == "exp/mlm_minilm"
    assert cfg["data"]["manifest_dir"] == ("data/kd_mlm_minilm" if mode == "mlm" else base["data"]["manifest_dir"])
    text = tmp_path / "train.txt"
    text.write_text("\n".join(DUMMY_TEXTS) + "\n")
    method.update(tokenizer_dir=str(make_tiny_mlm(tmp_path / "mlm")), restrict_to=str(text))
    model_cfg = dict(cfg["model"], vocab_size=128)
    student = build_asr_model(model_cfg)
    loss_fn = build_kd_loss_fn(dict(cfg["kd"], methods=[method]), student, "cpu", max_steps=10)
    entry = loss_fn.entries[0]
    assert entry.method.keys == keys and entry.method.mode == mode
    assert isinstance(loss_fn.teacher, OfflineMlmTeacher) == (mode == "mlm")
    assert any(k.startswith("kd_aux.") for k in student.state_dict())
    assert torch.is_tensor(next(iter(entry.method.decoders.parameters())))


WP_MODELS = {
    "wp_ctc": ("ctc_wp_l4.yaml", "ctc_l4.yaml"),
    "wp_inter_aed": ("inter_aed_kd_wp_l4.yaml", "inter_aed_kd_l4.yaml"),
}


def test_wordpiece_models_are_opt_in():
    text = (ASR / "run_inter_aed.sh").read_text()
    for model, (conf, _) in WP_MODELS.items():
        assert f"{model}) echo conf/kd/{conf}" in text
        assert (ASR / "conf" / "kd" / conf).is_file()
    default = next(line for line in text.splitlines() if line.startswith("models="))
    assert "wp_" not in default
    # accepted by --models (no stage in range: nothing runs)
    ok = run("--models", "inter_aed wp_ctc wp_inter_aed", "--stage", "7", "--stop-stage", "6")
    assert ok.returncode == 0, ok.stderr
    bad = run("--models", "wp_nothing")
    assert bad.returncode != 0 and "unknown model 'wp_nothing'" in bad.stderr and "wp_inter_aed" in bad.stderr
    # the lang dir is made from the configs' tokenizer (exp/mlm_minilm) only when a wp model is asked for
    assert 'if [ -n "$wp_lang" ]; then' in text
    assert '--token-type wordpiece --tokenizer-dir "$mlm_exp"' in text and "mlm_exp=exp/mlm_minilm" in text


@pytest.mark.parametrize("model", sorted(WP_MODELS))
def test_wordpiece_configs_vocab_follows_the_lang_dir(model, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("kaldifst")
    import json

    import torch

    from asr_kd.bin.train import config_schema, resolve_model_config
    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.kd import build_kd_loss_fn
    from asr_kd.lm.wordpiece_lang import write_wordpiece_lang_dir
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.testing.dummies import DUMMY_TEXTS
    from asr_kd.testing.tiny_mlm import make_tiny_mlm
    from asr_kd.training.config import load_config, validate_config

    conf, like = WP_MODELS[model]
    cfg = load_config(ASR / "conf" / "kd" / conf)
    validate_config(cfg, config_schema())
    base = load_config(ASR / "conf" / "kd" / like)
    assert cfg["data"]["lang_dir"] == "data/lang_wp" and base["data"]["lang_dir"] != "data/lang_wp"
    assert {k: v for k, v in cfg.items() if k != "data"} == {k: v for k, v in base.items() if k != "data"}
    assert {k: v for k, v in cfg["data"].items() if k != "lang_dir"} == {
        k: v for k, v in base["data"].items() if k != "lang_dir"
    }
    assert "vocab_size" not in cfg["model"]  # taken from the lang dir
    mlm = make_tiny_mlm(tmp_path / "mlm")
    lang = tmp_path / "lang_wp"
    write_wordpiece_lang_dir(mlm, DUMMY_TEXTS, lang)
    tok = Tokenizer.from_dir(lang)
    student = build_asr_model(resolve_model_config(cfg["model"], tok, 80))
    assert student.ctc(torch.zeros(1, 2, int(student.encoder.output_dim))).shape[-1] == tok.vocab_size
    methods = cfg.get("kd", {}).get("methods") or []
    if methods:  # interAED-KD: the decoders' vocabulary is the tokenizer the lang dir was made from
        text = tmp_path / "train.txt"
        text.write_text("\n".join(DUMMY_TEXTS) + "\n")
        method = dict(methods[0], tokenizer_dir=str(mlm), restrict_to=str(text))
        assert methods[0]["tokenizer_dir"] == "exp/mlm_minilm"
        loss_fn = build_kd_loss_fn(dict(cfg["kd"], methods=[method]), student, "cpu", max_steps=10)
        vocab = loss_fn.entries[0].method.vocab
        source = json.loads((lang / "wordpiece.json").read_text())["source"]
        assert {k: source[k] for k in ("size", "sha256")} == vocab.fingerprint()
