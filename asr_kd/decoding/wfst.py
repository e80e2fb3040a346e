"""WFST decoding of CTC output with kaldifst graphs and kaldi-decoder (CPU; k2 not needed).

Dimension legend (see ``docs/DESIGN.md``): N utterances, T' encoder frames, V vocabulary
(blank must be 0: token ids are used as FST labels, where 0 means epsilon).

Graphs (tropical semiring, weights are costs = -log probabilities):

- H (:func:`build_ctc_topo`): the CTC topology. Input labels are ``token + 1`` (kaldi-decoder's
  ``DecodableCtc`` numbers the columns of the log-probability matrix from 1), output labels the
  non-blank tokens, emitted once per run of repeated frames. Every state is final.
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


def build_ctc_topo(vocab_size: int):
    """CTC topology H over tokens ``0..V-1`` (blank 0): input ``token + 1``, output ``token``.

    State 0 means "after blank (or at the start)", state ``t`` "after token t". From every state:
    blank -> state 0 (no output); token ``t`` -> state ``t`` with output ``t``, except from state
    ``t`` itself, where ``t`` is a repeat (self-loop, no output). All states are final.
    """
    kf = _kaldifst()
    H = kf.StdVectorFst()
    for _ in range(vocab_size):
        H.add_state()
    H.start = 0
    for s in range(vocab_size):
        H.set_final(s, 0.0)
        H.add_arc(s, kf.StdArc(1, 0, 0.0, 0))  # blank
        for t in range(1, vocab_size):
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
):
    """H (no lexicon), ``H o L`` (lexicon) or ``H o L o G`` (lexicon and ARPA), arc-sorted."""
    kf = _kaldifst()
    H = build_ctc_topo(vocab_size)
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


def build_hlg_from_lang_dir(lang_dir: str | Path, arpa=None, *, lm_scale: float = 1.0):
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
    graph = build_hlg(len(tokens), lexicon, words, arpa, lm_scale=lm_scale)
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
