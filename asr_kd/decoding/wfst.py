"""WFST decoding of CTC output with kaldifst graphs and kaldi-decoder (CPU; k2 not needed).

Dimension legend (see ``docs/DESIGN.md``): N utterances, T' encoder frames, V vocabulary
(blank must be 0: token ids are used as FST labels, where 0 means epsilon).

Graphs (tropical semiring, weights are costs = -log probabilities):

- H (:func:`build_ctc_topo`): the CTC topology. Input labels are ``token + 1`` (kaldi-decoder's
  ``DecodableCtc`` numbers the columns of the log-probability matrix from 1), output labels the
  non-blank tokens, emitted once per run of repeated frames (standard, ``V * V`` arcs) or once per
  piece of such a run (modified, ``4 V - 3`` arcs, for large vocabularies: ``ctc_topo`` of
  :func:`build_hlg`, ``"auto"`` = modified above :data:`AUTO_MODIFIED_ABOVE` tokens).
- L (:func:`build_lexicon_fst`): token sequences -> words (``word_ids`` from ``words.txt``); the word
  is emitted on the first token of its spelling, state 0 is the start and the only final state.
- G (:func:`build_arpa_fst`): an n-gram LM read from ARPA text: one state per history, backoff
  weights on epsilon arcs to the shorter history, ``</s>`` as the final weight.

:func:`build_hlg` composes them (``H o L`` or ``H o (L o G)``) without determinisation, so no
disambiguation symbols are needed (the Viterbi decoder only needs a correct graph).
:func:`wfst_decode` runs ``FasterDecoder`` on each utterance and returns the output labels
(tokens for H, word ids for HL / HLG) of the best path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from asr_kd.decoding.common import NBest

__all__ = [
    "CTC_TOPOS",
    "AUTO_MODIFIED_ABOVE",
    "resolve_ctc_topo",
    "build_ctc_topo",
    "build_lexicon_fst",
    "build_arpa_fst",
    "build_hlg",
    "build_hlg_from_lang_dir",
    "wfst_decode",
]

_LN10 = math.log(10.0)


def _kaldifst():
    import kaldifst  # noqa: PLC0415  (optional dependency)

    return kaldifst


#: the CTC topologies of :func:`build_ctc_topo` (``ctc_topo`` of :func:`build_hlg`, ``get_hlg``, ...)
CTC_TOPOS = ("standard", "modified", "auto")
#: ``ctc_topo="auto"`` builds the modified topology when the vocabulary (blank included) has more tokens
#: than this, the standard one otherwise: BPE-128 / BPE-500 / character lang dirs keep the standard H (their
#: graphs and results are unchanged), a WordPiece lang dir of 12k tokens gets the modified one
AUTO_MODIFIED_ABOVE = 1000


def resolve_ctc_topo(ctc_topo: str, vocab_size: int) -> str:
    """``"standard"`` or ``"modified"``: ``ctc_topo`` itself, or for ``"auto"`` the modified topology when
    ``vocab_size > AUTO_MODIFIED_ABOVE``. Anything else is a ``ValueError`` naming ``ctc_topo``."""
    if ctc_topo not in CTC_TOPOS:
        raise ValueError(f"ctc_topo must be one of {', '.join(map(repr, CTC_TOPOS))}, got {ctc_topo!r}")
    if ctc_topo == "auto":
        return "modified" if int(vocab_size) > AUTO_MODIFIED_ABOVE else "standard"
    return ctc_topo


def build_ctc_topo(vocab_size: int, modified: bool = False):
    """CTC topology H over tokens ``0..V-1`` (blank 0): input ``token + 1``, output ``token``.

    Both read a frame sequence ``pi = (pi_1, ..., pi_T)`` (each ``0..V-1``) into token sequences
    without weights; they differ in which token sequences a frame sequence can be read as.

    **Standard** (``modified=False``, V states, ``V * V`` arcs): the usual CTC collapse ``B``. State 0
    means "after blank (or at the start)", state ``t`` "after token t". From every state: blank ->
    state 0 (no output); token ``t`` -> state ``t`` with output ``t``, except from state ``t``
    itself, where ``t`` is a repeat (self-loop, no output). All states are final. A frame sequence is
    read as exactly one sequence, ``B(pi)``: merge runs of equal frames, then drop the blanks. So
    ``a a`` is only ``a``; two equal neighbouring tokens need a blank between them (``a _ a`` is
    ``a a``), and a sequence of U tokens with R equal neighbours needs ``T >= U + R`` frames.

    **Modified** (``modified=True``, V states, ``4 V - 3`` arcs; k2's ``ctc_topo(V - 1, modified=True)``):
    state 0 (start, the only final state) has a blank self-loop and, per token ``t``, a self-loop
    ``t:t`` and an arc ``t:t`` to state ``t``; state ``t`` has a self-loop ``t:<eps>`` and an arc
    ``t:<eps>`` back to state 0. Every token emission reads one non-empty run of frames ``t`` (one
    frame: the self-loop of state 0; ``k >= 2`` frames: into state ``t``, ``k - 2`` self-loops, back),
    with no blank inside it. A frame sequence is read as every sequence obtained by cutting each
    maximal run of a token ``t`` in ``pi`` (``n`` equal frames between blanks or other tokens) into
    ``m`` non-empty pieces, ``1 <= m <= n``, each piece one ``t``, blanks giving nothing. So:

    - ``B(pi)`` is always among the readings (one piece per run): the standard language is a subset;
    - a repeated token needs no blank: ``a a`` is read as ``a`` *and* as ``a a``; ``a a a`` as ``a``,
      ``a a`` and ``a a a``; a sequence of U tokens needs only ``T >= U`` frames;
    - a blank still separates: ``a _ a`` is only ``a a`` (never ``a``), and different tokens
      ``a b`` are only ``a b``;
    - one reading may come from several paths (``a a a`` as ``a a``: pieces 1+2 or 2+1), harmless to
      the Viterbi (tropical) search of :func:`wfst_decode`.

    With a lexicon (``H o L``) the two give the same best word sequence and score whenever no word
    sequence of L spells two equal neighbouring tokens (inside a word or across a word boundary): a
    reading that cuts a run in two then spells no word sequence. Where L has such spellings the
    modified graph can align them with no blank between, and H alone (``ctc-decoding``) has no way to
    choose between ``a`` and ``a a`` for frames ``a a`` (equal cost: ties). The standard topology is the
    CTC loss's; the modified one exists for large vocabularies, where the standard one's ``V * V``
    arcs (146M for 12k WordPiece tokens) do not fit.
    """
    kf = _kaldifst()
    V = int(vocab_size)
    if V < 1:
        raise ValueError(f"vocab_size must be >= 1 (blank included), got {vocab_size}")
    H = kf.StdVectorFst()
    for _ in range(V):
        H.add_state()
    H.start = 0
    if modified:
        H.set_final(0, 0.0)
        H.add_arc(0, kf.StdArc(1, 0, 0.0, 0))  # blank
        for t in range(1, V):
            H.add_arc(0, kf.StdArc(t + 1, t, 0.0, 0))  # a one-frame run of t
            H.add_arc(0, kf.StdArc(t + 1, t, 0.0, t))  # the first frame of a longer run
            H.add_arc(t, kf.StdArc(t + 1, 0, 0.0, t))  # its middle frames
            H.add_arc(t, kf.StdArc(t + 1, 0, 0.0, 0))  # its last frame
        return H
    for s in range(V):
        H.set_final(s, 0.0)
        H.add_arc(s, kf.StdArc(1, 0, 0.0, 0))  # blank
        for t in range(1, V):
            H.add_arc(s, kf.StdArc(t + 1, 0 if t == s else t, 0.0, t))
    return H


def build_lexicon_fst(lexicon: Iterable[tuple[str, Sequence[int]]], word_ids: Mapping[str, int]):
    """Lexicon L: token ids -> word ids, closed under concatenation.

    Args:
        lexicon: ``(word, token ids)`` pairs (a word may appear more than once); words missing
            from ``word_ids`` and empty spellings are skipped.
        word_ids: word -> id (``words.txt``; 0 is epsilon).
    """
    kf = _kaldifst()
    L = kf.StdVectorFst()
    L.add_state()
    L.start = 0
    L.set_final(0, 0.0)
    for word, tokens in lexicon:
        if word not in word_ids or not tokens:
            continue
        src = 0
        for i, tok in enumerate(tokens):
            if tok <= 0:
                raise ValueError(f"lexicon entry {word!r} has token id {tok} (blank/epsilon)")
            dst = 0 if i == len(tokens) - 1 else L.add_state()
            L.add_arc(src, kf.StdArc(int(tok), word_ids[word] if i == 0 else 0, 0.0, dst))
            src = dst
    return L


def _parse_arpa(text: str, path: str = "<text>") -> tuple[int, dict[tuple, tuple[float, float]]]:
    """ARPA text -> (order, {ngram tuple: (log10 prob, log10 backoff)}), validated by
    :func:`asr_kd.lm.arpa.parse_arpa_text` (a malformed line raises ``ArpaFormatError`` naming
    ``path`` and the line)."""
    from asr_kd.lm.arpa import parse_arpa_text  # noqa: PLC0415

    lm = parse_arpa_text(text, path)
    grams = {g: (p, lm.backoffs.get(g, 0.0)) for probs in lm.probs for g, p in probs.items()}
    return lm.order, grams


def build_arpa_fst(arpa: str | Path, word_ids: Mapping[str, int], *, lm_scale: float = 1.0):
    """Grammar G (an acceptor over word ids) from an ARPA n-gram LM.

    States are the LM histories (``<s>`` starts; the empty history is the unigram state). The
    n-gram ``h w`` is an arc from ``h`` labelled ``w`` with cost ``-lm_scale * ln p(w | h)`` to the
    longest suffix of ``h w`` that is a history; each history has an epsilon arc with its backoff
    cost to its suffix; ``p(</s> | h)`` is the final weight of ``h`` (only explicit ``</s>``
    n-grams: a history without one ends through its backoff arc). N-grams with words missing from
    ``word_ids`` are dropped.

    Args:
        arpa: path of an ARPA file, or the ARPA text itself (if it contains a newline).
        word_ids: word -> id (``words.txt``).
        lm_scale: multiplies every LM cost.
    """
    kf = _kaldifst()
    if "\n" in str(arpa):
        order, grams = _parse_arpa(str(arpa))
    else:
        order, grams = _parse_arpa(Path(arpa).read_text(encoding="utf-8"), str(arpa))
    special = {"<s>", "</s>"}

    def known(words: tuple) -> bool:
        return all(w in word_ids or w in special for w in words)

    histories = {g for g in grams if len(g) < order and known(g) and g[-1] != "</s>"}
    histories.add(())
    G = kf.StdVectorFst()
    state: dict[tuple, int] = {}
    for h in sorted(histories, key=lambda h: (len(h), h)):
        state[h] = G.add_state()
    G.start = state[("<s>",)] if ("<s>",) in state else state[()]

    def longest_suffix(words: tuple) -> int:
        for i in range(len(words) + 1):
            if words[i:] in state:
                return state[words[i:]]
        return state[()]

    def cost(log10p: float) -> float:
        return -lm_scale * log10p * _LN10

    for g, (logp, _) in grams.items():
        if not known(g):
            continue
        h, w = g[:-1], g[-1]
        if h not in state:
            continue
        if w == "</s>":
            G.set_final(state[h], cost(logp))
        elif w != "<s>":
            G.add_arc(state[h], kf.StdArc(word_ids[w], word_ids[w], cost(logp), longest_suffix(g)))
    for h, s in state.items():
        if h:
            bo = grams.get(h, (0.0, 0.0))[1]
            G.add_arc(s, kf.StdArc(0, 0, cost(bo), longest_suffix(h[1:])))
    return G


def build_hlg(
    vocab_size: int,
    lexicon: Iterable[tuple[str, Sequence[int]]] | None = None,
    word_ids: Mapping[str, int] | None = None,
    arpa: str | Path | None = None,
    *,
    lm_scale: float = 1.0,
    ctc_topo: str = "auto",
):
    """H (no lexicon), ``H o L`` (lexicon) or ``H o L o G`` (lexicon and ARPA), arc-sorted.

    ``ctc_topo``: ``"standard"``, ``"modified"`` (see :func:`build_ctc_topo` for what each accepts) or
    ``"auto"`` (modified when ``vocab_size > AUTO_MODIFIED_ABOVE``, see :func:`resolve_ctc_topo`).
    """
    kf = _kaldifst()
    H = build_ctc_topo(vocab_size, modified=resolve_ctc_topo(ctc_topo, vocab_size) == "modified")
    if lexicon is None:
        kf.arcsort(H, sort_type="ilabel")
        return H
    if word_ids is None:
        raise ValueError("word_ids is needed with a lexicon")
    L = build_lexicon_fst(lexicon, word_ids)
    if arpa is not None:
        G = build_arpa_fst(arpa, word_ids, lm_scale=lm_scale)
        kf.arcsort(L, sort_type="olabel")
        kf.arcsort(G, sort_type="ilabel")
        L = kf.compose(L, G)
    kf.arcsort(H, sort_type="olabel")
    kf.arcsort(L, sort_type="ilabel")
    HLG = kf.compose(H, L)
    kf.arcsort(HLG, sort_type="ilabel")
    return HLG


def build_hlg_from_lang_dir(lang_dir: str | Path, arpa=None, *, lm_scale: float = 1.0, ctc_topo: str = "auto"):
    """:func:`build_hlg` from a lang directory (``tokens.txt``, ``words.txt``, ``lexicon.txt``).

    Returns ``(graph, id_to_word)``.
    """
    from asr_kd.data.tokenizer import read_lexicon, read_symbol_table  # noqa: PLC0415

    lang_dir = Path(lang_dir)
    tokens = read_symbol_table(lang_dir / "tokens.txt")
    words = read_symbol_table(lang_dir / "words.txt")
    lexicon = [
        (w, [tokens[p] for p in pieces])
        for w, pieces in read_lexicon(lang_dir / "lexicon.txt").items()
        if all(p in tokens for p in pieces)
    ]
    graph = build_hlg(len(tokens), lexicon, words, arpa, lm_scale=lm_scale, ctc_topo=ctc_topo)
    return graph, {i: w for w, i in words.items()}


def wfst_decode(
    graph,
    log_probs: torch.Tensor,
    lens: torch.Tensor,
    *,
    beam: float = 16.0,
    max_active: int = 10000,
    min_active: int = 20,
    acoustic_scale: float = 1.0,
) -> list[NBest]:
    """Viterbi decoding of CTC log posteriors with a kaldifst graph (one utterance at a time).

    Args:
        graph: from :func:`build_hlg` (any StdFst whose input labels are ``token + 1``).
        log_probs: ``(N, T', V)`` CTC log posteriors.
        lens: ``(N,)`` valid frames.
        beam, max_active, min_active: ``kaldi_decoder.FasterDecoderOptions``.
        acoustic_scale: multiplies the log posteriors.

    Returns:
        N single-entry :class:`NBest` (an empty one when no final state was reached) with the
        output labels of the best path, ``scores`` = -(graph cost + acoustic cost) and
        ``components`` ``{"graph": [-graph cost], "acoustic": [-acoustic cost]}``.
    """
    import kaldi_decoder  # noqa: PLC0415

    kf = _kaldifst()
    opts = kaldi_decoder.FasterDecoderOptions(beam=beam, max_active=max_active, min_active=min_active)
    decoder = kaldi_decoder.FasterDecoder(graph, opts)
    lp = (log_probs.detach().float().cpu() * acoustic_scale).numpy()
    out = []
    for n, T in enumerate(lens.tolist()):
        if T == 0:
            empty = {"graph": [0.0], "acoustic": [0.0]}
            out.append(NBest(tokens=[[]], scores=[0.0], components=empty))
            continue
        decodable = kaldi_decoder.DecodableCtc(lp[n, :T].copy())
        decoder.decode(decodable)
        if not decoder.reached_final():
            out.append(NBest(tokens=[], scores=[]))
            continue
        ok, best = decoder.get_best_path()
        ok2, _, olabels, weight = kf.get_linear_symbol_sequence(best)
        if not (ok and ok2):
            out.append(NBest(tokens=[], scores=[]))
            continue
        g, a = float(weight.value1), float(weight.value2)
        out.append(
            NBest(
                tokens=[list(olabels)],
                scores=[-(g + a)],
                components={"graph": [-g], "acoustic": [-a]},
            )
        )
    return out
