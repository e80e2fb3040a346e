"""CTC lattice decoding (asr_kd.decoding.lattice, lattice_methods, k2_graph): on the tiny lang dir of
test_dec_hlg (homophones, a spelling that is a prefix of another, 2- and 3-gram LMs), the lattice n-best is
the brute-force list of the best distinct word sequences; rescoring an n-best or the whole lattice with the
first-pass LM gives the one-best, with another LM the brute-force best; k2 lattices give the same; a blank
penalty changes the best path as computed by hand; the registered methods run from decode_batch."""

import itertools
import math

import pytest
import torch

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from decoding_bruteforce import collapse, random_log_probs  # noqa: E402
from test_dec_hlg import LEXICON, TOK, WORDS, V, parses, write_lang  # noqa: E402

from asr_kd.decoding.hlg import get_hlg  # noqa: E402
from asr_kd.decoding.lattice import (  # noqa: E402
    NgramScorer,
    best_for_lm_scales,
    kaldi_get_lattice,
    lattice_nbest,
    rescore_nbest,
    whole_lattice_rescore,
)
from asr_kd.decoding.search import SearchOptions, decode_batch, decode_nbest, get_decoding_method  # noqa: E402
from asr_kd.decoding.wfst import wfst_decode  # noqa: E402
from asr_kd.lm.arpa import read_arpa  # noqa: E402
from asr_kd.lm.ngram import train_ngram, write_arpa  # noqa: E402

T = 5
WIDE = dict(beam=1000.0, lattice_beam=1000.0)


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    d = write_lang(tmp_path_factory.mktemp("lang"))
    # a different 2-gram (other text) for rescoring
    write_arpa(train_ngram(["C C C", "D D", "E A E", "B B A", "C D E"], 2, unk=None), d / "other.arpa")
    return d


@pytest.fixture(scope="module")
def hlg2(lang, tmp_path_factory):
    """HLG with the bigram: its best path over a word sequence costs exactly -ln p_ARPA (a trigram G's
    backoff arcs may score better than the ARPA, test_dec_hlg), so brute force can use the ARPA."""
    graph, id_to_word, _ = get_hlg(lang, lang / "G_2gram.arpa", cache_dir=tmp_path_factory.mktemp("cache"))
    return graph, id_to_word


def brute_force_sequences(lp, lm=None, lm_scale=1.0):
    """{word sequence: (best acoustic over its alignments and parses, lm_scale * ln p_LM)}."""
    rows = lp.tolist()
    inv = {i: t for t, i in TOK.items()}
    best: dict[tuple, float] = {}
    for path in itertools.product(range(V), repeat=len(rows)):
        ac = sum(rows[t][c] for t, c in enumerate(path))
        for words in parses(tuple(inv[c] for c in collapse(path))):
            best[words] = max(best.get(words, -math.inf), ac)
    lmv = {w: (lm_scale * lm.score(list(w)) * math.log(10) if lm is not None else 0.0) for w in best}
    return {w: (a, lmv[w]) for w, a in best.items()}


def ranked(seqs):
    return sorted(seqs.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))


def names(ids, id_to_word):
    return tuple(id_to_word[i] for i in ids)


@pytest.mark.parametrize("seed", range(5))
def test_lattice_nbest_is_the_brute_force_nbest(lang, hlg2, seed):
    graph, id_to_word = hlg2
    lm = read_arpa(lang / "G_2gram.arpa", unk=None)
    lp = random_log_probs(1, T, V, seed=seed, sharp=1.5)
    lat = kaldi_get_lattice(graph, lp, torch.tensor([T]), **WIDE)[0]
    nb = lattice_nbest(lat, 6)
    want = ranked(brute_force_sequences(lp[0], lm))[:6]
    assert [names(h, id_to_word) for h in nb.tokens] == [w for w, _ in want]
    for k, (_, (ac, lmv)) in enumerate(want):
        assert nb.scores[k] == pytest.approx(ac + lmv, abs=1e-3)
        assert nb.components["acoustic"][k] == pytest.approx(ac, abs=1e-3)
        assert nb.components["graph"][k] == pytest.approx(lmv, abs=1e-3)
    # its best is the one-best of the Viterbi decoder
    one = wfst_decode(graph, lp, torch.tensor([T]), beam=1000.0)[0]
    assert nb.tokens[0] == one.tokens[0] and nb.scores[0] == pytest.approx(one.scores[0], abs=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_nbest_rescoring_with_the_first_pass_lm_is_1best_and_with_another_the_brute_force(lang, hlg2, seed):
    graph, id_to_word = hlg2
    lp = random_log_probs(1, T, V, seed=seed, sharp=1.5)
    lat = kaldi_get_lattice(graph, lp, torch.tensor([T]), **WIDE)[0]
    nb = lattice_nbest(lat, 1000)  # every word sequence of the lattice
    same = rescore_nbest(nb, NgramScorer.from_arpa(lang / "G_2gram.arpa", lang / "words.txt"))
    assert same.tokens[:5] == nb.tokens[:5]  # (further down, float ties may swap)
    first_pass = {tuple(h): v for h, v in zip(nb.tokens, nb.scores)}
    assert {tuple(h): v for h, v in zip(same.tokens, same.scores)} == pytest.approx(first_pass, abs=1e-4)
    other_lm = read_arpa(lang / "other.arpa", unk=None)
    scorer = NgramScorer.from_arpa(lang / "other.arpa", lang / "words.txt")
    for s in (1.0, 0.4):
        got = rescore_nbest(nb, scorer, s)
        acoustic = {w: a for w, (a, _) in brute_force_sequences(lp[0]).items()}
        want = max(acoustic, key=lambda w: acoustic[w] + s * other_lm.score(list(w)) * math.log(10))
        assert names(got.tokens[0], id_to_word) == want
        assert best_for_lm_scales([rescore_nbest(nb, scorer, 1.0)], [s])[s] == [got.tokens[0]]


@pytest.mark.parametrize("seed", range(4))
def test_whole_lattice_rescoring(lang, hlg2, seed):
    graph, id_to_word = hlg2
    lp = random_log_probs(1, T, V, seed=seed, sharp=1.5)
    lat = kaldi_get_lattice(graph, lp, torch.tensor([T]), **WIDE)[0]
    one = wfst_decode(graph, lp, torch.tensor([T]), beam=1000.0)[0]
    same = whole_lattice_rescore(lat, NgramScorer.from_arpa(lang / "G_2gram.arpa", lang / "words.txt"))
    assert same.tokens == one.tokens and same.scores[0] == pytest.approx(one.scores[0], abs=1e-4)
    other_lm = read_arpa(lang / "other.arpa", unk=None)
    scorer = NgramScorer.from_arpa(lang / "other.arpa", lang / "words.txt")
    acoustic = {w: a for w, (a, _) in brute_force_sequences(lp[0]).items()}
    for s in (1.0, 0.5):
        got = whole_lattice_rescore(lat, scorer, s)
        total = {w: acoustic[w] + s * other_lm.score(list(w)) * math.log(10) for w in acoustic}
        want = max(total, key=total.get)
        assert names(got.tokens[0], id_to_word) == want
        assert got.scores[0] == pytest.approx(total[want], abs=1e-3)
        assert got.components["lm"][0] == pytest.approx(other_lm.score(list(want)) * math.log(10), abs=1e-3)


@pytest.mark.parametrize("order", [2, 3])
def test_ngram_scorer_is_the_arpa_probability(lang, order):
    """Exactly for the bigram; at least it for the trigram (G's backoff approximation, test_dec_hlg)."""
    lm = read_arpa(lang / f"G_{order}gram.arpa", unk=None)
    scorer = NgramScorer.from_arpa(lang / f"G_{order}gram.arpa", lang / "words.txt")
    ids = {w: i for i, w in enumerate(WORDS)}
    for sent in ["A B", "C C", "D E A", "", "E E E B", "B E A"]:
        words = sent.split()
        got, exact = scorer.score([ids[w] for w in words]), lm.score(words) * math.log(10)
        if order == 2:
            assert got == pytest.approx(exact, abs=1e-4), sent
        assert got >= exact - 1e-4, sent


# ---------------------------------------------------------------------------------------------- k2


@pytest.mark.parametrize("seed", range(6))
def test_k2_lattice_gives_the_kaldi_decoder_nbest(k2, lang, hlg2, seed):
    """icefall's get_lattice (k2) converted to a Lattice: the same n-best word sequences, scores and parts as
    kaldi-decoder's lattice (k2_graph_from_kaldifst's remove_epsilon moves words onto the final arcs too)."""
    from asr_kd.decoding.k2_graph import k2_get_lattice, k2_graph_from_kaldifst, k2_lattices_to_lattices

    graph, _ = hlg2
    lp = random_log_probs(3, T, V, seed=seed, sharp=1.5).float()
    lens = torch.tensor([T, T - 1, 0])
    beams = dict(search_beam=1000.0, output_beam=1000.0, min_active_states=1, max_active_states=100000)
    lat, order = k2_get_lattice(k2_graph_from_kaldifst(graph), lp, lens, **beams)
    assert sorted(order) == [0, 1]
    k2_lats = k2_lattices_to_lattices(lat, order, 3)
    kaldi_lats = kaldi_get_lattice(graph, lp, lens, **WIDE)
    for a, b in zip(k2_lats, kaldi_lats, strict=True):
        na, nb = lattice_nbest(a, 8), lattice_nbest(b, 8)
        assert na.tokens[:6] == nb.tokens[:6]  # (the last ones may tie)
        assert na.scores == pytest.approx(nb.scores, abs=1e-3)
        assert na.components["graph"][:6] == pytest.approx(nb.components["graph"][:6], abs=1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_k2_whole_lattice_rescoring_equals_the_k2_free_one(k2, lang, hlg2, seed):
    from asr_kd.decoding.k2_graph import (
        k2_get_lattice,
        k2_grammar_from_kaldifst,
        k2_graph_from_kaldifst,
        k2_whole_lattice_rescore,
    )

    graph, _ = hlg2
    kgraph = k2_graph_from_kaldifst(graph)
    lp = random_log_probs(2, T, V, seed=seed, sharp=1.5).float()
    lens = torch.tensor([T, T - 1])
    beams = dict(search_beam=1000.0, output_beam=1000.0, min_active_states=1, max_active_states=100000)
    kaldi_lats = kaldi_get_lattice(graph, lp, lens, **WIDE)
    scorer = NgramScorer.from_arpa(lang / "other.arpa", lang / "words.txt")
    G = k2_grammar_from_kaldifst(scorer.G)
    for s in (1.0, 0.5):
        lat, order = k2_get_lattice(kgraph, lp, lens, **beams)
        got = k2_whole_lattice_rescore(lat, order, 2, G, s)
        for g, klat in zip(got, kaldi_lats, strict=True):
            ref = whole_lattice_rescore(klat, scorer, s)
            assert g.tokens == ref.tokens
            assert g.scores[0] == pytest.approx(ref.scores[0], abs=1e-3)
            assert g.components["lm"][0] == pytest.approx(ref.components["lm"][0], abs=1e-3)


# ------------------------------------------------------------------------------- registered methods


class FixedCtc(torch.nn.Module):
    """A model whose CTC log-probs are given (N, T', V): exercises the decoding methods on exact inputs."""

    blank_id = 0
    sos_id = eos_id = 1
    attention_decoder = None

    def __init__(self, log_probs):
        super().__init__()
        self.lp = log_probs
        self.vocab_size = log_probs.size(-1)
        self.ctc = lambda enc: enc  # the "encoder output" is the log-probs themselves

    def encode(self, x, x_lens):
        from types import SimpleNamespace

        return SimpleNamespace(out=self.lp, out_lens=x_lens)


def test_blank_penalty_changes_the_one_best_as_computed_by_hand(lang, tmp_path):
    # 2 frames, p(blank) = 0.6, p(a) = 0.4 (b, c ~ 0): the empty sequence scores 2 ln 0.6 = -1.02, "a" at
    # best ln 0.4 + ln 0.6 = -1.43 (a a: 2 ln 0.4 = -1.83). A blank penalty of 0.5: empty 2 (ln 0.6 - 0.5) =
    # -2.02, "a a" still -1.83: "a" wins (A or D, the homophones, by the LM).
    p = torch.tensor([[0.6, 0.4 - 2e-6, 1e-6, 1e-6]] * 2).log()[None]
    model = FixedCtc(p)
    x, lens = torch.zeros(1, 2, 1), torch.tensor([2])
    assert decode_batch(model, x, lens, "ctc-decoding", SearchOptions()) == [[]]
    assert decode_batch(model, x, lens, "ctc-decoding", SearchOptions(blank_penalty=0.5)) == [[1]]
    assert decode_batch(model, x, lens, "ctc-greedy", SearchOptions(blank_penalty=0.5)) == [[1]]
    opts = SearchOptions(lang_dir=lang)  # HL, no LM
    assert decode_batch(model, x, lens, "1best", opts) == [[]]
    opts.blank_penalty = 0.5
    (hyp,) = decode_batch(model, x, lens, "1best", opts)
    assert [WORDS[i] for i in hyp] in (["A"], ["D"])
    # the penalty 0.2 is not enough: empty 2 (ln 0.6 - 0.2) = -1.42 > -1.83 and > ln 0.4 + ln 0.6 - 0.2 = -1.63
    opts.blank_penalty = 0.2
    assert decode_batch(model, x, lens, "1best", opts) == [[]]


@pytest.mark.parametrize("backend", ["kaldi", "k2"])
def test_registered_lattice_methods_via_decode_batch(request, lang, tmp_path, backend):
    if backend == "k2":
        request.getfixturevalue("k2")
    lp = random_log_probs(3, T, V, seed=11, sharp=1.5).float()
    model = FixedCtc(lp)
    x, lens = torch.zeros(3, T, 1), torch.tensor([T, T, 3])
    arpa2, other = lang / "G_2gram.arpa", lang / "other.arpa"
    base = dict(lang_dir=lang, arpa=arpa2, search_beam=1000.0, lattice_beam=1000.0, lattice_backend=backend)
    one = decode_batch(model, x, lens, "1best", SearchOptions(**base))
    assert one == decode_batch(model, x, lens, "ctc-hlg", SearchOptions(**base))
    assert decode_batch(model, x, lens, "nbest", SearchOptions(**base)) == one
    same = SearchOptions(**base, rescore_arpa=arpa2, num_paths=50)
    assert decode_batch(model, x, lens, "nbest-rescoring", same) == one
    assert decode_batch(model, x, lens, "whole-lattice-rescoring", same) == one
    # another LM: n-best rescoring of every path (the exact n-best) = whole-lattice rescoring = brute force
    diff = SearchOptions(**base, rescore_arpa=other, num_paths=1000, rescore_lm_scale=0.7, nbest_mode="exact")
    nbr = decode_batch(model, x, lens, "nbest-rescoring", diff)
    assert nbr == decode_batch(model, x, lens, "whole-lattice-rescoring", diff)
    other_lm = read_arpa(other, unk=None)
    for n in range(3):
        acoustic = {w: a for w, (a, _) in brute_force_sequences(lp[n, : int(lens[n])].double()).items()}
        total = {w: acoustic[w] + 0.7 * other_lm.score(list(w)) * math.log(10) for w in acoustic}
        assert tuple(WORDS[i] for i in nbr[n]) == max(total, key=total.get)
    # n-best lists for KD: the word sequences spelled in tokens (lexicon spellings; no bpe.model here)
    tokens, scores = decode_nbest(model, x, lens, "nbest", SearchOptions(**base, num_paths=4))
    words, _ = decode_nbest(model, x, lens, "nbest", SearchOptions(**base, num_paths=4)), None
    nb = get_decoding_method("nbest").search(
        model, model.encode(x, lens), SearchOptions(**base, num_paths=4), get_decoding_method("nbest").prepared(
            model, SearchOptions(**base, num_paths=4), {})
    )  # fmt: skip
    for n in range(3):
        assert len(tokens[n]) == len(nb[n].tokens) <= 4 and scores[n] == sorted(scores[n], reverse=True)
        for toks, ws in zip(tokens[n], nb[n].tokens, strict=True):
            assert toks == [TOK[u] for i in ws for u in LEXICON[WORDS[i]]]
    assert words[0] == tokens


def test_rescoring_methods_need_the_rescoring_lm(lang):
    model = FixedCtc(random_log_probs(1, T, V, seed=0).float())
    with pytest.raises(ValueError, match="rescore_arpa"):
        decode_batch(model, torch.zeros(1, T, 1), torch.tensor([T]), "nbest-rescoring", SearchOptions(lang_dir=lang))


@pytest.mark.parametrize("seed", range(3))
def test_lattice_nbest_fallback_when_the_determinisation_is_cut_short(hlg2, seed):
    """max_states=1 stops the determinisation at once: the distinct sequences of the k best lattice paths
    are taken instead, the same n-best on a tiny lattice."""
    graph, _ = hlg2
    lp = random_log_probs(1, T, V, seed=seed, sharp=1.5)
    lat = kaldi_get_lattice(graph, lp, torch.tensor([T]), **WIDE)[0]
    exact = lattice_nbest(lat, 4)
    cut = lattice_nbest(lat, 4, max_states=1, max_paths=100000)
    assert cut.tokens == exact.tokens
    assert cut.scores == pytest.approx(exact.scores, abs=1e-5)
