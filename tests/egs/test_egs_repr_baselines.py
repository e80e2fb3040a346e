"""egs/synth/ASR/local/repr_baselines.py (issue 17): the constant and per-WordPiece-id lookup predictors of
the stored teacher states score the hand-computed L1 (per token and per encoder frame) on a tiny stored
split; a layer that is not stored and a cut without the field are one clear line."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "egs" / "synth" / "ASR" / "local" / "repr_baselines.py"


def _module():
    spec = importlib.util.spec_from_file_location("repr_baselines", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(kd: Path, split: str, utts: list[tuple[list[int], np.ndarray, float]], field: str = "m") -> None:
    """utts: (ids, states (L, n_layers, D), duration s) -> <kd>/t_cuts_<split>.jsonl.gz + one .npy per cut."""
    store = kd / f"t_repr_{field}_{split}"
    store.mkdir(parents=True, exist_ok=True)
    with gzip.open(kd / f"t_cuts_{split}.jsonl.gz", "wt") as f:
        for i, (ids, h, dur) in enumerate(utts):
            key = f"{split}-{i}.npy"
            np.save(store / key, h[:, None].astype(np.float16))  # (L, K=1, n_l, D)
            custom = {
                f"kd_repr_{field}": {"storage_type": "numpy_files", "storage_path": str(store), "storage_key": key},
                f"kd_repr_{field}_ids": ids,
                f"kd_repr_{field}_info": {"layers": [2, 4]},
            }
            f.write(json.dumps({"id": f"{split}-{i}", "duration": dur, "custom": custom}) + "\n")


def test_constant_and_lookup_equal_hand_computed_values(tmp_path, capsys):
    # layer 2 (index 0), D = 1: train tokens 7 -> values 0, 2; token 8 -> 4. Median over all: 2; per id: 7 -> 1, 8 -> 4
    lay = lambda vals: np.array([[[v], [10 * v]] for v in vals], dtype=np.float32)  # noqa: E731
    _write(tmp_path, "train", [([7, 8], lay([0, 4]), 1.0), ([7], lay([2]), 1.0)])
    # dev: token 7 with value 3 (lookup error 2, constant error 1); token 9 (unseen: constant) with value 2 (0, 0)
    dur = (100 * 4 + 7) / 100  # (dur * 100 - 7) // 4 = 100 frames
    _write(tmp_path, "dev", [([7, 9], lay([3, 2]), dur)])
    rc = _module().main(["--kd-data", str(tmp_path), "--prefix", "t", "--field", "m", "--layers", "2", "4"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "2 WordPiece positions, about 100 encoder frames (0.0200 tokens / frame)" in out
    # per token: constant mean(|3-2|, |2-2|) = 0.5, lookup mean(|3-1|, |2-2|) = 1.0; per frame x 0.02
    assert "| 2 | 0.5000 | 1.0000 | 0.0100 | 0.0200 |" in out
    assert "| 4 | 5.0000 | 10.0000 | 0.1000 | 0.2000 |" in out  # layer 4 holds 10x the values


def test_bad_input_is_one_clear_line(tmp_path):
    lay = np.zeros((1, 2, 1), dtype=np.float32)
    _write(tmp_path, "train", [([7], lay, 1.0)])
    _write(tmp_path, "dev", [([7], lay, 1.0)])
    mod = _module()
    with pytest.raises(SystemExit, match="layer 6 not stored in m"):
        mod.main(["--kd-data", str(tmp_path), "--prefix", "t", "--field", "m", "--layers", "6"])
    with pytest.raises(SystemExit, match="has no kd_repr_other"):
        mod.main(["--kd-data", str(tmp_path), "--prefix", "t", "--field", "other", "--layers", "2"])
