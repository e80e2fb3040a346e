"""The validating ARPA reader: each malformed line is an ArpaFormatError naming the file and line."""

import pytest

from asr_kd.lm.arpa import ArpaFormatError, read_arpa

GOOD = """\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-1.0\t</s>
-99\t<s>\t-0.3
-0.5\ta\t-0.2
-0.7\tb

\\2-grams:
-0.1\t<s> a
-0.4\ta b

\\end\\
"""


def write(tmp_path, text):
    p = tmp_path / "lm.arpa"
    p.write_text(text)
    return p


def test_reads_and_scores_by_backoff(tmp_path):
    lm = read_arpa(write(tmp_path, GOOD), unk=None)
    assert lm.order == 2 and lm.counts() == [4, 2]
    assert lm.logprob("a", ["<s>"]) == pytest.approx(-0.1)
    assert lm.logprob("b", ["a"]) == pytest.approx(-0.4)
    assert lm.logprob("</s>", ["a"]) == pytest.approx(-0.2 + -1.0)  # bow(a) + p(</s>)
    assert lm.logprob("a", ["b"]) == pytest.approx(-0.5)  # b has no backoff weight: bow = 1
    assert lm.score("a b") == pytest.approx(-0.1 - 0.4 - 1.0)  # p(</s> | b) = bow(b) p(</s>)
    with pytest.raises(KeyError, match="'c' is not in the LM's vocabulary"):
        lm.score("a c")


@pytest.mark.parametrize(
    "old,new,line,msg",
    [
        ("-0.5\ta\t-0.2", "-0.5x\ta\t-0.2", 8, "log10 probability '-0.5x' is not a number"),
        ("-0.5\ta\t-0.2", "-0.5\ta\t-0.2\textra", 8, "a 1-gram line needs log10 prob, 1 word, optional backoff; got 4"),
        ("-0.4\ta b", "-0.4\ta", 13, "a 2-gram line needs log10 prob, 2 words; got 2 fields"),
        ("-0.4\ta b", "-0.4\ta b\t-0.1", 13, "got 4 fields"),
        ("-0.4\ta b", "-0.4\tb a", None, None),  # fine: b is a listed unigram
        ("-0.4\ta b", "-0.4\tc a", 13, "history 'c' of this 2-gram is not a listed 1-gram"),
        ("-0.4\ta b", "-0.1\t<s> a", 13, "duplicate 2-gram '<s> a'"),
        ("-0.7\tb", "0.7\tb", 9, "log10 probability 0.7 > 0"),
        ("-99\t<s>\t-0.3", "-99\t<s>\tnan", 7, "log10 backoff is NaN"),
        ("ngram 2=2", "ngram 2=3", 11, "section '\\\\2-grams:' has 2 entries but line 3 declares ngram 2=3"),
        ("ngram 2=2", "ngram 2 2", 3, "malformed 'ngram N=count' line"),
        ("\\2-grams:", "\\3-grams:", 11, "expected section '\\\\2-grams:'"),
        ("\\2-grams:", "\\bigrams:", 11, "unknown section header"),
        ("\\data\\", "data", 1, "expected the ARPA header"),
        ("\\end\\\n", "", 14, "missing '\\\\end\\\\'"),
        ("\\end\\\n", "\\end\\\nmore\n", 16, "text after"),
    ],
)
def test_malformed_line_is_named(tmp_path, old, new, line, msg):
    assert old in GOOD
    p = write(tmp_path, GOOD.replace(old, new, 1))
    if msg is None:
        read_arpa(p)
        return
    with pytest.raises(ArpaFormatError, match=msg) as e:
        read_arpa(p)
    assert str(e.value).startswith(f"{p}:{line}:"), str(e.value)


def test_missing_section_and_bad_encoding(tmp_path):
    p = write(tmp_path, GOOD.split("\\2-grams:")[0] + "\\end\\\n")
    with pytest.raises(ArpaFormatError, match=f"^{p}:3: 'ngram 2=' is declared but there is no"):
        read_arpa(p)
    p.write_bytes(GOOD.encode().replace(b"\ta\t-0.2", b"\t\xff\t-0.2"))
    with pytest.raises(ArpaFormatError, match=f"^{p}:8: not UTF-8"):
        read_arpa(p)
