"""Tests for asr_kd.data.tokenizer and asr_kd.bin.prepare_lang."""

from __future__ import annotations

import pytest

from asr_kd.bin import prepare_lang
from asr_kd.data.tokenizer import (
    BLANK,
    SOS_EOS,
    UNK,
    Tokenizer,
    UntokenizableError,
    read_lexicon,
    read_symbol_table,
    train_bpe,
)

SENTENCES = [
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "SHE STRUCK HER HEAD ON THE LOW CEILING",
    "IT'S A LONG WAY TO THE TOP IF YOU WANT TO ROCK AND ROLL",
    "PACK MY BOX WITH FIVE DOZEN LIQUOR JUGS",
    "HOW VEXINGLY QUICK DAFT ZEBRAS JUMP",
    "THE FIVE BOXING WIZARDS JUMP QUICKLY",
    "A STITCH IN TIME SAVES NINE",
    "THEY DIDN'T KNOW WHERE THE ROAD WOULD LEAD THEM",
]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "train.txt"
    # repeat so that the unigram trainer has statistics to work with
    path.write_text("\n".join(SENTENCES * 10) + "\n")
    return path


@pytest.fixture(scope="module")
def lang_dir(text_file, tmp_path_factory):
    d = tmp_path_factory.mktemp("lang_bpe_60")
    train_bpe(text_file, d, vocab_size=60)
    return d


@pytest.fixture(scope="module")
def tok(lang_dir):
    return Tokenizer.from_dir(lang_dir)


def test_special_ids(tok):
    assert tok.blank_id == 0 and tok.id_to_piece(0) == BLANK
    assert tok.sos_id == tok.eos_id == tok.piece_to_id(SOS_EOS) == 1
    assert tok.unk_id == 2 and tok.id_to_piece(2) == UNK
    assert tok.vocab_size == 60


@pytest.mark.parametrize("text", SENTENCES + ["ZEBRAS DON'T JUMP", "QUIZ"])
def test_roundtrip(tok, text):
    ids = tok.encode(text)
    assert ids and all(3 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_whitespace_is_normalised(tok):
    assert tok.encode("  THE\tDOG \n") == tok.encode("THE DOG")


def test_decode_drops_blank_and_sos(tok):
    ids = tok.encode("THE DOG")
    assert tok.decode([tok.blank_id, *ids, tok.eos_id]) == "THE DOG"


def test_batch(tok):
    texts = ["THE DOG", "A FOX"]
    batch = tok.encode_batch(texts)
    assert batch == [tok.encode(t) for t in texts]
    assert tok.decode_batch(batch) == texts


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_raises(tok, text):
    with pytest.raises(UntokenizableError, match="empty"):
        tok.encode(text)


def test_unseen_characters_raise_and_are_named(tok):
    with pytest.raises(UntokenizableError) as err:
        tok.encode("THE DOG 42 é")
    msg = str(err.value)
    assert "'4'" in msg and "'2'" in msg and "'é'" in msg
    assert "'T'" not in msg
    with pytest.raises(UntokenizableError):
        tok.encode("the dog")  # lower case is outside the alphabet
    assert issubclass(UntokenizableError, ValueError)


def test_literal_special_piece_is_not_the_blank(tok):
    # "<blk>" is a control symbol: text containing it is not silently mapped to id 0
    with pytest.raises(UntokenizableError):
        tok.encode("THE <blk> DOG")


def test_id_piece_mapping(tok):
    for i in range(tok.vocab_size):
        assert tok.piece_to_id(tok.id_to_piece(i)) == i
    assert tok.piece_to_id("NOT-A-PIECE") == tok.unk_id
    with pytest.raises(IndexError):
        tok.id_to_piece(tok.vocab_size)


def test_training_is_deterministic(text_file, lang_dir, tmp_path):
    train_bpe(text_file, tmp_path / "again", vocab_size=60)
    for name in ("bpe.model", "tokens.txt", "lexicon.txt", "words.txt", "lexicon_char.txt"):
        assert (tmp_path / "again" / name).read_bytes() == (lang_dir / name).read_bytes(), name


def test_bpe_model_type(text_file, tmp_path):
    tok = train_bpe(text_file, tmp_path, vocab_size=50, model_type="bpe")
    assert tok.blank_id == 0 and tok.unk_id == 2
    assert tok.decode(tok.encode(SENTENCES[0])) == SENTENCES[0]
    with pytest.raises(ValueError):
        train_bpe(text_file, tmp_path, vocab_size=50, model_type="word")


def test_small_text_gives_smaller_vocab_not_error(tmp_path):
    (tmp_path / "t.txt").write_text("AB BA\n")
    tok = train_bpe(tmp_path / "t.txt", tmp_path / "lang", vocab_size=500)
    assert tok.vocab_size < 500
    assert tok.decode(tok.encode("AB")) == "AB"


def test_lang_files_are_consistent(tok, lang_dir):
    words = {w for s in SENTENCES for w in s.split()}
    tokens = read_symbol_table(lang_dir / "tokens.txt")
    assert len(tokens) == tok.vocab_size
    assert all(tok.piece_to_id(p) == i for p, i in tokens.items())

    word_table = read_symbol_table(lang_dir / "words.txt")
    assert word_table["<eps>"] == 0
    assert sorted(word_table.values()) == list(range(len(word_table)))
    assert words <= set(word_table) and {"#0", "<s>", "</s>", "<UNK>"} <= set(word_table)

    lexicon = read_lexicon(lang_dir / "lexicon.txt")
    assert lexicon.pop("<UNK>") == [UNK]
    assert set(lexicon) == words
    for word, pieces in lexicon.items():
        assert pieces == [tok.id_to_piece(i) for i in tok.encode(word)]
        assert "".join(pieces).replace("\u2581", "") == word
        assert all(p in tokens for p in pieces)

    chars = read_lexicon(lang_dir / "lexicon_char.txt")
    assert set(chars) == words
    assert all(units == list(w) for w, units in chars.items())
    assert {c for units in chars.values() for c in units} <= tok.alphabet


def test_prepare_lang_cli_skips_existing(text_file, tmp_path, capsys):
    out = tmp_path / "lang_bpe_40"
    assert prepare_lang.main(["--text", str(text_file), "--lang-dir", str(out), "--vocab-size", "40"]) == 0
    model = out / "bpe.model"
    mtime = model.stat().st_mtime_ns
    assert Tokenizer.from_dir(out).vocab_size == 40
    prepare_lang.main(["--text", str(text_file), "--lang-dir", str(out), "--vocab-size", "40"])
    assert "skipping" in capsys.readouterr().out
    assert model.stat().st_mtime_ns == mtime
    prepare_lang.main(["--text", str(text_file), "--lang-dir", str(out), "--vocab-size", "45", "--force"])
    assert Tokenizer.from_dir(out).vocab_size == 45


def test_prepare_lang_installs_a_given_bpe_model(lang_dir, tmp_path, capsys):
    """--bpe-model: the lang dir gets that model (same ids for every word) and lexicons of the new text."""
    new_text = tmp_path / "other.txt"
    new_text.write_text("THE LAZY FOX\nA QUICK ZEBRA JUMPS\n")
    out = tmp_path / "lang"
    argv = ["--text", str(new_text), "--lang-dir", str(out), "--vocab-size", "60", "--bpe-model"]
    assert prepare_lang.main([*argv, str(lang_dir / "bpe.model")]) == 0
    assert (out / "bpe.model").read_bytes() == (lang_dir / "bpe.model").read_bytes()
    assert (out / "tokens.txt").read_text() == (lang_dir / "tokens.txt").read_text()
    teacher, student = Tokenizer.from_dir(lang_dir), Tokenizer.from_dir(out)
    assert student.encode("A QUICK ZEBRA JUMPS") == teacher.encode("A QUICK ZEBRA JUMPS")
    words = [line.split()[0] for line in (out / "words.txt").read_text().splitlines()]
    assert words == ["<eps>", "<UNK>", "A", "FOX", "JUMPS", "LAZY", "QUICK", "THE", "ZEBRA", "#0", "<s>", "</s>"]
    assert read_lexicon(out / "lexicon.txt")["ZEBRA"] == teacher.encode_as_pieces("ZEBRA")
    capsys.readouterr()
    assert prepare_lang.main([*argv, str(lang_dir / "bpe.model")]) == 0  # the same model again: skipped
    assert "skipping the BPE model" in capsys.readouterr().out


def test_prepare_lang_bpe_model_errors(lang_dir, text_file, tmp_path):
    base = ["--text", str(text_file), "--lang-dir", str(tmp_path / "lang")]
    with pytest.raises(ValueError, match=r"has 60 pieces, not the requested 128 \(--vocab-size\)"):
        prepare_lang.main([*base, "--vocab-size", "128", "--bpe-model", str(lang_dir / "bpe.model")])
    with pytest.raises(FileNotFoundError, match="nope.model not found"):
        prepare_lang.main([*base, "--vocab-size", "60", "--bpe-model", str(tmp_path / "nope.model")])
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a sentencepiece model")
    with pytest.raises(ValueError, match="bad.model is not a SentencePiece model"):
        prepare_lang.main([*base, "--vocab-size", "60", "--bpe-model", str(bad)])
