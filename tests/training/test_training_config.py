from __future__ import annotations

from pathlib import Path

import pytest

from asr_kd.training.config import apply_overrides, load_config

CONF = Path(__file__).resolve().parents[2] / "egs" / "synth" / "ASR" / "conf"


def test_overrides_and_base(tmp_path):
    (tmp_path / "base.yaml").write_text("a: {b: 1, c: [1, 2]}\nd: x\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\na: {b: 2}\n")
    cfg = load_config(tmp_path / "child.yaml", ["a.c=[3]", "e.f=1e-3", "d=null", "g=true"])
    assert cfg == {"a": {"b": 2, "c": [3]}, "d": None, "e": {"f": 1e-3}, "g": True}
    with pytest.raises(ValueError):
        apply_overrides({}, ["novalue"])


@pytest.mark.parametrize(
    "name,max_params", [("conformer_ctc_xs", 2e6), ("conformer_ctc_s", 5e6), ("conformer_transducer_s", 5e6)]
)
def test_recipe_configs_build(name, max_params):
    from asr_kd.bin.train import resolve_model_config
    from asr_kd.models.asr_model import build_asr_model
    from asr_kd.training import TrainerConfig, build_optimizer, build_scheduler

    class Tok:
        vocab_size, blank_id, sos_id, eos_id = 500, 0, 1, 1

    cfg = load_config(CONF / f"{name}.yaml")
    model = build_asr_model(resolve_model_config(cfg["model"], Tok(), cfg["data"]["num_mel_bins"]))
    n = sum(p.numel() for p in model.parameters())
    assert n <= max_params, n
    opt = build_optimizer(model.parameters(), cfg["optim"])
    build_scheduler(opt, cfg["scheduler"])
    TrainerConfig.from_dict(cfg["training"])
    assert cfg["data"]["lang_dir"] == "data/lang_bpe_500"
