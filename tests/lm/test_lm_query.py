"""NgramQuery (asr_kd.lm.query): word-by-word scores with a history-tuple state, against the kenlm
module on the same ARPA file (probabilities, matched n-gram lengths, OOV flags) and against
ArpaLM.logprob on the untrimmed history."""

import random

import pytest

from asr_kd.lm.arpa import read_arpa
from asr_kd.lm.ngram import train_ngram, write_arpa
from asr_kd.lm.query import OOV_LOG10, NgramQuery

VOCAB = [f"w{i}" for i in range(14)]


def corpus(seed, n=300):
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCAB[: rng.randint(3, 14)]) for _ in range(rng.randint(1, 9))) for _ in range(n)]


def held_out(seed):
    rng = random.Random(seed + 100)
    words = [*VOCAB, "zz", "qq"]  # two out-of-vocabulary words
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 10))) for _ in range(80)] + ["zz", "w1 zz zz w1"]


@pytest.mark.parametrize("unk", ["<unk>", None])
@pytest.mark.parametrize("order", [2, 3, 4])
def test_full_scores_agree_with_kenlm(order, unk, tmp_path):
    kenlm = pytest.importorskip("kenlm")
    arpa = tmp_path / "lm.arpa"
    write_arpa(train_ngram(corpus(order), order, unk=unk), arpa)
    ref = kenlm.Model(str(arpa))
    q = NgramQuery.from_arpa(arpa)
    assert q.unk == unk
    for s in held_out(order):
        mine, theirs = q.full_scores(s), list(ref.full_scores(s))
        assert [m[0] for m in mine] == pytest.approx([t[0] for t in theirs], abs=1e-4), s
        assert [(m[1], m[2]) for m in mine] == [(t[1], t[2]) for t in theirs], s
        assert q.sentence_score(s) == pytest.approx(ref.score(s), abs=1e-4)
        assert q.sentence_score(s, bos=False, eos=False) == pytest.approx(ref.score(s, bos=False, eos=False), abs=1e-4)
    if unk is None:
        assert q.full_scores("zz")[0][0] < OOV_LOG10 + 1e-9


@pytest.mark.parametrize("order", [3, 4])
def test_states_step_by_step_like_kenlm_base_score(order, tmp_path):
    kenlm = pytest.importorskip("kenlm")
    arpa = tmp_path / "lm.arpa"
    write_arpa(train_ngram(corpus(7 + order), order), arpa)
    ref = kenlm.Model(str(arpa))
    q = NgramQuery.from_arpa(arpa)
    lm = read_arpa(arpa)
    for s in held_out(order)[:30]:
        st_ref, out_ref = kenlm.State(), kenlm.State()
        ref.BeginSentenceWrite(st_ref)
        state, hist = q.begin_state(), ["<s>"]
        for w in [*s.split(), "</s>"]:
            lp, nxt = q.score(state, w)
            assert lp == pytest.approx(ref.BaseScore(st_ref, w, out_ref), abs=1e-4)
            # the trimmed state scores like the whole history
            assert lp == pytest.approx(lm.logprob(w, hist), abs=1e-12)
            assert len(nxt) <= order - 1 and all(g in lm.probs[len(nxt) - 1] for g in [nxt] if nxt)
            st_ref, out_ref = out_ref, st_ref
            state = nxt
            hist.append(w)


def test_state_is_trimmed_to_listed_histories():
    arpa = "\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n-1 <s> -0.3\n-0.5 a -0.2\n-0.6 b\n-0.7 </s>\n\n"
    arpa += "\\2-grams:\n-0.1 <s> a\n-0.2 a b\n\n\\end\\\n"
    from asr_kd.lm.arpa import parse_arpa_text

    q = NgramQuery(parse_arpa_text(arpa, unk=None))
    lp, st = q.score(q.begin_state(), "a")
    assert (lp, st) == (-0.1, ("a",))
    lp, st = q.score(st, "b")
    assert (lp, st) == (-0.2, ("b",))
    lp, st = q.score(st, "a")  # b has no backoff weight: p(a)
    assert (lp, st) == (-0.5, ("a",))
    lp, st = q.score(st, "</s>")  # bow(a) + p(</s>)
    assert lp == pytest.approx(-0.9) and st == ("</s>",)
