"""A tiny randomly initialised masked LM (BERT) with a WordPiece vocabulary, written to a folder, for tests
of the MLM teacher and interAED-KD (no hub download).

Usage::

    folder = make_tiny_mlm(tmp_path / "mlm")                 # BertForMaskedLM + fast tokenizer
    folder = make_tiny_mlm(tmp_path / "enc", head=False)     # a BertModel without MLM head
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from asr_kd.testing.dummies import DUMMY_TEXTS

__all__ = ["make_tiny_mlm", "tiny_pieces"]

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def tiny_pieces(texts: Sequence[str] = DUMMY_TEXTS, extra: Sequence[str] = ()) -> list[str]:
    """Specials, the apostrophe, the short words of ``texts`` (lowercased), single letters and their
    ``##`` continuations (so every lowercase word tokenises without ``[UNK]``), then ``extra``."""
    words = sorted({w for t in texts for w in t.lower().replace("'", " ").split() if len(w) <= 4})
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "'", *words, *_LETTERS, *("##" + c for c in _LETTERS)]
    out: list[str] = []
    for p in [*pieces, *extra]:
        if p not in out:
            out.append(p)
    return out


def make_tiny_mlm(
    root: str | Path, *, head: bool = True, seed: int = 0, extra_pieces: Sequence[str] = (), hidden: int = 16
) -> Path:
    """Write a 2-layer BERT (hidden ``hidden``) with its tokenizer to ``root``; returns ``root``."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizerFast
    from transformers.utils import logging as hf_logging

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    pieces = tiny_pieces(extra=extra_pieces)
    (root / "vocab.txt").write_text("\n".join(pieces) + "\n")
    tok = BertTokenizerFast(vocab={p: i for i, p in enumerate(pieces)}, do_lower_case=True)
    cfg = BertConfig(
        vocab_size=len(pieces),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(cfg) if head else BertModel(cfg, add_pooling_layer=False)
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(root)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    tok.save_pretrained(root)
    return root
