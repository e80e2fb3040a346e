import itertools
import math

import pytest
import torch

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")

from decoding_bruteforce import collapse, random_log_probs  # noqa: E402

from asr_kd.decoding.ctc import ctc_greedy_search  # noqa: E402
from asr_kd.decoding.wfst import build_arpa_fst, build_hlg, wfst_decode  # noqa: E402

V = 4
LEXICON = [("A", [1]), ("B", [2, 3]), ("C", [3, 3])]
WORDS = {"<eps>": 0, "A": 1, "B": 2, "C": 3, "#0": 4, "<s>": 5, "</s>": 6}
SPELL = {w: tuple(t) for w, t in LEXICON}

ARPA = """
\\data\\
ngram 1=5
ngram 2=4

\\1-grams:
-0.5 </s>
-99 <s> -0.2
-0.4 A -0.3
-0.8 B -0.6
-1.0 C -0.5

\\2-grams:
-0.1 <s> A
-0.3 A B
-0.2 B </s>
-0.1 C C

\\end\\
"""
UNI = {"</s>": (-0.5, 0.0), "<s>": (-99, -0.2), "A": (-0.4, -0.3), "B": (-0.8, -0.6), "C": (-1.0, -0.5)}
BI = {("<s>", "A"): -0.1, ("A", "B"): -0.3, ("B", "</s>"): -0.2, ("C", "C"): -0.1}


def lm_logprob(words):
    total, prev = 0.0, "<s>"
    for w in list(words) + ["</s>"]:
        if (prev, w) in BI:
            total += BI[(prev, w)]
        else:
            total += UNI[prev][1] + UNI[w][0]
        prev = w
    return total * math.log(10)


def parses(tokens):
    """All word sequences spelling ``tokens``."""
    if not tokens:
        return [()]
    out = []
    for w, sp in SPELL.items():
        if tokens[: len(sp)] == sp:
            out += [(w,) + rest for rest in parses(tokens[len(sp) :])]
    return out


def brute_force(lp, lm=False, lm_scale=1.0):
    best = (-math.inf, None)
    T = lp.size(0)
    rows = lp.tolist()
    for path in itertools.product(range(V), repeat=T):
        score = sum(rows[t][c] for t, c in enumerate(path))
        for words in parses(collapse(path)):
            s = score + (lm_scale * lm_logprob(words) if lm else 0.0)
            if s > best[0]:
                best = (s, words)
    return best


def test_h_decoding_is_greedy():
    lp = random_log_probs(3, 7, V, seed=1, sharp=3.0)
    lens = torch.tensor([7, 4, 0])
    res = wfst_decode(build_hlg(V), lp, lens)
    assert [r.best for r in res] == ctc_greedy_search(lp, lens)
    for n in range(2):
        want = lp[n, : lens[n]].max(-1).values.sum().item()
        assert res[n].scores[0] == pytest.approx(want, abs=1e-4)
        assert res[n].components["graph"][0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hl_decoding_matches_brute_force(seed):
    T = 5
    lp = random_log_probs(1, T, V, seed=seed, sharp=2.0)
    res = wfst_decode(build_hlg(V, LEXICON, WORDS), lp, torch.tensor([T]), beam=100.0)[0]
    score, words = brute_force(lp[0])
    assert res.tokens[0] == [WORDS[w] for w in words]
    assert res.scores[0] == pytest.approx(score, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 4, 5])
@pytest.mark.parametrize("lm_scale", [1.0, 0.5])
def test_hlg_decoding_matches_brute_force(seed, lm_scale):
    T = 5
    lp = random_log_probs(1, T, V, seed=seed, sharp=2.0)
    graph = build_hlg(V, LEXICON, WORDS, ARPA, lm_scale=lm_scale)
    res = wfst_decode(graph, lp, torch.tensor([T]), beam=100.0)[0]
    score, words = brute_force(lp[0], lm=True, lm_scale=lm_scale)
    assert res.tokens[0] == [WORDS[w] for w in words]
    assert res.scores[0] == pytest.approx(score, abs=1e-4)
    assert res.components["graph"][0] == pytest.approx(lm_scale * lm_logprob(words), abs=1e-4)


def test_arpa_fst_from_file(tmp_path):
    p = tmp_path / "lm.arpa"
    p.write_text(ARPA)
    G = build_arpa_fst(p, WORDS)
    assert G.num_states == 5  # histories (), <s>, A, B, C
    assert str(G) == str(build_arpa_fst(ARPA, WORDS))
    # a word missing from words.txt drops its n-grams
    small = build_arpa_fst(ARPA, {k: v for k, v in WORDS.items() if k != "C"})
    assert small.num_states == 4


def test_build_from_lang_dir(tmp_path):
    from asr_kd.decoding.wfst import build_hlg_from_lang_dir

    (tmp_path / "tokens.txt").write_text("<blk> 0\na 1\nb 2\nc 3\n")
    (tmp_path / "words.txt").write_text("".join(f"{w} {i}\n" for w, i in WORDS.items()))
    (tmp_path / "lexicon.txt").write_text("A a\nB b c\nC c c\nD x\n")  # D: unknown piece, skipped
    graph, id_to_word = build_hlg_from_lang_dir(tmp_path, ARPA)
    lp = random_log_probs(2, 5, V, seed=9, sharp=2.0)
    lens = torch.tensor([5, 5])
    got = wfst_decode(graph, lp, lens, beam=100.0)
    want = wfst_decode(build_hlg(V, LEXICON, WORDS, ARPA), lp, lens, beam=100.0)
    assert [r.tokens for r in got] == [r.tokens for r in want]
    assert id_to_word[2] == "B"
