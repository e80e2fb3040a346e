"""The WordPiece lang-dir tokenizer: greedy longest match equals Hugging Face's WordPiece model on the
same vocabulary, text -> ids -> text round-trips exactly (``##`` joined, case restored), and words that
cannot be spelt are refused with a clear error."""

from __future__ import annotations

import json

import pytest

from asr_kd.testing.dummies import DUMMY_TEXTS


def _lang_dir(root, pieces, restore_case="upper"):
    root.mkdir(parents=True, exist_ok=True)
    rows = ["<blk>", "<sos/eos>", "<unk>", *pieces]
    (root / "tokens.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(rows)))
    cfg = {"lowercase": True, "strip_accents": True, "restore_case": restore_case, "prefix": "##"}
    (root / "wordpiece.json").write_text(json.dumps(cfg))
    return root


def test_segmenter_equals_hf_wordpiece(tmp_path):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from asr_kd.data.wordpiece_tokenizer import WordPieceSegmenter, normalize_word
    from asr_kd.testing.tiny_mlm import make_tiny_mlm

    folder = make_tiny_mlm(tmp_path / "mlm", extra_pieces=["##'", "quick", "##ly"])
    hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    seg = WordPieceSegmenter(hf.get_vocab())
    model, norm = hf.backend_tokenizer.model, hf.backend_tokenizer.normalizer
    words = {w for t in DUMMY_TEXTS for w in t.split()} | {"QUICKLY", "VEXINGLY"}
    for w in sorted(words):
        n = normalize_word(w, lowercase=True, strip_accents=True)
        assert n == norm.normalize_str(w)
        want = [t.value for t in model.tokenize(n)]  # HF's WordPiece on the word, no punctuation split
        got = seg(n)
        assert got == want, w
    assert seg("didn't") == ["didn", "##'", "##t"]


def test_round_trip_and_refusals(tmp_path):
    from asr_kd.data.tokenizer import Tokenizer, UntokenizableError

    letters = "abcdefghijklmnopqrstuvwxyz'"
    pieces = ["the", "quick", "didn", *letters, *("##" + c for c in letters)]
    tok = Tokenizer.from_dir(_lang_dir(tmp_path / "wp", pieces))
    assert type(tok).__name__ == "WordPieceTokenizer" and tok.vocab_size == 3 + len(pieces)
    for text in DUMMY_TEXTS:
        ids = tok.encode(text)
        assert min(ids) >= 3
        assert tok.decode(ids) == " ".join(text.split())
        assert tok.decode([0, *ids, 1, 0]) == text  # blank and <sos/eos> dropped
    assert tok.encode_as_pieces("THEY DIDN'T")[-3:] == ["didn", "##'", "##t"]
    # a continuation the model emits first starts a word; <unk> is a word of its own
    assert tok.decode([tok.piece_to_id("##t"), tok.piece_to_id("##h"), 2, tok.piece_to_id("##e")]) == "TH <unk> E"
    for bad in ("THE Quick", "NAÏVE", "42", "   "):
        with pytest.raises(UntokenizableError):
            tok.encode(bad)
    with pytest.raises(UntokenizableError, match=r"\['42'\].*<unk>"):
        tok.encode("THE 42")
    lower = Tokenizer.from_dir(_lang_dir(tmp_path / "lower", pieces, restore_case="none"))
    assert lower.decode(lower.encode("the quick")) == "the quick"
