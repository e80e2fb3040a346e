"""Sampled lattice n-bests (asr_kd.decoding.lattice.sample_lattice_paths / lattice_nbest_sampled, k2's
random_paths through k2_graph.k2_sample_word_sequences, ``SearchOptions.nbest_mode``): on a hand-built lattice
the draws' frequencies are the path posteriors enumerated by hand (chi-square, seeded); on tiny HLG lattices
the word-sequence frequencies of numpy's and k2's draws are the enumerated word-sequence posteriors, the
sampled n-best is a part of the exact one holding the 1-best, a large scale leaves the 1-best alone; the
rescoring methods run on sampled n-bests from decode_batch (FixedCtc) and from a tiny random model, both
lattice backends."""

import math
from collections import Counter

import pytest
import torch

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from decoding_bruteforce import ENCODER, SpreadCtc, random_log_probs  # noqa: E402
from test_dec_hlg import WORDS, V, write_lang  # noqa: E402
from test_dec_lattice import WIDE, FixedCtc, T, brute_force_sequences  # noqa: E402

from asr_kd.decoding.hlg import get_hlg  # noqa: E402
from asr_kd.decoding.lattice import (  # noqa: E402
    Lattice,
    kaldi_get_lattice,
    lattice_nbest,
    lattice_nbest_sampled,
    sample_lattice_paths,
)
from asr_kd.decoding.search import SearchOptions, decode_batch, get_decoding_method  # noqa: E402
from asr_kd.lm.arpa import read_arpa  # noqa: E402


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    """test_dec_lattice's lang dir: the tiny lexicon of test_dec_hlg, its 2-gram, another 2-gram."""
    from asr_kd.lm.ngram import train_ngram, write_arpa

    d = write_lang(tmp_path_factory.mktemp("lang"))
    write_arpa(train_ngram(["C C C", "D D", "E A E", "B B A", "C D E"], 2, unk=None), d / "other.arpa")
    return d


@pytest.fixture(scope="module")
def hlg2(lang, tmp_path_factory):
    graph, id_to_word, _ = get_hlg(lang, lang / "G_2gram.arpa", cache_dir=tmp_path_factory.mktemp("cache"))
    return graph, id_to_word


K2_BEAMS = dict(search_beam=1000.0, output_beam=1000.0, min_active_states=1, max_active_states=100000)


def complete_paths(lat: Lattice):
    """Every complete path of an acyclic lattice by depth-first search: ``[(arc ids, log score)]``."""
    out_arcs = {}
    for i, (src, *_) in enumerate(lat.arcs):
        out_arcs.setdefault(src, []).append(i)
    found = []

    def walk(s, arcs, cost):
        if s in lat.finals:
            found.append((tuple(arcs), -(cost + sum(lat.finals[s]))))
        for i in out_arcs.get(s, []):
            walk(lat.arcs[i][1], [*arcs, i], cost + lat.arcs[i][4] + lat.arcs[i][5])

    walk(lat.start, [], 0.0)
    return found


def posteriors(items, scale):
    """``{key: p}`` with ``p(key)`` proportional to the sum of ``exp(scale * score)`` of its items."""
    m = max(s for _, s in items)
    tot: dict = {}
    for key, s in items:
        tot[key] = tot.get(key, 0.0) + math.exp(scale * (s - m))
    z = sum(tot.values())
    return {k: v / z for k, v in tot.items()}


def words_of(lat, arc_ids):
    return tuple(lat.arcs[i][3] for i in arc_ids if lat.arcs[i][3] > 0)


def chi2_quantile(df: int, z: float = 3.09) -> float:
    """The chi-square quantile at the normal quantile ``z`` (3.09: 0.999), Wilson-Hilferty."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


@pytest.fixture
def tiny_lattice():
    """States numbered out of topological order (4 before 2), an epsilon arc, a final state with arcs out
    (1), a dead end (5: never reached), two paths of the same words (A C, via 3 or 2), an empty-word path."""
    arcs = [
        (0, 1, 1, 2, 0.5, 0.2),  # A
        (1, 4, 2, 4, 0.1, 0.3),  # C
        (0, 3, 3, 2, 0.2, 0.9),  # A
        (3, 4, 4, 4, 0.3, 0.0),  # C
        (0, 2, 1, 0, 0.0, 1.7),  # (epsilon output)
        (2, 4, 2, 3, 0.4, 0.1),  # B
        (1, 5, 3, 5, 0.0, 0.0),  # into the dead end
        (0, 4, 2, 0, 2.0, 0.5),  # (no words)
    ]
    return Lattice(6, 0, arcs, {4: (0.0, 0.0), 1: (0.3, 0.4)})


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])
def test_sampled_paths_follow_the_path_posteriors(tiny_lattice, scale):
    lat = tiny_lattice
    want = posteriors(complete_paths(lat), scale)
    assert len(want) == 5
    n = 20000
    got = Counter(tuple(p) for p in sample_lattice_paths(lat, n, scale=scale, seed=7))
    assert set(got) <= set(want)  # complete paths only (never into the dead end)
    chi2 = sum((got.get(k, 0) - n * p) ** 2 / (n * p) for k, p in want.items())
    assert chi2 < chi2_quantile(len(want) - 1), (chi2, got, want)
    # seeded: the same draws again, others with another seed
    assert sample_lattice_paths(lat, 50, scale=scale, seed=7) == sample_lattice_paths(lat, 50, scale=scale, seed=7)
    assert sample_lattice_paths(lat, 50, scale=scale, seed=7) != sample_lattice_paths(lat, 50, scale=scale, seed=8)


def test_sampled_nbest_of_the_tiny_lattice(tiny_lattice):
    """Deduplicated by words, each scored by its best path (A C: the cheaper of its two paths), best first;
    the lists grow with num_paths towards the exact n-best, never past it."""
    lat = tiny_lattice
    best_of: dict = {}
    for arcs, s in complete_paths(lat):
        w = words_of(lat, arcs)
        best_of[w] = max(best_of.get(w, -math.inf), s)
    full = lattice_nbest_sampled(lat, 2000, nbest_scale=0.5)
    assert {tuple(h): s for h, s in zip(full.tokens, full.scores)} == pytest.approx(best_of)
    assert full.scores == sorted(full.scores, reverse=True)
    exact = lattice_nbest(lat, 100)
    assert full.tokens == exact.tokens and full.scores == pytest.approx(exact.scores)
    assert full.components["graph"] == pytest.approx(exact.components["graph"])
    for n in (1, 2, 3, 5):
        sampled = lattice_nbest_sampled(lat, n, nbest_scale=0.5, seed=3)
        assert len(sampled.tokens) <= len(lattice_nbest(lat, n).tokens) <= n
        assert sampled.tokens[0] == exact.tokens[0]  # the 1-best is always in
    assert lattice_nbest_sampled(None, 5).tokens == []
    with pytest.raises(ValueError, match="nbest_scale"):
        lattice_nbest_sampled(lat, 5, nbest_scale=0.0)


def test_empty_and_pathless_lattices():
    empty = Lattice(1, 0, [], {0: (0.0, 0.0)})  # 0 frames: the empty sequence
    assert sample_lattice_paths(empty, 3) == [[], [], []]
    nb = lattice_nbest_sampled(empty, 10)
    assert nb.tokens == [[]] and nb.scores == [0.0]
    no_final = Lattice(2, 0, [(0, 1, 1, 2, 0.0, 0.0)], {})
    assert sample_lattice_paths(no_final, 3) == [] and lattice_nbest_sampled(no_final, 3).tokens == []


# -------------------------------------------------------------------------------- tiny HLG lattices


def hlg_lattice(hlg2, seed, sharp=1.5):
    graph, _ = hlg2
    lp = random_log_probs(1, T, V, seed=seed, sharp=sharp)
    return lp, kaldi_get_lattice(graph, lp, torch.tensor([T]), **WIDE)[0]


def word_posteriors(lat, scale):
    return posteriors([(words_of(lat, arcs), s) for arcs, s in complete_paths(lat)], scale)


@pytest.mark.parametrize("seed", range(3))
def test_numpy_draws_on_hlg_lattices_follow_the_word_sequence_posteriors(hlg2, seed):
    _, lat = hlg_lattice(hlg2, seed)
    want = word_posteriors(lat, 0.5)
    n = 6000
    got = Counter(words_of(lat, p) for p in sample_lattice_paths(lat, n, scale=0.5, seed=seed))
    assert set(got) <= set(want)
    for w, p in want.items():  # 4.5 standard deviations, and 3 draws for the rare sequences (normal tails)
        assert abs(got.get(w, 0) / n - p) <= 4.5 * math.sqrt(p * (1 - p) / n) + 3 / n, (w, got.get(w, 0), n * p)


@pytest.mark.parametrize("seed", range(3))
def test_k2_random_paths_follow_the_word_sequence_posteriors(k2, hlg2, seed):
    """k2.random_paths on k2's own lattice (scores scaled): evenly spaced in the posterior, so each word
    sequence's share is its posterior up to a few paths; the posterior enumerated on the converted lattice."""
    from asr_kd.decoding.k2_graph import (
        k2_get_lattice,
        k2_graph_from_kaldifst,
        k2_lattices_to_lattices,
        k2_sample_word_sequences,
    )

    graph, _ = hlg2
    lp = random_log_probs(2, T, V, seed=seed, sharp=1.5).float()
    lens = torch.tensor([T, T - 1])
    lat, order = k2_get_lattice(k2_graph_from_kaldifst(graph), lp, lens, **K2_BEAMS)
    before = lat.scores.clone()
    n = 4000
    drawn = k2_sample_word_sequences(lat, order, 2, n, nbest_scale=0.5)
    assert torch.equal(lat.scores, before)  # the lattice is not scaled in place
    assert drawn == k2_sample_word_sequences(lat, order, 2, n, nbest_scale=0.5)  # deterministic
    for u, converted in enumerate(k2_lattices_to_lattices(lat, order, 2)):
        want = word_posteriors(converted, 0.5)
        got = Counter(drawn[u])
        assert len(drawn[u]) == n and set(got) <= set(want)
        for w, p in want.items():
            assert abs(got.get(w, 0) / n - p) <= 0.005, (w, got.get(w, 0), n * p)


@pytest.mark.parametrize("seed", range(4))
def test_sampled_nbest_is_a_part_of_the_exact_nbest(hlg2, seed):
    _, lat = hlg_lattice(hlg2, seed)
    every = lattice_nbest(lat, 100000)  # every word sequence with its best path's score
    score_of = {tuple(h): s for h, s in zip(every.tokens, every.scores)}
    for n in (1, 3, 10, 50):
        sampled = lattice_nbest_sampled(lat, n, nbest_scale=0.5, seed=seed)
        exact = lattice_nbest(lat, n)
        assert len(sampled.tokens) <= len(exact.tokens) <= n
        assert sampled.tokens[0] == exact.tokens[0] == every.tokens[0]  # the 1-best
        assert {tuple(h): s for h, s in zip(sampled.tokens, sampled.scores)} == pytest.approx(
            {tuple(h): score_of[tuple(h)] for h in sampled.tokens}, abs=1e-4
        )
    # a flat posterior (small scale) and many draws: every sequence of the lattice
    assert sorted(lattice_nbest_sampled(lat, 20000, nbest_scale=0.05).tokens) == sorted(every.tokens)


@pytest.mark.parametrize("seed", range(4))
def test_a_large_nbest_scale_concentrates_the_draws_on_the_best_path(hlg2, seed):
    _, lat = hlg_lattice(hlg2, seed)
    best = lattice_nbest(lat, 1).tokens[0]
    share = {}
    for scale in (0.25, 1.0, 4.0, 1000.0):
        got = Counter(words_of(lat, p) for p in sample_lattice_paths(lat, 4000, scale=scale, seed=seed))
        share[scale] = got[tuple(best)] / 4000
    assert share[0.25] < share[1.0] < share[4.0] <= share[1000.0] == 1.0, share
    assert lattice_nbest_sampled(lat, 200, nbest_scale=1000.0, seed=seed).tokens == [best]


# ------------------------------------------------------------------------------- registered methods


@pytest.mark.parametrize("backend", ["kaldi", "k2"])
def test_nbest_rescoring_on_sampled_nbests(request, lang, backend):
    """decode_batch: the sampled n-best holds the 1-best; nbest-rescoring gives the best of that list by
    acoustic (brute force) + scale * ln p (the ARPA); with a flat posterior and many draws it is the
    whole-lattice result; exact and sampled options are told apart in the result-file suffix."""
    if backend == "k2":
        request.getfixturevalue("k2")
    lp = random_log_probs(3, T, V, seed=5, sharp=1.5).float()
    model = FixedCtc(lp)
    x, lens = torch.zeros(3, T, 1), torch.tensor([T, T, 3])
    other = lang / "other.arpa"
    base = dict(lang_dir=lang, arpa=lang / "G_2gram.arpa", search_beam=1000.0, lattice_beam=1000.0)
    base.update(lattice_backend=backend, rescore_arpa=other, rescore_lm_scale=0.7)
    opts = SearchOptions(**base, num_paths=6)
    assert opts.nbest_mode == "sampled"
    one = decode_batch(model, x, lens, "1best", opts)
    method = get_decoding_method("nbest")
    nbests = method.search(model, model.encode(x, lens), opts, method.prepared(model, opts, {}))
    assert [nb.tokens[0] for nb in nbests] == one
    assert decode_batch(model, x, lens, "nbest", opts) == one
    rescored = decode_batch(model, x, lens, "nbest-rescoring", opts)
    other_lm = read_arpa(other, unk=None)
    for n in range(3):
        assert 1 <= len(nbests[n].tokens) <= 6
        acoustic = {w: a for w, (a, _) in brute_force_sequences(lp[n, : int(lens[n])].double()).items()}
        listed = [tuple(WORDS[i] for i in h) for h in nbests[n].tokens]
        total = {w: acoustic[w] + 0.7 * other_lm.score(list(w)) * math.log(10) for w in listed}
        assert tuple(WORDS[i] for i in rescored[n]) == max(total, key=total.get)
    flat = SearchOptions(**base, num_paths=5000, nbest_scale=0.05)
    assert decode_batch(model, x, lens, "nbest-rescoring", flat) == decode_batch(
        model, x, lens, "whole-lattice-rescoring", flat
    )
    suffix = get_decoding_method("nbest-rescoring").suffix
    assert suffix(opts).endswith("_sampled-6_ns-0.5")
    assert suffix(SearchOptions(**base, num_paths=6, nbest_seed=3)).endswith("_sampled-6_ns-0.5_seed-3")
    assert suffix(SearchOptions(**base, num_paths=6, nbest_mode="exact")).endswith("_n-6")


def test_bad_nbest_options_are_refused(lang):
    model = FixedCtc(random_log_probs(1, T, V, seed=0).float())
    x, lens = torch.zeros(1, T, 1), torch.tensor([T])
    for bad, match in (
        (dict(nbest_mode="random"), "nbest_mode"),
        (dict(nbest_scale=0.0), "nbest_scale"),
        (dict(num_paths=0), "num_paths"),
    ):
        with pytest.raises(ValueError, match=match):
            decode_batch(model, x, lens, "nbest", SearchOptions(lang_dir=lang, **bad))


@pytest.mark.parametrize("backend", ["kaldi", "k2"])
def test_rescoring_methods_with_sampling_on_a_tiny_model(request, lang, backend):
    """A random Conformer with CTC and attention-decoder heads: nbest-rescoring and
    attention-decoder-rescoring-with-ngram run on sampled n-bests; their hypotheses are word sequences of
    the exact n-best of every lattice path, and the same twice (seeded)."""
    if backend == "k2":
        request.getfixturevalue("k2")
    from asr_kd.models.asr_model import build_asr_model

    torch.manual_seed(0)
    model = build_asr_model(
        {
            "vocab_size": V,
            "encoder": ENCODER,
            "ctc": {},
            "attention_decoder": {"num_layers": 1, "heads": 2, "d_ff": 16, "dropout": 0.0},
        }
    ).eval()
    model.ctc = SpreadCtc(model.ctc)
    g = torch.Generator().manual_seed(1)
    x, x_lens = torch.randn(2, 40, 20, generator=g), torch.tensor([40, 32])
    opts = SearchOptions(
        lang_dir=lang,
        arpa=lang / "G_2gram.arpa",
        rescore_arpa=lang / "other.arpa",
        lattice_backend=backend,
        num_paths=20,
        lattice_beam=6.0,
    )
    every = SearchOptions(**{**opts.__dict__, "nbest_mode": "exact", "num_paths": 100000})
    method = get_decoding_method("nbest")
    enc = model.encode(x, x_lens)
    all_seqs = [
        {tuple(h) for h in nb.tokens} for nb in method.search(model, enc, every, method.prepared(model, every, {}))
    ]
    for name in ("nbest-rescoring", "attention-decoder-rescoring-with-ngram"):
        hyps = decode_batch(model, x, x_lens, name, opts)
        assert len(hyps) == 2 and all(tuple(h) in s for h, s in zip(hyps, all_seqs))
        assert decode_batch(model, x, x_lens, name, opts) == hyps
