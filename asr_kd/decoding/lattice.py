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

import torch

from asr_kd.decoding.common import NBest

__all__ = [
    "Lattice",
    "kaldi_get_lattice",
    "lattice_nbest",
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
