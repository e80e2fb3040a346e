"""Decoding lattices of CTC output on an HLG graph, their n-best lists and n-gram rescoring (k2-free).

Dimension legend (see ``docs/DESIGN.md``): N utterances, T' encoder frames, V vocabulary, K n-best size.

A :class:`Lattice` is one utterance's acyclic search lattice: arcs ``(src, dst, ilabel, olabel, graph
cost, acoustic cost)`` with input labels ``token + 1`` (0 = epsilon, the convention of
:mod:`asr_kd.decoding.wfst`), output labels word ids (0 = no word), costs ``-log`` (so a path's total log
score is ``-(graph + acoustic)``), and final costs per final state. It comes from
:func:`kaldi_get_lattice`: kaldi-decoder's ``LatticeSimpleDecoder`` on a kaldifst graph (its raw,
state-level lattice, pruned to ``lattice_beam``). (k2's lattice, :func:`asr_kd.decoding.k2_graph.k2_get_lattice`,
is rescored by :func:`asr_kd.decoding.k2_graph.k2_whole_lattice_rescore`.)

On a lattice (kaldifst operations only):

- :func:`lattice_nbest`: the K best **distinct** word sequences, each with the score of its best path
  and that path's graph / acoustic parts (word acceptor, ``rmepsilon``, pruned ``determinize``,
  ``shortest_path(K)``; then each sequence's best path through the arc-labelled lattice);
- :func:`lattice_nbest_sampled`: icefall's n-best: the distinct word sequences of the best path and of
  ``K - 1`` paths drawn from the lattice's posterior with scores scaled by ``nbest_scale``
  (:func:`sample_lattice_paths`: a backward pass, then all paths drawn at once), each scored as in
  :func:`lattice_nbest`;
- :func:`rescore_nbest`: an n-best list with the graph (first-pass LM) score replaced by
  ``lm_scale * ln p`` of another LM (:class:`NgramScorer`); :func:`best_for_lm_scales` does several
  scales from one pass;
- :func:`whole_lattice_rescore`: the best path of ``acoustic + lm_scale * ln p_G'`` over the whole
  lattice, by composing it with another grammar G' (OpenFst composition, epsilons handled exactly).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asr_kd.decoding.common import NBest

__all__ = [
    "Lattice",
    "kaldi_get_lattice",
    "lattice_nbest",
    "sample_lattice_paths",
    "lattice_nbest_sampled",
    "NgramScorer",
    "rescore_nbest",
    "best_for_lm_scales",
    "whole_lattice_rescore",
]


def _kf():
    import kaldifst  # noqa: PLC0415  (optional dependency)

    return kaldifst


@dataclass
class Lattice:
    """One utterance's acyclic lattice (see the module docstring).

    Attributes:
        num_states: states ``0..num_states-1``.
        start: the start state.
        arcs: ``(src, dst, ilabel, olabel, graph_cost, acoustic_cost)``.
        finals: final state -> ``(graph_cost, acoustic_cost)`` of its final weight.
    """

    num_states: int
    start: int
    arcs: list[tuple[int, int, int, int, float, float]] = field(default_factory=list)
    finals: dict[int, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_kaldi(cls, lat) -> Lattice:
        """From a kaldifst ``Lattice`` (``LatticeWeight`` = (graph cost, acoustic cost)), via its text form."""
        arcs, finals = [], {}
        n = 0
        for line in lat.to_str(show_weight_one=True).splitlines():
            p = line.split()
            if len(p) >= 4:
                g, a = (float(v) for v in p[4].split(",")) if len(p) == 5 else (0.0, 0.0)
                src, dst = int(p[0]), int(p[1])
                arcs.append((src, dst, int(p[2]), int(p[3]), g, a))
                n = max(n, src + 1, dst + 1)
            elif p:
                g, a = (float(v) for v in p[1].split(",")) if len(p) == 2 else (0.0, 0.0)
                finals[int(p[0])] = (g, a)
                n = max(n, int(p[0]) + 1)
        return cls(max(n, lat.num_states), int(lat.start), arcs, finals)

    def to_fst(self, *, ilabels: str = "arc", weight: str = "total", acoustic_scale: float = 1.0):
        """A kaldifst ``StdVectorFst`` of this lattice.

        Args:
            ilabels: ``"arc"``: input label ``i + 1`` on arc ``i`` (to find a path's arcs again);
                ``"word"``: an acceptor over the word ids.
            weight: ``"total"`` (graph + acoustic cost) or ``"acoustic"`` (acoustic cost only).
            acoustic_scale: multiplies the acoustic costs.
        """
        kf = _kf()
        fst = kf.StdVectorFst()
        for _ in range(self.num_states):
            fst.add_state()
        fst.start = self.start

        def cost(g: float, a: float) -> float:
            return (g if weight == "total" else 0.0) + acoustic_scale * a

        for i, (src, dst, _, ol, g, a) in enumerate(self.arcs):
            il = i + 1 if ilabels == "arc" else ol
            fst.add_arc(src, kf.StdArc(il, ol, cost(g, a), dst))
        for s, (g, a) in self.finals.items():
            fst.set_final(s, cost(g, a))
        return fst

    def path_costs(self, arc_ids: Sequence[int]) -> tuple[float, float]:
        """``(graph, acoustic)`` cost of the complete path through ``arc_ids`` (final weight included)."""
        g = sum(self.arcs[i][4] for i in arc_ids)
        a = sum(self.arcs[i][5] for i in arc_ids)
        end = self.arcs[arc_ids[-1]][1] if arc_ids else self.start
        fg, fa = self.finals.get(end, (math.inf, math.inf))
        return g + fg, a + fa


def kaldi_get_lattice(
    graph,
    log_probs: torch.Tensor,
    lens: torch.Tensor,
    *,
    beam: float = 16.0,
    lattice_beam: float = 8.0,
    acoustic_scale: float = 1.0,
) -> list[Lattice | None]:
    """Lattices of CTC log posteriors on a kaldifst graph (kaldi-decoder ``LatticeSimpleDecoder``).

    Args:
        graph: a decoding graph with input labels ``token + 1`` (H, HL, HLG of :mod:`asr_kd.decoding.hlg`).
        log_probs: ``(N, T', V)`` CTC log posteriors.
        lens: ``(N,)`` valid frames.
        beam: the search beam (cost units); lattice_beam: the lattice pruning beam.
        acoustic_scale: multiplies the log posteriors.

    Returns:
        N :class:`Lattice` (None where no final state was reached; an utterance of 0 frames gives the
        one-state lattice of the empty sequence).
    """
    import kaldi_decoder  # noqa: PLC0415

    cfg = kaldi_decoder.LatticeSimpleDecoderConfig(beam=beam, lattice_beam=lattice_beam)
    decoder = kaldi_decoder.LatticeSimpleDecoder(graph, cfg)
    lp = (log_probs.detach().float().cpu() * acoustic_scale).numpy()
    out: list[Lattice | None] = []
    for n, T in enumerate(lens.tolist()):
        if T == 0:
            out.append(Lattice(1, 0, [], {0: (0.0, 0.0)}))
            continue
        decoder.decode(kaldi_decoder.DecodableCtc(lp[n, :T].copy()))
        ok, lat = decoder.get_raw_lattice()
        out.append(Lattice.from_kaldi(lat) if ok and lat.num_states > 0 else None)
    return out


def _linear_paths(fst) -> list[tuple[list[int], list[int], float]]:
    """The paths of a ``shortest_path(n)`` result: ``(ilabels, olabels, cost)``, cheapest first."""
    kf = _kf()
    paths = []
    for p in kf.convert_nbest_to_vector(fst):
        ok, il, ol, w = kf.get_linear_symbol_sequence(p)
        if ok:
            paths.append((list(il), list(ol), float(w.value)))
    paths.sort(key=lambda x: x[2])
    return paths


def _best_path_of(lat: Lattice, arc_fst, words: Sequence[int]) -> list[int] | None:
    """Arc ids of the best path of ``lat`` whose words are ``words`` (``arc_fst``: ``lat.to_fst()``,
    olabel-sorted); None when there is none."""
    kf = _kf()
    best = _linear_paths(kf.shortest_path(kf.compose(arc_fst, kf.make_linear_acceptor(list(words))), n=1))
    return [i - 1 for i in best[0][0] if i > 0] if best else None


def _kbest_sequences(fst, n: int, max_paths: int) -> list[tuple[int, ...]]:
    """Distinct output sequences of the ``K`` best paths of ``fst``, ``K`` doubled from ``4 n`` until ``n``
    are found, the paths run out, or ``K`` reaches ``max_paths``."""
    kf = _kf()
    k = min(4 * n, max_paths)
    while True:
        paths = _linear_paths(kf.shortest_path(fst, n=k))
        seqs = list(dict.fromkeys(tuple(w for w in ol if w > 0) for _, ol, _ in paths))
        if len(seqs) >= n or len(paths) < k or k >= max_paths:
            return seqs[:n]
        k = min(2 * k, max_paths)


def lattice_nbest(
    lat: Lattice | None, n: int = 10, *, beam: float | None = None, max_states: int = 2000, max_paths: int = 2000
) -> NBest:
    """The ``n`` best distinct word sequences of a lattice, best first.

    The word acceptor of the lattice (total costs), epsilons removed, is determinised (OpenFst; with
    ``beam``, only the paths within ``beam`` of the best, and at most ``max_states`` states), and its ``n``
    best paths are the sequences; each one's best path through the lattice gives its graph / acoustic
    parts. Exact with ``beam=None`` when the determinisation is not cut short. When it reaches
    ``max_states`` (cut short), the distinct sequences among the ``K <= max_paths`` best lattice paths are
    taken instead.

    Returns:
        An :class:`NBest` of word ids, ``scores`` = the total log score of each sequence's best path,
        ``components`` ``{"graph": [...], "acoustic": [...]}`` its parts (log domain, ``-cost``).
        Empty when ``lat`` is None.
    """
    if lat is None:
        return NBest(tokens=[], scores=[], components={"graph": [], "acoustic": []})
    kf = _kf()
    n = max(int(n), 1)
    words = lat.to_fst(ilabels="word")
    kf.rmepsilon(words)
    det = kf.determinize(words, weight="" if beam is None else repr(float(beam)), nstate=int(max_states))
    seqs: list[tuple[int, ...]] = []
    if max_states <= 0 or det.num_states < max_states:  # at the cap: cut short, its paths are not the n best
        seqs = [tuple(w for w in ol if w > 0) for _, ol, _ in _linear_paths(kf.shortest_path(det, n=n))]
    arc_fst = lat.to_fst()
    kf.arcsort(arc_fst, sort_type="olabel")
    if not seqs:
        seqs = _kbest_sequences(arc_fst, n, max_paths)
    tokens, scores, graph, acoustic = [], [], [], []
    for ws in seqs:
        arc_ids = _best_path_of(lat, arc_fst, ws)
        if arc_ids is None:
            continue
        g, a = lat.path_costs(arc_ids)
        tokens.append(list(ws))
        scores.append(-(g + a))
        graph.append(-g)
        acoustic.append(-a)
    return _rerank(tokens, scores, {"graph": graph, "acoustic": acoustic})


def _topological_order(lat: Lattice) -> list[int]:
    """The lattice's states in an order where every arc goes forward; ``ValueError`` on a cycle."""
    indeg = [0] * lat.num_states
    succ: list[list[int]] = [[] for _ in range(lat.num_states)]
    for src, dst, *_ in lat.arcs:
        succ[src].append(dst)
        indeg[dst] += 1
    order = [s for s in range(lat.num_states) if indeg[s] == 0]
    for s in order:  # (grows while iterated: Kahn's algorithm)
        for d in succ[s]:
            indeg[d] -= 1
            if indeg[d] == 0:
                order.append(d)
    if len(order) < lat.num_states:
        raise ValueError(f"the lattice has a cycle ({lat.num_states - len(order)} states on or after it)")
    return order


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def sample_lattice_paths(lat: Lattice, num_paths: int, *, scale: float = 1.0, seed: int = 0) -> list[list[int]]:
    """``num_paths`` complete paths of ``lat`` drawn independently, each with probability
    ``exp(scale * score(path)) / sum_p exp(scale * score(p))`` (``score = -(graph + acoustic)`` cost, final
    weight included).

    A backward pass in the log semiring gives ``beta(s)``, the log sum over the paths from state ``s`` to
    the end; from ``s`` a path stops with probability ``exp(final(s) - beta(s))`` or takes arc ``a`` with
    ``exp(scale * score(a) + beta(dst) - beta(s))``. All paths advance together (one vectorised draw per
    step). The generator is ``numpy.random.default_rng(seed)``, made anew per call: a lattice gets the same
    paths whatever batch it came in.

    Returns:
        ``num_paths`` lists of arc ids (indices into ``lat.arcs``), in drawing order; ``[]`` when the lattice
        has no complete path.
    """
    if scale <= 0:
        raise ValueError(f"the sampling scale must be > 0, got {scale}")
    if num_paths <= 0:
        return []
    weight = [-scale * (g + a) for *_, g, a in lat.arcs]
    final = [-math.inf] * lat.num_states
    for s, (g, a) in lat.finals.items():
        final[s] = -scale * (g + a)
    out_arcs: list[list[int]] = [[] for _ in range(lat.num_states)]
    for i, (src, *_) in enumerate(lat.arcs):
        out_arcs[src].append(i)
    beta = [-math.inf] * lat.num_states
    for s in reversed(_topological_order(lat)):
        b = final[s]
        for i in out_arcs[s]:
            b = _log_add(b, weight[i] + beta[lat.arcs[i][1]])
        beta[s] = b
    if beta[lat.start] == -math.inf:
        return []
    # the options of each state, zero-probability ones left out: arc id, or -1 to stop; a state's
    # cumulative probabilities are offset by the state id, so one searchsorted serves every path at once
    options = []  # (state, arc id or -1, probability)
    for s in range(lat.num_states):
        if beta[s] == -math.inf:
            continue
        options += [(s, i, math.exp(weight[i] + beta[lat.arcs[i][1]] - beta[s])) for i in out_arcs[s]]
        if final[s] > -math.inf:
            options.append((s, -1, math.exp(final[s] - beta[s])))
    options = [o for o in options if o[2] > 0.0]
    st = np.array([o[0] for o in options])
    arc_of = np.array([o[1] for o in options])
    prob = np.array([o[2] for o in options])
    last = np.flatnonzero(np.r_[st[1:] != st[:-1], True])  # each state's last option
    first = np.r_[0, last[:-1] + 1]
    cum = np.cumsum(prob)
    cum -= np.repeat(np.r_[0.0, cum[last[:-1]]], last - first + 1)
    cum /= np.repeat(cum[last], last - first + 1)
    keys = st + cum
    keys[last] = st[last] + 1.0
    seg_last = np.full(lat.num_states, -1)
    seg_last[st[last]] = last
    dst_of = np.array([d for _, d, *_ in lat.arcs] or [0])
    rng = np.random.default_rng(seed)
    paths: list[list[int]] = [[] for _ in range(num_paths)]
    alive = np.arange(num_paths)
    state = np.full(num_paths, lat.start)
    for _ in range(lat.num_states + 1):  # acyclic: at most num_states arcs per path
        if alive.size == 0:
            break
        pick = np.searchsorted(keys, state + rng.random(alive.size), side="right")
        pick = np.minimum(pick, seg_last[state])  # (a rounding past a state's last key)
        arcs = arc_of[pick]
        for k, a in zip(alive.tolist(), arcs.tolist()):
            if a >= 0:
                paths[k].append(a)
        go = arcs >= 0
        alive, state = alive[go], dst_of[arcs[go]]
    return paths


def lattice_nbest_sampled(
    lat: Lattice | None,
    num_paths: int = 100,
    *,
    nbest_scale: float = 0.5,
    seed: int = 0,
    samples: Iterable[Sequence[int]] | None = None,
) -> NBest:
    """icefall's n-best of a lattice: the distinct word sequences of sampled paths, best first.

    The list is built from ``num_paths`` paths: the lattice's **best path**, always (so the n-best's top
    entry is the 1-best, as with :func:`lattice_nbest`; icefall's sampled list may miss it), and
    ``num_paths - 1`` paths drawn by :func:`sample_lattice_paths` with the scores scaled by ``nbest_scale``
    (< 1 flattens the posterior: more distinct sequences; large: the draws concentrate on the best path).
    Their word sequences are deduplicated (first occurrence kept), so the list holds at most ``num_paths``
    entries, and never more than :func:`lattice_nbest` with the same ``num_paths``. Each sequence is scored
    by its best path through the lattice (unscaled), as in :func:`lattice_nbest`.

    Args:
        samples: word sequences drawn elsewhere (k2's ``random_paths``,
            :func:`asr_kd.decoding.k2_graph.k2_sample_word_sequences`) used instead of drawing here.

    Returns:
        An :class:`NBest` in :func:`lattice_nbest`'s layout (word ids; ``scores``; ``components``
        ``{"graph", "acoustic"}``). Empty when ``lat`` is None or has no complete path.
    """
    empty = NBest(tokens=[], scores=[], components={"graph": [], "acoustic": []})
    if lat is None:
        return empty
    if nbest_scale <= 0:
        raise ValueError(f"nbest_scale must be > 0, got {nbest_scale}")
    kf = _kf()
    num_paths = max(int(num_paths), 1)
    arc_fst = lat.to_fst()
    best = _linear_paths(kf.shortest_path(arc_fst, n=1))
    if not best:
        return empty
    best_arcs = [i - 1 for i in best[0][0] if i > 0]

    def words_of(arc_ids):
        return tuple(lat.arcs[i][3] for i in arc_ids if lat.arcs[i][3] > 0)

    if samples is None:
        drawn = sample_lattice_paths(lat, num_paths - 1, scale=nbest_scale, seed=seed)
        samples = (words_of(p) for p in drawn)
    seqs = list(dict.fromkeys([words_of(best_arcs), *(tuple(w for w in s if w > 0) for s in samples)]))
    kf.arcsort(arc_fst, sort_type="olabel")
    tokens, scores, graph, acoustic = [], [], [], []
    for k, ws in enumerate(seqs[:num_paths]):
        arc_ids = best_arcs if k == 0 else _best_path_of(lat, arc_fst, ws)
        if arc_ids is None:
            continue
        g, a = lat.path_costs(arc_ids)
        tokens.append(list(ws))
        scores.append(-(g + a))
        graph.append(-g)
        acoustic.append(-a)
    return _rerank(tokens, scores, {"graph": graph, "acoustic": acoustic})


class NgramScorer:
    """``ln p(w_1 .. w_n </s> | <s>)`` of word-id sequences under an n-gram grammar G (tropical: the best
    path of the word sequence through G, the LM score an HLG built from that G gives the sequence).

    Args:
        G: a kaldifst acceptor over word ids whose backoff arcs are epsilons (see :meth:`from_arpa`).
    """

    def __init__(self, G):
        kf = _kf()
        self.G = G
        kf.arcsort(self.G, sort_type="ilabel")
        self._cache: dict[tuple[int, ...], float] = {}

    @classmethod
    def from_arpa(cls, arpa: str | Path, words_txt: str | Path) -> NgramScorer:
        """G from an ARPA file with kaldilm (:func:`asr_kd.decoding.hlg.compile_G`), ``#0`` and the ids
        after it (the disambiguation symbols) turned into epsilons."""
        from asr_kd.decoding.hlg import _relabel_disambig, compile_G  # noqa: PLC0415
        from asr_kd.lm.lang import read_symbols  # noqa: PLC0415

        G = compile_G(arpa, words_txt)
        first = read_symbols(words_txt)["#0"]
        return cls(_relabel_disambig(G, first, first))

    def score(self, words: Sequence[int]) -> float:
        """``ln p`` of the sentence (``-inf`` when G has no path for it)."""
        key = tuple(int(w) for w in words)
        if key not in self._cache:
            kf = _kf()
            paths = _linear_paths(kf.shortest_path(kf.compose(kf.make_linear_acceptor(list(key)), self.G), n=1))
            self._cache[key] = -paths[0][2] if paths else -math.inf
        return self._cache[key]


def rescore_nbest(nbest: NBest, scorer: NgramScorer, lm_scale: float = 1.0) -> NBest:
    """Replace the graph score of each hypothesis by ``lm_scale * scorer.score(words)`` and re-rank.

    ``nbest``: from :func:`lattice_nbest` (word ids, ``components["acoustic"]``). Returns an
    :class:`NBest` with ``scores = acoustic + lm_scale * lm``, ``components`` ``{"acoustic", "lm",
    "graph"}`` (``lm`` unscaled ``ln p``; ``graph`` the first-pass score), best first.
    """
    lm = [scorer.score(h) for h in nbest.tokens]
    comps = {"acoustic": list(nbest.components["acoustic"]), "lm": lm, "graph": list(nbest.components["graph"])}
    return _rerank(nbest.tokens, [a + lm_scale * v for a, v in zip(comps["acoustic"], lm)], comps)


def _rerank(tokens: Sequence[Sequence[int]], scores: Sequence[float], comps: dict[str, list[float]]) -> NBest:
    """An :class:`NBest` of the hypotheses, their scores and score components, best score first."""
    order = sorted(range(len(tokens)), key=lambda k: -scores[k])
    return NBest(
        tokens=[list(tokens[k]) for k in order],
        scores=[float(scores[k]) for k in order],
        components={name: [v[k] for k in order] for name, v in comps.items()},
    )


def best_for_lm_scales(results: Iterable[NBest], lm_scales: Sequence[float]) -> dict[float, list[list[int]]]:
    """The best hypothesis of each n-best list for each LM scale, from one rescoring pass.

    ``results``: :func:`rescore_nbest` outputs (``components["acoustic"]`` and ``["lm"]``). Returns
    ``{lm_scale: N word-id lists}`` (icefall's ``lm_scale_<s>`` results of ``nbest-rescoring``).
    """
    results = list(results)
    out: dict[float, list[list[int]]] = {}
    for s in lm_scales:
        hyps = []
        for r in results:
            if not r.tokens:
                hyps.append([])
                continue
            tot = [a + s * v for a, v in zip(r.components["acoustic"], r.components["lm"])]
            hyps.append(list(r.tokens[max(range(len(tot)), key=tot.__getitem__)]))
        out[float(s)] = hyps
    return out


def whole_lattice_rescore(lat: Lattice | None, scorer: NgramScorer, lm_scale: float = 1.0) -> NBest:
    """The best word sequence of ``acoustic + lm_scale * ln p_G'`` over the whole lattice.

    The lattice's graph scores are dropped and its acoustic costs, divided by ``lm_scale`` (the same
    ranking), composed with ``scorer.G`` (OpenFst composition: G's backoff epsilons are followed exactly).

    Returns:
        A one-entry :class:`NBest` (word ids; ``scores`` = ``acoustic + lm_scale * lm``,
        ``components`` ``{"acoustic", "lm"}``), empty when ``lat`` is None or no path survives.
    """
    if lat is None:
        return NBest(tokens=[], scores=[], components={"acoustic": [], "lm": []})
    if lm_scale <= 0:
        raise ValueError(f"whole-lattice rescoring needs lm_scale > 0, got {lm_scale}")
    kf = _kf()
    am = lat.to_fst(weight="acoustic", acoustic_scale=1.0 / lm_scale)
    kf.arcsort(am, sort_type="olabel")
    paths = _linear_paths(kf.shortest_path(kf.compose(am, scorer.G), n=1))
    if not paths:
        return NBest(tokens=[], scores=[], components={"acoustic": [], "lm": []})
    il, ol, cost = paths[0]
    arc_ids = [i - 1 for i in il if i > 0]
    _, a = lat.path_costs(arc_ids)
    words = [w for w in ol if w > 0]
    lm = -(cost - a / lm_scale)
    return NBest(tokens=[words], scores=[-a + lm_scale * lm], components={"acoustic": [-a], "lm": [lm]})
