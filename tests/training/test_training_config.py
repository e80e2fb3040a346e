from __future__ import annotations

from pathlib import Path

import pytest

from asr_kd.training.config import ConfigError, apply_overrides, load_config

CONF = Path(__file__).resolve().parents[2] / "egs" / "synth" / "ASR" / "conf"


def test_overrides_and_base(tmp_path):
    (tmp_path / "base.yaml").write_text("a: {b: 1, c: [1, 2]}\nd: x\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\na: {b: 2}\n")
    cfg = load_config(tmp_path / "child.yaml", ["a.c=[3]", "e.f=1e-3", "d=null", "g=true"])
    assert cfg == {"a": {"b": 2, "c": [3]}, "d": None, "e": {"f": 1e-3}, "g": True}
    with pytest.raises(ValueError):
        apply_overrides({}, ["novalue"])


def test_replace_drops_the_base_keys_of_a_section(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "model: {encoder: {type: conformer, num_layers: 4, subsampling_channels: 32}, ctc: {}}\n"
        "optim: {name: adamw, weight_decay: 0.01}\n"
    )
    (tmp_path / "merged.yaml").write_text("base: base.yaml\nmodel: {encoder: {type: zipformer}}\n")
    (tmp_path / "child.yaml").write_text(
        "base: base.yaml\nreplace: [model.encoder, optim]\nmodel: {encoder: {type: zipformer, preset: s}}\n"
        "optim: {name: scaled_adam}\n"
    )
    merged = load_config(tmp_path / "merged.yaml")
    assert merged["model"]["encoder"] == {"type": "zipformer", "num_layers": 4, "subsampling_channels": 32}
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg == {
        "model": {"encoder": {"type": "zipformer", "preset": "s"}, "ctc": {}},
        "optim": {"name": "scaled_adam"},
    }
    (tmp_path / "bad.yaml").write_text("base: base.yaml\nreplace: [scheduler]\noptim: {name: sgd}\n")
    with pytest.raises(ConfigError, match="replace names 'scheduler', which this file does not set"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "bad2.yaml").write_text("replace: optim\noptim: {name: sgd}\n")
    with pytest.raises(ConfigError, match="replace must be a list of dotted keys"):
        load_config(tmp_path / "bad2.yaml")


def test_overlay_files_compose_in_order(tmp_path):
    (tmp_path / "root.yaml").write_text("a: {x: 1, y: 2}\nb: {p: 1, q: 2}\nc: [1, 2]\n")
    (tmp_path / "row.yaml").write_text("base: root.yaml\nb: {q: 3}\nk: {m: [{n: 1, l: [2]}]}\n")
    (tmp_path / "over.yaml").write_text("replace: [a]\na: {z: 9}\nb: {p: 5}\n")
    cfg = load_config([tmp_path / "row.yaml", tmp_path / "over.yaml"], ["k.m.0.l=[4,final]", "c.-1=7"])
    assert cfg == {"a": {"z": 9}, "b": {"p": 5, "q": 3}, "c": [1, 7], "k": {"m": [{"n": 1, "l": [4, "final"]}]}}
    # the overlay alone, or first: its replace has nothing below it
    assert load_config([tmp_path / "over.yaml"]) == {"a": {"z": 9}, "b": {"p": 5}}
    # order matters: the row laid over the overlay merges a back in
    assert load_config([tmp_path / "over.yaml", tmp_path / "row.yaml"])["a"] == {"z": 9, "x": 1, "y": 2}
    with pytest.raises(ValueError, match="no config file"):
        load_config([])


def test_list_index_overrides_name_a_bad_index():
    cfg = {"kd": {"methods": [{"layers": [2, "final"]}]}}
    assert apply_overrides(cfg, ["kd.methods.0.layers=[4,final]"])["kd"]["methods"][0]["layers"] == [4, "final"]
    assert cfg["kd"]["methods"][0]["layers"] == [2, "final"]  # a copy
    with pytest.raises(ValueError, match=r"kd.methods is a list of 1 items, '1' is not an index"):
        apply_overrides(cfg, ["kd.methods.1.layers=[4]"])
    with pytest.raises(ValueError, match=r"kd.methods is a list of 1 items, 'first' is not an index"):
        apply_overrides(cfg, ["kd.methods.first=1"])
    assert apply_overrides({"a": {}}, ["a.0=1"]) == {"a": {"0": 1}}  # a mapping keeps numeric keys


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


def test_check_section_names_unknown_keys_and_wrong_types():
    """The one check behind every section (train CLI, AsrModelConfig): key names, nested dataclasses."""
    from asr_kd.data import AsrDataConfig
    from asr_kd.training.config import ConfigError, check_section, dataclass_schema

    schema = dataclass_schema(AsrDataConfig, {"lang_dir": str})
    check_section({"max_duration": 100, "spec_augment_config": {"p": 0.5}, "noise_snr": [5, 10]}, schema, "data")
    with pytest.raises(ConfigError, match=r"unknown data config keys \['max_duraton'\]; known: \[.*'max_duration'"):
        check_section({"max_duraton": 100}, schema, "data")
    with pytest.raises(ConfigError, match=r"data.noise_snr must be a list of 2 values \(a number, a number\)"):
        check_section({"noise_snr": [5]}, schema, "data")
    with pytest.raises(ConfigError, match=r"data.spec_augment_config.time_warp must be an integer, not 1.5"):
        check_section({"spec_augment_config": {"time_warp": 1.5}}, schema, "data")
    with pytest.raises(ConfigError, match=r"data.num_workers must be an integer, not True"):
        check_section({"num_workers": True}, schema, "data")

    from asr_kd.models.asr_model import AsrModelConfig

    with pytest.raises(ConfigError, match=r"model.ctc_weight must be a number, not 'high'"):
        AsrModelConfig.from_dict({"vocab_size": 10, "ctc_weight": "high"})


def test_record_config_keeps_every_run(tmp_path):
    """config.yaml is the latest run's; a config.yaml from before the history is kept, not overwritten."""
    import yaml

    from asr_kd.training.resume import record_config

    (tmp_path / "config.yaml").write_text("optim: {lr: 0.1}\n")
    record_config(tmp_path, {"optim": {"lr": 0.2}}, start_step=10, resumed_from=tmp_path / "checkpoint-10.pt")
    record_config(
        tmp_path,
        {"optim": {"lr": 0.3}},
        start_step=20,
        resumed_from="checkpoint-20.pt",
        changes=[("optim.lr", 0.2, 0.3)],
    )
    hist = sorted(p.name for p in (tmp_path / "config-history").iterdir())
    assert hist == ["000-before-history.yaml", "001-step-10.yaml", "002-step-20.yaml"]
    assert yaml.safe_load((tmp_path / "config-history" / "000-before-history.yaml").read_text()) == {
        "optim": {"lr": 0.1}
    }
    text = (tmp_path / "config.yaml").read_text()
    assert yaml.safe_load(text) == {"optim": {"lr": 0.3}}
    assert "# run 2 started at step 20" in text and "optim.lr: 0.2 -> 0.3" in text
