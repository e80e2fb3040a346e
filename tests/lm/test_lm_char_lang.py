"""The char lang dir (asr_kd.lm.char_lang, prepare_lang --token-type char): icefall's layout with
characters as tokens, disambiguation symbols, an L_disambig that spells each word, and an HL graph
that decodes character posteriors into words."""

import pytest
import torch

from asr_kd.lm.char_lang import write_char_lang_dir
from asr_kd.lm.lang import LangError, read_lexicon_entries, read_symbols

kf = pytest.importorskip("kaldifst")

TEXT = "AB ABC\nBA AB\nC ABC BA\n"


@pytest.fixture
def char_dir(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    info = write_char_lang_dir(text, tmp_path / "lang_char")
    return tmp_path / "lang_char", info


def test_char_lang_files(char_dir):
    d, info = char_dir
    assert (d / "tokens.txt").read_text() == "<blk> 0\n<sos/eos> 1\n<unk> 2\nA 3\nB 4\nC 5\n"
    assert (d / "words.txt").read_text() == "<eps> 0\n<UNK> 1\nAB 2\nABC 3\nBA 4\nC 5\n#0 6\n<s> 7\n</s> 8\n"
    assert (d / "lexicon.txt").read_text() == "<UNK> <unk>\nAB A B\nABC A B C\nBA B A\nC C\n"
    # AB is a prefix of ABC: #1
    assert (d / "lexicon_disambig.txt").read_text() == "<UNK> <unk>\nAB A B #1\nABC A B C\nBA B A\nC C\n"
    assert (d / "tokens_disambig.txt").read_text().endswith("C 5\n#0 6\n#1 7\n")
    assert (d / "transcript_words.txt").read_text() == TEXT
    assert info["tokens"] == 6 and info["words"] == 4 and info["max_disambig"] == 1


def test_char_l_disambig_spells_every_word(char_dir):
    d, _ = char_dir
    L = kf.StdVectorFst.read(str(d / "L_disambig.fst"))
    kf.arcsort(L, sort_type="ilabel")
    tok = read_symbols(d / "tokens_disambig.txt")
    id2word = {i: w for w, i in read_symbols(d / "words.txt").items()}
    for e in read_lexicon_entries(d / "lexicon_disambig.txt"):
        out = kf.compose(kf.make_linear_acceptor([tok[u] for u in e.units]), L)
        ok, _, olabels, _ = kf.get_linear_symbol_sequence(kf.shortest_path(out))
        assert ok and [id2word[o] for o in olabels if o] == [e.word]
    # "A B" without #1 is not a word on its own (only the prefix of ABC)
    out = kf.compose(kf.make_linear_acceptor([tok["A"], tok["B"]]), L)
    assert out.num_states == 0 or not kf.get_linear_symbol_sequence(kf.shortest_path(out))[0]


def test_char_hl_decodes_character_posteriors(char_dir):
    pytest.importorskip("kaldi_decoder")
    from asr_kd.decoding.hlg import get_hlg
    from asr_kd.decoding.wfst import wfst_decode

    d, _ = char_dir
    graph, id_to_word, info = get_hlg(d)
    tok = read_symbols(d / "tokens.txt")
    for sentence in ("BA", "C BA AB", "BA C"):  # one segmentation each (no word boundaries in L)
        frames = [tok[c] for w in sentence.split() for c in w]
        # sharp posteriors: each character on one frame, blanks between the words' characters
        path = [x for f in frames for x in (f, 0)]
        lp = torch.full((1, len(path), len(tok)), -8.0)
        lp[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
        lp = lp.log_softmax(-1)
        res = wfst_decode(graph, lp, torch.tensor([len(path)]))
        assert [id_to_word[i] for i in res[0].best] == sentence.split()


def test_reserved_word_is_named(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("AB\nAB #0 C\n")
    with pytest.raises(LangError, match="text.txt:2: word '#0' is a reserved symbol"):
        write_char_lang_dir(text, tmp_path / "lang")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(LangError, match="no transcripts"):
        write_char_lang_dir(empty, tmp_path / "lang")


def test_prepare_lang_char_cli(tmp_path, capsys):
    from asr_kd.bin import prepare_lang

    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    out = tmp_path / "lang_char"
    argv = ["--token-type", "char", "--text", str(text), "--lang-dir", str(out)]
    assert prepare_lang.main(argv) == 0
    assert "wrote the char lang dir" in capsys.readouterr().out
    files = ("tokens.txt", "words.txt", "lexicon.txt", "lexicon_disambig.txt", "tokens_disambig.txt", "L_disambig.fst")
    for f in files:
        assert (out / f).is_file(), f
    assert not (out / "bpe.model").exists()
    assert prepare_lang.main(argv) == 0
    assert "skipping" in capsys.readouterr().out
    bad = tmp_path / "bad.txt"
    bad.write_text("A <s> B\n")
    assert prepare_lang.main(["--token-type", "char", "--text", str(bad), "--lang-dir", str(tmp_path / "b")]) == 1
    assert "bad.txt:1: word '<s>' is a reserved symbol" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prepare_lang.main(["--text", str(text), "--lang-dir", str(tmp_path / "c")])  # bpe needs --vocab-size
