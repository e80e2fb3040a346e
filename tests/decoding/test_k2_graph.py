"""k2 one-best decoding (asr_kd.decoding.k2_graph) against kaldi-decoder (asr_kd.decoding.wfst) on the
same kaldifst graphs (H, H o L, H o L o G) and the same CTC log-probs: the same words and, up to float
rounding, the same total / graph / acoustic scores; and against brute force on tiny cases.

The k2 tests take the ``k2`` fixture (tests/conftest.py): skipped with the reason when k2 is not
importable, failing instead under ``ASR_KD_REQUIRE_K2=1`` (``.ci/run`` sets it when it installs k2).
"""

from __future__ import annotations

import importlib
import itertools
import sys

import pytest
import torch

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")

from decoding_bruteforce import collapse, random_log_probs  # noqa: E402
from test_dec_wfst import ARPA, LEXICON, WORDS, brute_force, lm_logprob, parses  # noqa: E402

from asr_kd.decoding.ctc import ctc_greedy_search  # noqa: E402
from asr_kd.decoding.k2_graph import k2_graph_from_kaldifst, k2_one_best  # noqa: E402
from asr_kd.decoding.wfst import build_hlg, build_hlg_from_lang_dir, wfst_decode  # noqa: E402

V = 4
GRAPHS = {
    "H": lambda: build_hlg(V),
    "HL": lambda: build_hlg(V, LEXICON, WORDS),
    "HLG": lambda: build_hlg(V, LEXICON, WORDS, ARPA),
    "HLG-0.5": lambda: build_hlg(V, LEXICON, WORDS, ARPA, lm_scale=0.5),
}
WIDE = dict(search_beam=1e3, output_beam=1e3, max_active_states=100000)


def _assert_same(k2_res, kaldi_res, tol=1e-4):
    assert len(k2_res) == len(kaldi_res)
    for n, (a, b) in enumerate(zip(k2_res, kaldi_res, strict=True)):
        assert a.tokens == b.tokens, f"utterance {n}"
        assert len(a.scores) == len(b.scores) == 1
        assert a.scores[0] == pytest.approx(b.scores[0], abs=tol, rel=1e-6), f"utterance {n}"
        for part in ("graph", "acoustic"):
            assert a.components[part][0] == pytest.approx(b.components[part][0], abs=tol, rel=1e-6), (n, part)


@pytest.mark.parametrize("kind", list(GRAPHS))
@pytest.mark.parametrize("pruned", [True, False], ids=["pruned", "exhaustive"])
def test_k2_one_best_matches_kaldi_decoder(k2, kind, pruned):
    graph = GRAPHS[kind]()
    kg = k2_graph_from_kaldifst(graph)
    for seed in range(4):
        lp = random_log_probs(5, 14, V, seed=seed, sharp=2.5)
        lens = torch.tensor([14, 11, 7, 1, 0])
        want = wfst_decode(graph, lp, lens, beam=1e3, max_active=100000)
        got = k2_one_best(kg, lp, lens, pruned=pruned, **WIDE)
        _assert_same(got, want)
        assert any(r.best for r in want)  # not a trivially empty comparison


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("lm", [False, True])
def test_k2_one_best_matches_brute_force(k2, seed, lm):
    """The independent reference: every alignment and every parse of it into words (T = 5, V = 4)."""
    T = 5
    lp = random_log_probs(1, T, V, seed=seed, sharp=2.0)
    graph = build_hlg(V, LEXICON, WORDS, ARPA if lm else None)
    res = k2_one_best(k2_graph_from_kaldifst(graph), lp, torch.tensor([T]), **WIDE)[0]
    score, words = brute_force(lp[0], lm=lm)
    assert res.tokens[0] == [WORDS[w] for w in words]
    assert res.scores[0] == pytest.approx(score, abs=1e-4)
    want_graph = lm_logprob(words) if lm else 0.0
    assert res.components["graph"][0] == pytest.approx(want_graph, abs=1e-4)


def test_k2_h_decoding_is_greedy(k2):
    lp = random_log_probs(3, 9, V, seed=1, sharp=3.0)
    lens = torch.tensor([9, 5, 2])
    res = k2_one_best(k2_graph_from_kaldifst(build_hlg(V)), lp, lens)
    assert [r.best for r in res] == ctc_greedy_search(lp, lens)
    for n in range(3):
        assert res[n].scores[0] == pytest.approx(lp[n, : lens[n]].max(-1).values.sum().item(), abs=1e-4)


def test_k2_graph_conversion(k2):
    """Labels are CTC columns (blank 0, tokens 1..V-1), -1 only into the final state; scores are -costs;
    epsilon arcs (G's backoff) are removed and the words go to ragged aux labels."""
    hl = k2_graph_from_kaldifst(build_hlg(V, LEXICON, WORDS))
    labels = hl.labels
    assert int(labels.min()) == -1 and int(labels.max()) == V - 1 and bool((labels == 0).any())
    final = hl.shape[0] - 1
    assert bool(((labels == -1) == (hl.arcs.values()[:, 1] == final)).all())
    assert torch.equal(hl.scores, hl.graph_scores)
    assert sorted(set(hl.aux_labels[hl.aux_labels > 0].tolist())) == [1, 2, 3]
    hlg_fst = build_hlg(V, LEXICON, WORDS, ARPA)
    assert sum(hlg_fst.num_input_epsilons(s) for s in range(hlg_fst.num_states)) > 0  # G's backoff arcs
    hlg = k2_graph_from_kaldifst(hlg_fst)
    assert not isinstance(hlg.aux_labels, torch.Tensor)  # ragged after remove_epsilon
    assert float(hlg.scores.max()) <= 1e-6  # -cost of LM arcs: log-probs and backoffs <= 0 here


def _random_lm_graph(v=12, n_words=60, n_bigrams=40, seed=7):
    """60 random words over ``v - 1`` tokens and a random bigram ARPA over them (random log10
    probabilities and backoffs: not normalised, which decoding does not need, and no two word
    sequences tie, so the best words are unique even where spellings are ambiguous)."""
    g = torch.Generator().manual_seed(seed)
    lexicon, words = [], {"<eps>": 0}
    while len(lexicon) < n_words:
        spelling = torch.randint(1, v, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g).tolist()
        word = "W" + "_".join(map(str, spelling))
        if word not in words:
            words[word] = len(words)
            lexicon.append((word, spelling))
    names = [w for w, _ in lexicon]

    def rnd(lo, hi):
        return lo + (hi - lo) * float(torch.rand((), generator=g))

    uni = [f"{rnd(-3, -1):.4f} {w} {rnd(-1, 0):.4f}" for w in names]
    uni += [f"{rnd(-2, -1):.4f} </s>", f"-99 <s> {rnd(-1, 0):.4f}"]
    pairs = set()
    while len(pairs) < n_bigrams:
        a = ["<s>", *names][int(torch.randint(0, n_words + 1, (1,), generator=g))]
        b = [*names, "</s>"][int(torch.randint(0, n_words + 1, (1,), generator=g))]
        pairs.add((a, b))
    bi = [f"{rnd(-1, -0.05):.4f} {a} {b}" for a, b in sorted(pairs)]
    arpa = "\\data\\\n" + f"ngram 1={len(uni)}\nngram 2={len(bi)}\n\n\\1-grams:\n" + "\n".join(uni)
    arpa += "\n\n\\2-grams:\n" + "\n".join(bi) + "\n\n\\end\\\n"
    return build_hlg(v, lexicon, words, arpa)


@pytest.mark.parametrize("seed", [3, 4])
def test_k2_one_best_larger_graph_agrees(k2, seed):
    """H o L o G with 60 words and a random bigram LM, 6 utterances of up to 40 frames, 12 tokens:
    the same words and scores from k2 (pruned search) and kaldi-decoder."""
    v = 12
    graph = _random_lm_graph(v)
    lp = random_log_probs(6, 40, v, seed=seed, sharp=3.0)
    lens = torch.tensor([40, 37, 30, 22, 15, 4])
    want = wfst_decode(graph, lp, lens, beam=1e3, max_active=100000)
    got = k2_one_best(k2_graph_from_kaldifst(graph), lp, lens, search_beam=1e3, output_beam=10.0)
    _assert_same(got, want)
    assert sum(len(r.best) for r in want) >= 12


def test_k2_words_on_epsilon_input_arcs(k2):
    """A lexicon emitting each word on an epsilon-input arc after its spelling (as a determinised
    graph can, once disambiguation symbols become epsilons): remove_epsilon moves the words to
    ragged aux labels, and k2 still gives kaldi-decoder's words and scores, which are those of the
    ordinary H o L."""
    import kaldifst as kf

    L = kf.StdVectorFst()
    L.add_state()
    L.start = 0
    L.set_final(0, 0.0)
    for word, spelling in LEXICON:
        src = 0
        for tok in spelling:
            dst = L.add_state()
            L.add_arc(src, kf.StdArc(tok, 0, 0.0, dst))
            src = dst
        L.add_arc(src, kf.StdArc(0, WORDS[word], 0.25, 0))  # eps:word, with a word cost
    H = build_hlg(V)
    kf.arcsort(H, sort_type="olabel")
    kf.arcsort(L, sort_type="ilabel")
    graph = kf.compose(H, L)
    kf.arcsort(graph, sort_type="ilabel")
    assert sum(graph.num_input_epsilons(s) for s in range(graph.num_states)) > 0
    lp = random_log_probs(4, 12, V, seed=2, sharp=2.0)
    lens = torch.tensor([12, 10, 6, 3])
    want = wfst_decode(graph, lp, lens, beam=1e3)
    got = k2_one_best(k2_graph_from_kaldifst(graph), lp, lens, **WIDE)
    _assert_same(got, want)
    assert sum(len(r.best) for r in want) >= 4
    for seed in range(3):  # against brute force, with the word costs
        lp1 = random_log_probs(1, 5, V, seed=seed, sharp=2.0)
        res = k2_one_best(k2_graph_from_kaldifst(graph), lp1, torch.tensor([5]), **WIDE)[0]
        best = max(
            (
                sum(lp1[0, t, c].item() for t, c in enumerate(path)) - 0.25 * len(words),
                [WORDS[w] for w in words],
            )
            for path in itertools.product(range(V), repeat=5)
            for words in parses(collapse(path))
        )
        assert res.tokens[0] == best[1] and res.scores[0] == pytest.approx(best[0], abs=1e-4)


def test_k2_graph_from_lang_dir(k2, tmp_path):
    (tmp_path / "tokens.txt").write_text("<blk> 0\na 1\nb 2\nc 3\n")
    (tmp_path / "words.txt").write_text("".join(f"{w} {i}\n" for w, i in WORDS.items()))
    (tmp_path / "lexicon.txt").write_text("A a\nB b c\nC c c\n")
    graph, id_to_word = build_hlg_from_lang_dir(tmp_path, ARPA)
    lp = random_log_probs(3, 10, V, seed=11, sharp=2.0)
    lens = torch.tensor([10, 8, 6])
    got = k2_one_best(k2_graph_from_kaldifst(graph), lp, lens, **WIDE)
    _assert_same(got, wfst_decode(graph, lp, lens, beam=1e3))
    assert all(id_to_word[w] in {"A", "B", "C"} for r in got for w in r.best)


def test_k2_acoustic_scale_matches_kaldi_decoder(k2):
    graph = build_hlg(V, LEXICON, WORDS, ARPA)
    lp = random_log_probs(2, 12, V, seed=5, sharp=2.0)
    lens = torch.tensor([12, 9])
    for scale in (0.5, 2.0):
        want = wfst_decode(graph, lp, lens, beam=1e3, acoustic_scale=scale)
        got = k2_one_best(k2_graph_from_kaldifst(graph), lp, lens, acoustic_scale=scale, **WIDE)
        _assert_same(got, want)


def test_module_imports_without_k2_and_names_the_alternative(monkeypatch):
    monkeypatch.setitem(sys.modules, "k2", None)  # `import k2` now raises ImportError
    mod = importlib.reload(importlib.import_module("asr_kd.decoding.k2_graph"))
    with pytest.raises(ImportError, match="wfst_decode"):
        mod.k2_graph_from_kaldifst(build_hlg(V))
    with pytest.raises(ImportError, match="README"):
        mod.k2_one_best(None, torch.zeros(1, 2, V), torch.tensor([2]))


@pytest.mark.parametrize("order", [2, 3])
def test_k2_on_the_determinised_hlg_of_a_lang_dir(k2, tmp_path, order):
    """The graph decoding uses (asr_kd.decoding.hlg.get_hlg: H o det(L o G), disambiguation symbols
    and epsilons removed, G from a Kneser-Ney ARPA through kaldilm) goes through the same conversion:
    k2 gives kaldi-decoder's words and scores on it. The lexicon is ambiguous (homophones and
    spellings that are prefixes of others), so L needs its #1.. symbols."""
    pytest.importorskip("kaldilm")
    from asr_kd.decoding.hlg import get_hlg
    from asr_kd.lm.ngram import train_ngram, write_arpa

    lex = {"a": "t1", "ab": "t1 t2", "ba": "t2 t1", "b": "t2", "bee": "t2", "cab": "t3 t1 t2", "c": "t3", "d": "t4 t4"}
    lang = tmp_path / "lang"
    lang.mkdir()
    (lang / "tokens.txt").write_text("<blk> 0\n" + "".join(f"t{i} {i}\n" for i in range(1, 5)))
    syms = ["<eps>", *lex, "#0", "<s>", "</s>"]
    (lang / "words.txt").write_text("".join(f"{w} {i}\n" for i, w in enumerate(syms)))
    (lang / "lexicon.txt").write_text("".join(f"{w} {p}\n" for w, p in lex.items()))
    texts = ["a b c", "ab c", "cab ba", "d a b", "bee d", "c a ab", "ba ba d", "cab d a", "a ab b"]
    write_arpa(train_ngram(texts, order, unk=None), tmp_path / "lm.arpa")
    graph, id_to_word, info = get_hlg(lang, tmp_path / "lm.arpa", cache=False)
    assert info.kind == "HLG"
    kg = k2_graph_from_kaldifst(graph)
    lp = random_log_probs(6, 16, 5, seed=order, sharp=2.5)
    lens = torch.tensor([16, 14, 12, 9, 6, 3])
    want = wfst_decode(graph, lp, lens, beam=1e3, max_active=100000)
    got = k2_one_best(kg, lp, lens, **WIDE)
    _assert_same(got, want)
    assert sum(len(r.best) for r in want) >= 6
    assert {id_to_word[w] for r in got for w in r.best} <= set(lex)
