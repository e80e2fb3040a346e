"""k2 one-best decoding of CTC output on a kaldifst decoding graph (H, HL, HLG, TLG, ...).

The k2 counterpart of :func:`asr_kd.decoding.wfst.wfst_decode` (kaldi-decoder, CPU): the same graph
and log-probs give the same words and, up to float rounding, the same scores
(``tests/decoding/test_k2_graph.py`` checks both). k2 is imported lazily, inside the functions:
importing this module never needs k2, and every path here has the kaldi-decoder equivalent.

Conventions (those of :mod:`asr_kd.decoding.wfst`): a kaldifst graph (tropical semiring, weights are
costs) has input labels ``token + 1`` (0 is epsilon; kaldi-decoder's ``DecodableCtc`` numbers the
columns of the log-probability matrix from 1) and output labels word ids (0 = no output). In k2 a
decoding graph's labels are the CTC columns themselves (0 = blank, a real symbol, not epsilon) and
``-1`` marks the arcs into its single final state; scores are log-probabilities (``-cost``).

:func:`k2_graph_from_kaldifst` converts one into the other:

1. ``k2.Fsa.from_openfst`` on the graph's text form (it negates the costs, renumbers the start state
   to 0 and adds the super-final state with ``-1`` arcs carrying the final weights);
2. if any input label is epsilon (e.g. the backoff arcs of an un-optimised ``H o L o G``),
   ``k2.remove_epsilon`` (tropical semiring: every best path and its score are kept; the aux labels
   become ragged where epsilon arcs carried words);
3. labels ``token + 1 -> token`` and ``k2.arc_sort``.

:func:`k2_one_best` runs ``k2.intersect_dense_pruned`` (icefall's ``get_lattice``; or the exhaustive
``k2.intersect_dense`` with ``pruned=False``) and ``k2.shortest_path``, and returns the word ids,
the total score and its graph / acoustic parts, in :func:`~asr_kd.decoding.wfst.wfst_decode`'s
:class:`~asr_kd.decoding.common.NBest` layout.

How part D's HLG plugs in: ``HLG = H o det(L o G)`` with the disambiguation symbols and eps:eps
arcs removed (:func:`asr_kd.decoding.hlg.compile_HLG` / ``get_hlg``, cached in the lang dir as a
kaldifst file) is a kaldifst graph in this same convention (H is
:func:`~asr_kd.decoding.wfst.build_ctc_topo`, input labels ``token + 1``), so
``k2_one_best(k2_graph_from_kaldifst(HLG), log_probs, lens)`` decodes it with no other change, and
``wfst_decode(HLG, log_probs, lens)`` is its k2-free equivalent. Either CTC topology of
``build_ctc_topo`` (``get_hlg(..., ctc_topo=...)``) converts the same way: neither has epsilon inputs, and
converted alone each has exactly the arcs of ``k2.ctc_topo(V - 1, modified=...)``, so no k2-built H is needed.
Any arc whose input became epsilon while keeping a word (a disambiguation symbol turned into
epsilon after determinisation) goes through step 2, its word moving onto the neighbouring arcs'
ragged aux labels. A graph built directly with k2 (icefall's ``compile_HLG``: labels already
tokens with blank 0, no epsilons) skips the conversion: pass it to :func:`k2_one_best` as it is
(icefall caches such graphs with ``graph.as_dict()`` / ``k2.Fsa.from_dict``).
"""

from __future__ import annotations

import torch

from asr_kd.decoding.common import NBest

__all__ = [
    "k2_graph_from_kaldifst",
    "k2_one_best",
    "k2_get_lattice",
    "k2_lattices_to_lattices",
    "k2_sample_word_sequences",
    "k2_grammar_from_kaldifst",
    "k2_whole_lattice_rescore",
]


def _k2():
    try:
        import k2  # noqa: PLC0415  (optional dependency)
    except Exception as e:  # ImportError, or a k2 built against another torch
        raise ImportError(
            f"k2 decoding needs k2 ({e}); install it (README: Optional: k2) or use "
            "asr_kd.decoding.wfst.wfst_decode (kaldi-decoder) on the same graph"
        ) from e
    return k2


def k2_graph_from_kaldifst(fst):
    """A kaldifst decoding graph (input labels ``token + 1``, outputs word ids) as a k2 ``Fsa``.

    Returns an arc-sorted k2 transducer on CPU whose ``labels`` are CTC columns (0 = blank) and whose
    ``aux_labels`` are the graph's output labels (a tensor, or a ragged tensor after epsilon removal).
    The graph's own arc scores are also kept as the attribute ``graph_scores``, so that the decoded
    path's graph score can be told from its acoustic score.
    """
    k2 = _k2()
    graph = k2.Fsa.from_openfst(fst.to_str(show_weight_one=True), acceptor=False)
    if bool((graph.labels == 0).any()):
        graph = k2.remove_epsilon(graph)
    labels = graph.labels.clone()
    labels[labels > 0] -= 1
    graph.labels = labels
    graph.__dict__["_properties"] = None  # labels changed: let k2 recompute arc-sortedness
    graph = k2.arc_sort(graph)
    graph.graph_scores = graph.scores.detach().clone()
    return graph


def _aux_of_path(path) -> list[int]:
    aux = path.aux_labels
    if isinstance(aux, torch.Tensor):
        vals = aux.tolist()
    else:  # ragged (after remove_epsilon): concatenate the arcs' label lists
        vals = aux.values.tolist()
    return [int(v) for v in vals if v > 0]


def k2_one_best(
    graph,
    log_probs: torch.Tensor,
    lens: torch.Tensor,
    *,
    search_beam: float = 20.0,
    output_beam: float = 8.0,
    min_active_states: int = 30,
    max_active_states: int = 10000,
    acoustic_scale: float = 1.0,
    pruned: bool = True,
) -> list[NBest]:
    """One-best decoding of CTC log posteriors with a k2 decoding graph.

    Args:
        graph: a k2 ``Fsa`` whose labels are CTC columns (0 = blank), e.g. from
            :func:`k2_graph_from_kaldifst`; its ``aux_labels`` are the output (word) ids.
        log_probs: ``(N, T', V)`` CTC log posteriors.
        lens: ``(N,)`` valid frames.
        search_beam, output_beam, min_active_states, max_active_states:
            ``k2.intersect_dense_pruned`` options (icefall's ``get_lattice`` defaults, except
            ``output_beam``, unused by the one best path); with ``pruned=False`` the exhaustive
            ``k2.intersect_dense`` runs instead, with ``output_beam`` only (it copies the graph once
            per utterance: small graphs only).
        acoustic_scale: multiplies the log posteriors (as in ``wfst_decode``).

    Returns:
        N single-entry :class:`NBest` (an empty one when no path reaches the final state) with the
        output labels of the best path, ``scores`` = its total log score (graph + acoustic, the
        ``-(graph cost + acoustic cost)`` of ``wfst_decode``), ``components`` ``{"graph": [..],
        "acoustic": [..]}``. Utterances with 0 frames give ``[[]]`` with score 0.
    """
    k2 = _k2()
    n = log_probs.size(0)
    out: list[NBest | None] = [None] * n
    for i in range(n):
        if int(lens[i]) == 0:
            out[i] = NBest(tokens=[[]], scores=[0.0], components={"graph": [0.0], "acoustic": [0.0]})
    lattice, order = k2_get_lattice(
        graph,
        log_probs,
        lens,
        search_beam=search_beam,
        output_beam=output_beam,
        min_active_states=min_active_states,
        max_active_states=max_active_states,
        acoustic_scale=acoustic_scale,
        pruned=pruned,
    )
    if order:
        best = k2.shortest_path(lattice, use_double_scores=True)
        totals = best.get_tot_scores(use_double_scores=True, log_semiring=False).tolist()
        has_graph_scores = hasattr(best, "graph_scores")
        for j, utt in enumerate(order):
            path = best[j]
            if path.num_arcs == 0:  # no final state reached within the beams
                out[utt] = NBest(tokens=[], scores=[])
                continue
            total = float(totals[j])
            g = float(path.graph_scores.double().sum()) if has_graph_scores else float("nan")
            out[utt] = NBest(
                tokens=[_aux_of_path(path)],
                scores=[total],
                components={"graph": [g], "acoustic": [total - g]},
            )
    return out  # type: ignore[return-value]


def k2_get_lattice(
    graph,
    log_probs: torch.Tensor,
    lens: torch.Tensor,
    *,
    search_beam: float = 20.0,
    output_beam: float = 8.0,
    min_active_states: int = 30,
    max_active_states: int = 10000,
    acoustic_scale: float = 1.0,
    pruned: bool = True,
):
    """The decoding lattices of CTC log posteriors on a k2 graph (icefall's ``get_lattice``).

    Args: as :func:`k2_one_best` (``output_beam`` is the lattice beam).

    Returns:
        ``(lattice, order)``: a k2 ``FsaVec`` (labels CTC columns, ``aux_labels`` word ids, scores graph +
        acoustic, the graph's ``graph_scores`` carried onto its arcs) and ``order``, the utterance index of
        each of its FSAs (utterances of 0 frames are left out; the rest by decreasing length, as k2
        wants). ``(None, [])`` when every utterance is empty.
    """
    k2 = _k2()
    lens = lens.to("cpu", torch.int64)
    keep = [i for i in range(log_probs.size(0)) if int(lens[i]) > 0]
    if not keep:
        return None, []
    lp = (log_probs.detach().float() * acoustic_scale).to(graph.device)
    idx = torch.tensor(keep, dtype=torch.int64)
    order = idx[torch.argsort(lens[idx], descending=True, stable=True)]
    segments = torch.stack(
        [order.to(torch.int32), torch.zeros(len(order), dtype=torch.int32), lens[order].to(torch.int32)], dim=1
    )
    dense = k2.DenseFsaVec(lp, segments)
    if pruned:
        lattice = k2.intersect_dense_pruned(
            graph,
            dense,
            search_beam=search_beam,
            output_beam=output_beam,
            min_active_states=min_active_states,
            max_active_states=max_active_states,
        )
    else:
        # one copy of the graph per utterance (meant for small graphs: tests, cross-checks)
        lattice = k2.intersect_dense(k2.create_fsa_vec([graph] * len(order)), dense, output_beam=output_beam)
    return lattice, order.tolist()


def k2_lattices_to_lattices(lattice, order: list[int], num_utts: int) -> list:
    """A k2 lattice of :func:`k2_get_lattice` as N :class:`asr_kd.decoding.lattice.Lattice` (for the k2-free
    n-best and rescoring): input labels ``token + 1``, one word per arc (an arc with several words becomes
    a chain, the words after the first on epsilon-input arcs), costs ``-score`` split by ``graph_scores``; a
    ``-1`` arc into k2's final state becomes its source's final weight, or, when it carries words (moved
    there by ``k2.remove_epsilon``), an epsilon-input chain of them into a new final state. Utterances
    missing from ``order`` (0 frames) give the one-state lattice of the empty sequence."""
    from asr_kd.decoding.lattice import Lattice  # noqa: PLC0415

    out = [Lattice(1, 0, [], {0: (0.0, 0.0)}) for _ in range(num_utts)]
    for j, utt in enumerate(order):
        fsa = lattice[j]
        arcs = fsa.arcs.values()[:, :3].tolist()
        scores = fsa.scores.detach().double().tolist()
        graph = fsa.graph_scores.detach().double().tolist() if hasattr(fsa, "graph_scores") else [0.0] * len(arcs)
        aux = fsa.aux_labels
        words = [[int(w)] for w in aux.tolist()] if isinstance(aux, torch.Tensor) else aux.tolist()
        lat = Lattice(max([1] + [max(a[0], a[1]) + 1 for a in arcs]), 0)
        for (src, dst, label), sc, g, ws in zip(arcs, scores, graph, words):
            gc, ac = -g, -(sc - g)
            ws = [w for w in ws if w > 0]
            if label == -1 and not ws:
                lat.finals[src] = (gc, ac)
                continue
            chain = ws or [0]
            first_label = 0 if label == -1 else label + 1
            for k, w in enumerate(chain):
                last = k == len(chain) - 1
                nxt = dst if (last and label != -1) else lat.num_states
                if nxt == lat.num_states:
                    lat.num_states += 1
                head = k == 0  # the first arc of the chain: the k2 arc's label and costs
                lat.arcs.append((src, nxt, first_label if head else 0, w, gc if head else 0.0, ac if head else 0.0))
                src = nxt
            if label == -1:
                lat.finals[src] = (0.0, 0.0)
        out[utt] = lat
    return out


def k2_sample_word_sequences(
    lattice, order: list[int], num_utts: int, num_paths: int, nbest_scale: float = 0.5
) -> list[list[tuple[int, ...]]]:
    """The word sequences of ``num_paths`` paths of each lattice of :func:`k2_get_lattice`, drawn by
    ``k2.random_paths`` after the scores are multiplied by ``nbest_scale`` (icefall's n-best sampling;
    ``lattice`` itself is left as it is).

    k2's ``random_paths`` has no seed: it places the paths at evenly spaced points of the path posterior
    (like arithmetic coding), so a lattice always gives the same paths, in probability proportion.

    Returns:
        N lists of word-id tuples, in drawing order (duplicates kept; :func:`asr_kd.decoding.lattice.
        lattice_nbest_sampled` takes them as its ``samples``); ``[]`` for the utterances missing from
        ``order`` (0 frames) and where no path survives.
    """
    k2 = _k2()
    if nbest_scale <= 0:
        raise ValueError(f"nbest_scale must be > 0, got {nbest_scale}")
    out: list[list[tuple[int, ...]]] = [[] for _ in range(num_utts)]
    if not order or num_paths <= 0:
        return out
    scaled = lattice.clone()
    scaled.scores = lattice.scores.detach() * nbest_scale
    paths = k2.random_paths(scaled, use_double_scores=True, num_paths=int(num_paths)).tolist()
    aux = lattice.aux_labels
    words = [[int(w)] for w in aux.tolist()] if isinstance(aux, torch.Tensor) else aux.tolist()
    for j, utt in enumerate(order):  # arc ids are indices into the whole FsaVec's arcs
        out[utt] = [tuple(w for a in p for w in words[a] if w > 0) for p in paths[j]]
    return out


def k2_grammar_from_kaldifst(G):
    """A kaldifst grammar (an acceptor over word ids, backoffs on epsilon arcs, e.g.
    :class:`asr_kd.decoding.lattice.NgramScorer`'s ``G``) as an arc-sorted k2 ``Fsa`` (aux labels = labels)
    with its scores also kept as ``lm_scores``."""
    k2 = _k2()
    g = k2.arc_sort(k2.Fsa.from_openfst(G.to_str(show_weight_one=True), acceptor=False))
    g.lm_scores = g.scores.detach().clone()
    return g


def k2_whole_lattice_rescore(lattice, order: list[int], num_utts: int, G, lm_scale: float = 1.0) -> list[NBest]:
    """Whole-lattice rescoring with k2: each lattice's graph scores are removed (acoustic scores kept),
    it is composed with the grammar ``G`` (:func:`k2_grammar_from_kaldifst`; ``k2.compose`` with
    ``treat_epsilons_specially``, so G's backoff epsilons are followed exactly, CPU only), and the best path
    of ``acoustic + lm_scale * lm`` is taken.

    Returns:
        N one-entry :class:`NBest` (word ids, ``scores``, ``components`` ``{"acoustic", "lm"}``), as
        :func:`asr_kd.decoding.lattice.whole_lattice_rescore`; ``[[]]`` for 0-frame utterances, empty where
        no path survives.
    """
    k2 = _k2()
    out = [NBest(tokens=[[]], scores=[0.0], components={"acoustic": [0.0], "lm": [0.0]}) for _ in range(num_utts)]
    for j, utt in enumerate(order):
        lat = lattice[j]
        lat.scores = lat.scores - lat.graph_scores
        inv = k2.arc_sort(k2.invert(lat))
        res = k2.top_sort(k2.connect(k2.compose(G, inv, treat_epsilons_specially=True)))
        if res.num_arcs == 0:
            out[utt] = NBest(tokens=[], scores=[], components={"acoustic": [], "lm": []})
            continue
        lm = res.lm_scores.detach().clone()
        res.scores = (res.scores - lm) + lm_scale * lm
        best = k2.shortest_path(k2.create_fsa_vec([res]), use_double_scores=True)[0]
        words = [int(w) for w in best.labels.tolist() if w > 0]
        lm_part = float(best.lm_scores.double().sum())
        total = float(best.scores.double().sum())
        out[utt] = NBest(
            tokens=[words], scores=[total], components={"acoustic": [total - lm_scale * lm_part], "lm": [lm_part]}
        )
    return out
