"""A toy recipe directory (manifests, BPE lang dir, training config) for CLI tests.

Usage::

    conf = make_toy_recipe(tmp_path)        # tmp_path/{audio,data/manifests,data/lang,conf.yaml}
    train.main(["--config", str(conf), "--exp-dir", str(tmp_path / "exp"), "--max-steps", "2"])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from asr_kd.testing.dummies import DUMMY_TEXTS, make_cutset

__all__ = ["make_toy_recipe", "TOY_MODEL"]

#: a 1-layer Conformer-CTC small enough for a CLI test step in well under a second
TOY_MODEL = {
    "encoder": {
        "type": "conformer",
        "d_model": 32,
        "num_layers": 1,
        "num_heads": 2,
        "ffn_dim": 64,
        "conv_kernel": 3,
        "subsampling_channels": 8,
    },
    "ctc": {},
}

#: two encoder layers with an inter-CTC head at layer 1 (sub-model export, decoding an inter-CTC layer)
TOY_INTER_CTC_MODEL = {
    "encoder": {**TOY_MODEL["encoder"], "num_layers": 2},
    "ctc": {},
    "inter_ctc": {"layers": [1]},
}


def make_toy_recipe(root: Path, model: Mapping[str, Any] | None = None, vocab_size: int = 40) -> Path:
    """Write 6 train / 2 dev / 2 test dummy cuts (prefix ``toy``), a BPE lang dir and ``conf.yaml``.

    Returns the path of ``conf.yaml``; ``model`` replaces :data:`TOY_MODEL`.
    """
    from asr_kd.data.tokenizer import train_bpe

    root = Path(root)
    manifests = root / "data" / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    for split, durations in (("train", [1.2, 1.5, 1.8, 2.0, 1.3, 1.6]), ("dev", [1.4, 1.7]), ("test", [1.1, 1.9])):
        make_cutset(root / "audio", durations, prefix=split[:2]).to_file(manifests / f"toy_cuts_{split}.jsonl.gz")
    text = root / "text.txt"
    text.write_text("\n".join(DUMMY_TEXTS * 4) + "\n")
    train_bpe(text, root / "data" / "lang", vocab_size=vocab_size)
    cfg = {
        "data": {
            "manifest_dir": str(manifests),
            "prefix": "toy",
            "lang_dir": str(root / "data" / "lang"),
            "max_duration": 4.0,
            "num_buckets": 2,
            "buffer_size": 100,
            "num_workers": 0,
            "spec_augment": False,
            "max_valid_cuts": 2,
            "min_duration": 0.5,
        },
        "model": dict(model or TOY_MODEL),
        "loss": {"normalize": "frames"},
        "optim": {"name": "adamw", "lr": 1e-3},
        "scheduler": {"name": "noam", "warmup_steps": 2},
        "training": {"seed": 1, "log_interval": 1, "valid_interval": 2, "ckpt_interval": 2, "progress_bar": False},
    }
    conf = root / "conf.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    return conf
