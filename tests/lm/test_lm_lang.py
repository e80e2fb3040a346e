"""Lang-dir files for graphs (asr_kd.lm.lang, prepare_lang): disambiguation symbols, L_disambig,
and errors naming the file and line for inconsistent lexicons / symbol tables."""

import pytest

from asr_kd.lm.lang import (
    LangError,
    LexiconEntry,
    add_disambig_symbols,
    load_lexicon_ids,
    read_lexicon_entries,
    read_symbols,
    write_disambig_files,
)

kf = pytest.importorskip("kaldifst")

TOKENS = "<blk> 0\na 1\nb 2\nc 3\n"
WORDS = "<eps> 0\nA 1\nB 2\nC 3\nD 4\nE 5\n#0 6\n<s> 7\n</s> 8\n"
# D is a homophone of A; E ("b") is a prefix of B ("b c")
LEXICON = "A a\nB b c\nC c c\nD a\nE b\n"


def lang(tmp_path, tokens=TOKENS, words=WORDS, lexicon=LEXICON):
    (tmp_path / "tokens.txt").write_text(tokens)
    (tmp_path / "words.txt").write_text(words)
    (tmp_path / "lexicon.txt").write_text(lexicon)
    return tmp_path


def test_disambig_symbols_on_prefixes_and_homophones():
    entries = [LexiconEntry(w, tuple(u.split()), i) for i, (w, u) in enumerate(
        [("A", "a"), ("B", "b c"), ("C", "c c"), ("D", "a"), ("E", "b"), ("F", "b c d")], 1)]  # fmt: skip
    out, k = add_disambig_symbols(entries)
    assert [(e.word, " ".join(e.units)) for e in out] == [
        ("A", "a #1"),  # shared with D
        ("B", "b c #1"),  # a prefix of F
        ("C", "c c"),
        ("D", "a #2"),
        ("E", "b #1"),  # a prefix of B
        ("F", "b c d"),
    ]
    assert k == 2


def test_write_disambig_files(tmp_path):
    d = lang(tmp_path)
    info = write_disambig_files(d)
    assert info["max_disambig"] == 2
    assert (d / "lexicon_disambig.txt").read_text() == "A a #1\nB b c\nC c c\nD a #2\nE b #1\n"
    assert (d / "tokens_disambig.txt").read_text() == TOKENS + "#0 4\n#1 5\n#2 6\n"
    L = kf.StdVectorFst.read(str(d / "L_disambig.fst"))
    tok = read_symbols(d / "tokens_disambig.txt")
    words = read_symbols(d / "words.txt")
    id2word = {i: w for w, i in words.items()}
    # every spelling (with its #k) transduces to its word, and only to it; #0 passes through as #0
    for e in read_lexicon_entries(d / "lexicon_disambig.txt"):
        kf.arcsort(L, sort_type="ilabel")
        out = kf.compose(kf.make_linear_acceptor([tok[u] for u in e.units]), L)
        ok, _, olabels, _ = kf.get_linear_symbol_sequence(kf.shortest_path(out))
        assert ok and [id2word[o] for o in olabels if o] == [e.word]
    lin = kf.make_linear_acceptor([tok["#0"], tok["a"], tok["#1"], tok["#0"]])
    ok, _, olabels, _ = kf.get_linear_symbol_sequence(kf.shortest_path(kf.compose(lin, L)))
    assert ok and [id2word[o] for o in olabels if o] == ["#0", "A", "#0"]


@pytest.mark.parametrize(
    "field,text,msg",
    [
        ("lexicon", LEXICON + "F a b\n", "lexicon.txt:6: word 'F' is not in .*words.txt"),
        ("lexicon", "A a\nB b x\n", "lexicon.txt:2: token 'x' \\(of 'B'\\) is not in .*tokens.txt"),
        ("lexicon", "A a\nB\n", "lexicon.txt:2: word 'B' has no spelling"),
        ("lexicon", "A <blk>\n", "lexicon.txt:1: token '<blk>' \\(of 'A'\\) has id 0"),
        ("lexicon", "A a #1\n", "lexicon.txt:1: 'A' is spelt with the disambiguation symbol '#1'"),
        ("words", WORDS.replace("C 3", "C three"), "words.txt:4: expected '<symbol> <id>'"),
        ("words", WORDS.replace("C 3", "C 2"), "words.txt:4: id 2 is already used on line 3"),
        ("words", WORDS + "A 9\n", "words.txt:10: duplicate symbol 'A'"),
        ("tokens", TOKENS + "d\n", "tokens.txt:5: expected '<symbol> <id>'"),
    ],
)
def test_bad_lang_files_are_named(tmp_path, field, text, msg):
    d = lang(tmp_path, **{field: text})
    with pytest.raises(LangError, match=msg):
        load_lexicon_ids(d)


def test_prepare_lang_writes_the_disambig_files(tmp_path, capsys):
    from asr_kd.bin import prepare_lang

    text = tmp_path / "text.txt"
    text.write_text("THE CAT SAT\nA CAT\nTHE HAT SAT ON A MAT\n" * 5)
    out = tmp_path / "lang"
    assert prepare_lang.main(["--text", str(text), "--lang-dir", str(out), "--vocab-size", "30"]) == 0
    for f in ("lexicon_disambig.txt", "tokens_disambig.txt", "L_disambig.fst", "lexicon_char_disambig.txt"):
        assert (out / f).is_file(), f
    tokens = read_symbols(out / "tokens.txt")
    dis = read_symbols(out / "tokens_disambig.txt")
    assert "#0" not in tokens and dis["#0"] == len(tokens)
    assert {w for w, _ in read_symbols(out / "words.txt").items()} >= {"<eps>", "#0", "<s>", "</s>", "CAT"}
    # a lexicon word that words.txt lacks: exit 1 naming the file and line
    (out / "lexicon.txt").write_text((out / "lexicon.txt").read_text() + "ZEBRA ▁A\n")
    n = len((out / "lexicon.txt").read_text().splitlines())
    assert prepare_lang.main(["--text", str(text), "--lang-dir", str(out), "--vocab-size", "30"]) == 1
    assert f"lexicon.txt:{n}: word 'ZEBRA' is not in" in capsys.readouterr().err
