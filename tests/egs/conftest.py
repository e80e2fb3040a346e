"""Fixtures of the egs runner tests.

- ``tiny_berts``: a 6- and a 12-layer tiny BERT (stand-ins of the MiniLM-L6 / MPNet-base repr teachers) and a
  40-piece BPE lang dir, built once per session (:func:`make_tiny_berts`).
"""

from __future__ import annotations

from pathlib import Path

import pytest


def make_tiny_berts(root: Path) -> tuple[dict[int, Path], Path]:
    """Write ``<root>/bert6`` and ``<root>/bert12`` (``BertModel`` without pooler, hidden 8, intermediate 16,
    the tokenizer of :func:`asr_kd.testing.tiny_mlm.make_tiny_mlm`) and ``<root>/lang`` (BPE, V = 40, trained
    on ``DUMMY_TEXTS``); returns ``({6: bert6, 12: bert12}, lang)``."""
    from transformers import BertConfig, BertModel

    from asr_kd.data.tokenizer import train_bpe
    from asr_kd.testing.dummies import DUMMY_TEXTS
    from asr_kd.testing.tiny_mlm import make_tiny_mlm

    tiny = make_tiny_mlm(root / "tok", head=False)
    dirs = {}
    for depth in (6, 12):
        c = BertConfig.from_pretrained(tiny)
        c.num_hidden_layers, c.hidden_size, c.intermediate_size = depth, 8, 16
        d = root / f"bert{depth}"
        BertModel(c, add_pooling_layer=False).save_pretrained(d)
        for f in tiny.iterdir():
            if f.name.startswith(("vocab", "tokenizer", "special")):
                (d / f.name).write_bytes(f.read_bytes())
        dirs[depth] = d
    (root / "t.txt").write_text("\n".join(DUMMY_TEXTS * 4) + "\n")
    train_bpe(root / "t.txt", root / "lang", vocab_size=40)
    return dirs, root / "lang"


@pytest.fixture(scope="session")
def tiny_berts(tmp_path_factory):
    """``({6: bert6_dir, 12: bert12_dir}, lang_dir)`` of :func:`make_tiny_berts`; skipped without transformers."""
    pytest.importorskip("transformers")
    return make_tiny_berts(tmp_path_factory.mktemp("tiny_berts"))
