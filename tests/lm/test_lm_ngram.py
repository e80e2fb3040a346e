"""Modified Kneser-Ney estimation (asr_kd.lm.ngram) against hand-computed values, the sum-to-one
property of every history, and an independent ARPA scorer (the kenlm module) on the same file."""

import math
import random
from collections import Counter

import pytest

from asr_kd.lm.arpa import read_arpa
from asr_kd.lm.ngram import FALLBACK_DISCOUNTS, kn_discounts, train_ngram, write_arpa

D = (0.5, 1.0, 1.5)


def test_hand_computed_bigram(tmp_path):
    """Corpus "a b", "b"; D = (0.5, 1, 1.5) at both orders; closed vocabulary {a, b, </s>}.

    Bigrams (raw counts, highest order): <s> a 1, a b 1, b </s> 2, <s> b 1.
    Unigram continuation counts: a 1 (<s>), b 2 (a, <s>), </s> 1 (b); total 4,
    gamma() = (0.5 * 2 + 1.0 * 1) / 4 = 0.5, so p(w) = (a(w) - D) / 4 + 0.5 / 3:
    p(a) = p(</s>) = 0.125 + 1/6 = 7/24, p(b) = 0.25 + 1/6 = 10/24.
    History <s>: total 2, gamma = 0.5 * 2 / 2 = 0.5: p(a|<s>) = 0.25 + 0.5 * 7/24 = 19/48,
    p(b|<s>) = 0.25 + 0.5 * 10/24 = 22/48, p(</s>|<s>) = 0.5 * 7/24 = 7/48.
    History a: total 1, gamma = 0.5: p(b|a) = 0.5 + 0.5 * 10/24 = 34/48.
    History b: total 2 (b </s>: 2, discount 1.0), gamma = 1.0 / 2: p(</s>|b) = 0.5 + 0.5 * 7/24 = 31/48.
    """
    m = train_ngram(["a b", "b"], 2, unk=None, discounts=[D, D])
    assert m.vocab == ["</s>", "a", "b"]
    want = {
        ("a",): 7 / 24, ("b",): 10 / 24, ("</s>",): 7 / 24,
        ("<s>", "a"): 19 / 48, ("<s>", "b"): 22 / 48, ("a", "b"): 34 / 48, ("b", "</s>"): 31 / 48,
    }  # fmt: skip
    for g, p in want.items():
        assert m.prob(g[-1], g[:-1]) == pytest.approx(p, abs=1e-12)
    assert m.prob("</s>", ["<s>"]) == pytest.approx(7 / 48, abs=1e-12)  # backed off
    assert m.prob("a", ["a"]) == pytest.approx(0.5 * 7 / 24, abs=1e-12)
    arpa = tmp_path / "lm.arpa"
    write_arpa(m, arpa)
    lm = read_arpa(arpa, unk=None)
    assert lm.counts() == [4, 4]  # <s>, </s>, a, b; four bigrams
    assert lm.probs[0][("<s>",)] == -99
    assert lm.backoffs[("<s>",)] == pytest.approx(math.log10(0.5), abs=1e-6)
    assert lm.backoffs[("b",)] == pytest.approx(math.log10(0.5), abs=1e-6)
    # log10 p(a b) = log10(19/48 * 34/48 * 31/48)
    assert lm.score("a b") == pytest.approx(math.log10(19 / 48 * 34 / 48 * 31 / 48), abs=1e-6)
    # "b a": p(b|<s>) p(a|b) p(</s>|a) = 22/48 * (0.5 * 7/24) * (0.5 * 7/24)
    assert lm.score("b a") == pytest.approx(math.log10(22 / 48 * (0.5 * 7 / 24) ** 2), abs=1e-6)


def test_discounts_from_counts_of_counts():
    # n1..n4 = 4, 2, 1, 1: Y = 4 / 8 = 0.5; D1 = 1 - 2 * 0.5 * 2/4 = 0.5;
    # D2 = 2 - 3 * 0.5 * 1/2 = 1.25; D3+ = 3 - 4 * 0.5 * 1/1 = 1.0
    assert kn_discounts(4, 2, 1, 1) == pytest.approx((0.5, 1.25, 1.0))
    assert kn_discounts(4, 0, 1, 1) is None  # n2 = 0
    assert kn_discounts(1, 1, 10, 1) is None  # Y = 1/3, D2 = 2 - 3 * 1/3 * 10 < 0


def corpus(n=400, seed=0, vocab=12):
    """Sentences from a small Zipf-ish vocabulary with some structure (bigram preferences)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    weights = [1 / (i + 1) for i in range(vocab)]
    out = []
    for _ in range(n):
        s = [rng.choices(words, weights)[0]]
        for _ in range(rng.randint(0, 7)):
            prev = int(s[-1][1:])
            s.append(words[(prev + 1) % vocab] if rng.random() < 0.4 else rng.choices(words, weights)[0])
        out.append(" ".join(s))
    return out


def ngram_counts(sentences, n):
    c = Counter()
    for s in sentences:
        seq = ["<s>", *s.split(), "</s>"]
        c.update(tuple(seq[i : i + n]) for i in range(len(seq) - n + 1))
    return c


@pytest.mark.parametrize("order", [2, 3, 4])
def test_highest_order_discounts_follow_chen_goodman(order):
    sents = corpus()
    m = train_ngram(sents, order)
    coc = Counter(ngram_counts(sents, order).values())  # raw counts at the highest order
    n1, n2, n3, n4 = (coc[k] for k in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2)
    want = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    assert m.discounts[order - 1] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_every_history_sums_to_one(order, tmp_path):
    sents = corpus(seed=order)
    m = train_ngram(sents, order)
    arpa = tmp_path / "lm.arpa"
    write_arpa(m, arpa)
    lm = read_arpa(arpa)
    vocab = lm.vocab
    assert "</s>" in vocab and "<unk>" in vocab and "<s>" not in vocab
    histories = lm.histories()
    assert len(histories) > 10
    rng = random.Random(0)
    # and histories never seen (each word unseen after the other): back-off all the way
    unseen = [tuple(rng.choice(vocab[1:]) for _ in range(order - 1)) for _ in range(20)]
    for h in [*histories, *unseen, ()]:
        total_arpa = sum(10 ** lm.logprob(w, h) for w in vocab)
        total_exact = sum(m.prob(w, h) for w in vocab)
        assert total_exact == pytest.approx(1.0, abs=1e-9), h
        assert total_arpa == pytest.approx(1.0, abs=2e-6), h  # ARPA keeps 7 significant digits


@pytest.mark.parametrize("order", [2, 3, 4])
def test_scores_agree_with_kenlm(order, tmp_path):
    kenlm = pytest.importorskip("kenlm")
    sents = corpus(seed=10 + order)
    m = train_ngram(sents[:300], order)
    arpa = tmp_path / f"lm{order}.arpa"
    write_arpa(m, arpa)
    lm = read_arpa(arpa)
    ref = kenlm.Model(str(arpa))
    assert ref.order == order
    held_out = [*sents[300:], "w3 zz w1", "qq"]  # with out-of-vocabulary words (<unk>)
    total, n = 0.0, 0
    for s in [*sents[:50], *held_out]:
        assert lm.score(s) == pytest.approx(ref.score(s, bos=True, eos=True), abs=1e-4), s
        words = [*s.split(), "</s>"]
        mine = [lm.logprob(w, ["<s>", *words[:i]]) for i, w in enumerate(words)]
        theirs = [t[0] for t in ref.full_scores(s)]
        assert mine == pytest.approx(theirs, abs=1e-4), s
        assert 10 ** (-lm.score(s) / len(words)) == pytest.approx(ref.perplexity(s), rel=1e-4)
    for s in held_out:
        total += ref.score(s)
        n += len(s.split()) + 1
    assert lm.perplexity(held_out) == pytest.approx(10 ** (-total / n), rel=1e-4)


def test_higher_orders_fit_the_training_text_better():
    sents = corpus(seed=3)
    ppl = [read_arpa_text(train_ngram(sents, n)).perplexity(sents) for n in (1, 2, 3, 4)]
    assert ppl[0] > ppl[1] > ppl[2] > ppl[3]


def read_arpa_text(m):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "lm.arpa"
        write_arpa(m, p)
        return read_arpa(p)


def test_tiny_corpus_falls_back_to_default_discounts(caplog):
    with caplog.at_level("WARNING"):
        m = train_ngram(["a b", "b"], 3)
    assert m.discounts == [FALLBACK_DISCOUNTS] * 3
    assert "give no valid discounts" in caplog.text


def test_bad_training_input():
    with pytest.raises(ValueError, match="reserved symbol '</s>'"):
        train_ngram(["a </s> b"], 2)
    with pytest.raises(ValueError, match="no sentences"):
        train_ngram(["", "  "], 2)
    with pytest.raises(ValueError, match="order must be"):
        train_ngram(["a"], 0)
