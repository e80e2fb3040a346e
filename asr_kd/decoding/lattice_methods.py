"""icefall's CTC lattice decoding methods, registered in :mod:`asr_kd.decoding.search`.

====================================  ================================================================
name                                  what it does (graph: the cached HL / HLG of ``opts.lang_dir`` /
                                      ``opts.arpa``, :func:`asr_kd.decoding.hlg.get_hlg`)
====================================  ================================================================
``1best``                             icefall's name of ``ctc-hlg``: the best path of HLG (kaldi-decoder)
``ctc-decoding``                      the best path of H alone (the CTC topology): token ids
``nbest``                             the lattice's n-best of distinct word sequences (``opts.nbest_mode``,
                                      below), best total score first
``nbest-rescoring``                   that n-best with the graph (first-pass LM) score replaced by
                                      ``opts.rescore_lm_scale * ln p`` of ``opts.rescore_arpa`` (e.g. the
                                      4-gram), re-ranked
``whole-lattice-rescoring``           the whole lattice's acoustic scores composed with the
                                      ``opts.rescore_arpa`` grammar, its best path
``attention-decoder-rescoring-with-   the n-best (word sequences spelled in tokens) rescored with
ngram``                               ``acoustic + ngram + opts.attention_scale * log p_att``; the n-gram
                                      score is the graph's, or ``rescore_arpa``'s when set
====================================  ================================================================

The lattice comes from kaldi-decoder's ``LatticeSimpleDecoder`` (``opts.lattice_backend="kaldi"``, the
default; :func:`asr_kd.decoding.lattice.kaldi_get_lattice`) or from k2 (``"k2"``: icefall's ``get_lattice``,
:func:`asr_kd.decoding.k2_graph.k2_get_lattice`, converted by ``k2_lattices_to_lattices``; ``"auto"``: k2 when
it imports); the n-best and n-best rescoring are kaldifst operations on either. Whole-lattice rescoring
composes the kaldi-decoder lattice with G by OpenFst, the k2 one by ``k2.compose``. The n-best methods return
:class:`~asr_kd.decoding.common.NBest` of **word ids**; :func:`~asr_kd.decoding.search.decode_nbest` spells
them in tokens (:meth:`LatticeState.words_to_tokens`) so they can be sequence-level KD targets.

The n-best (``nbest``, ``nbest-rescoring``, ``attention-decoder-rescoring-with-ngram``) has two modes:

- ``opts.nbest_mode="sampled"`` (the default, icefall's n-best: what a user of its ``--method nbest-rescoring``
  gets, with its defaults ``num_paths=100``, ``nbest_scale=0.5``): the lattice's best path plus
  ``num_paths - 1`` paths drawn from its posterior with scores scaled by ``opts.nbest_scale``, their distinct
  word sequences (:func:`~asr_kd.decoding.lattice.lattice_nbest_sampled`). On kaldi-decoder lattices the
  draws are numpy's, seeded by ``opts.nbest_seed`` per lattice; on k2 lattices ``k2.random_paths``
  (deterministic, no seed; :func:`~asr_kd.decoding.k2_graph.k2_sample_word_sequences`). Unlike icefall's, the
  list always holds the 1-best, so ``nbest`` gives the 1-best and rescoring can only add candidates to it.
- ``"exact"``: the ``num_paths`` best distinct word sequences (:func:`~asr_kd.decoding.lattice.lattice_nbest`),
  a superset of the sampled list with the same ``num_paths`` (the KD n-best teachers use it: K hypotheses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr_kd.decoding.common import NBest, best_paths
from asr_kd.decoding.search import (
    CtcHlg,
    DecodingMethod,
    HlgGraph,
    _file_key,
    register_decoding_method,
)

__all__ = ["OneBest", "CtcDecoding", "LatticeState", "NbestDecoding", "NbestRescoring", "WholeLatticeRescoring"]


@register_decoding_method("1best", requires=("ctc",), output="words")
class OneBest(CtcHlg):
    """icefall's ``1best``: the same search as ``ctc-hlg`` (see :class:`~asr_kd.decoding.search.CtcHlg`)."""


@register_decoding_method("ctc-decoding", requires=("ctc",))
class CtcDecoding(CtcHlg):
    """icefall's ``ctc-decoding``: the best path of the CTC topology H (kaldi-decoder), token ids.

    Equal to CTC greedy search (H has no weights) with the standard topology; ``opts.blank_penalty``
    applies. With the modified topology (``opts.ctc_topo``; ``"auto"`` above 1000 tokens) a run of equal
    frames ``a a`` is read as ``a`` or ``a a`` at equal cost, so the decoder's tie-break picks one: the
    result may then differ from greedy search on such runs.
    """

    output = "tokens"

    def cache_key(self, opts, resources):
        return None  # H depends on the model's vocabulary only: kept per size in prepare

    def prepare(self, model, opts, resources):
        from asr_kd.decoding.wfst import build_hlg, resolve_ctc_topo  # noqa: PLC0415

        v = int(model.vocab_size)
        key = (v, resolve_ctc_topo(opts.ctc_topo, v))
        if key not in self._cache:
            self._cache[key] = HlgGraph(build_hlg(v, ctc_topo=key[1]), {}, v, "H")
        return self._cache[key]

    def words(self, hyps, tokenizer, state):
        return [tokenizer.decode(list(h)).split() for h in hyps]

    suffix_options = ("ctc_layer", "blank_penalty")

    def suffix(self, opts):
        base = DecodingMethod.suffix(self, opts)
        return base if opts.ctc_topo == "auto" else f"{base}_topo-{opts.ctc_topo}"


@dataclass
class LatticeState(HlgGraph):
    """The prepared state of the lattice methods: the graph of :class:`HlgGraph` plus

    Attributes:
        k2_graph: the graph as a k2 ``Fsa`` (k2 backend) or None.
        rescorer: :class:`~asr_kd.decoding.lattice.NgramScorer` of ``opts.rescore_arpa`` or None.
        k2_grammar: its G as a k2 ``Fsa`` (k2 whole-lattice rescoring) or None.
        spellings: word id -> token ids (the lang dir's lexicon).
        tokenizer: the lang dir's BPE (``bpe.model``) when present, else None.
    """

    k2_graph: Any = None
    rescorer: Any = None
    k2_grammar: Any = None
    spellings: Any = None
    tokenizer: Any = None

    def words_to_tokens(self, word_ids: Sequence[int]) -> list[int]:
        """A word-id sequence in model tokens: each word's BPE encoding when the lang dir has a
        ``bpe.model`` (SentencePiece pieces do not cross spaces: the encoding of the sentence), its lexicon
        spelling otherwise and for words the BPE cannot spell (e.g. ``<UNK>``)."""
        return [t for i in word_ids for t in self._spell(i)]

    def _spell(self, word_id: int) -> list[int]:
        cache = self.__dict__.setdefault("_spelled", {})
        if word_id not in cache:
            spelled = None
            if self.tokenizer is not None:
                from asr_kd.data.tokenizer import UntokenizableError  # noqa: PLC0415

                try:
                    spelled = list(self.tokenizer.encode(self.id_to_word[word_id]))
                except UntokenizableError:
                    spelled = None
            cache[word_id] = spelled if spelled is not None else list(self.spellings[word_id])
        return cache[word_id]


def _k2_available() -> bool:
    try:
        import k2  # noqa: F401, PLC0415
    except Exception:
        return False
    return True


NBEST_MODES = ("sampled", "exact")


def _nbest_mode(opts) -> str:
    """``opts.nbest_mode``, checked with ``opts.num_paths`` and ``opts.nbest_scale``."""
    if opts.nbest_mode not in NBEST_MODES:
        raise ValueError(f"SearchOptions.nbest_mode must be one of {NBEST_MODES}, got {opts.nbest_mode!r}")
    if int(opts.num_paths) < 1:
        raise ValueError(f"SearchOptions.num_paths must be >= 1, got {opts.num_paths}")
    if opts.nbest_mode == "sampled" and not opts.nbest_scale > 0:
        raise ValueError(f"SearchOptions.nbest_scale must be > 0, got {opts.nbest_scale}")
    return opts.nbest_mode


def _backend(opts) -> str:
    b = opts.lattice_backend
    if b not in ("auto", "kaldi", "k2"):
        raise ValueError(f"SearchOptions.lattice_backend must be 'auto', 'kaldi' or 'k2', got {b!r}")
    if b == "auto":
        return "k2" if _k2_available() else "kaldi"
    return b


class _LatticeMethod(CtcHlg):
    """Shared by the lattice methods: prepare the graph (+ k2 graph, rescoring LM), get lattices."""

    needs_rescore_lm = False  # prepare refuses to run without opts.rescore_arpa
    uses_rescore_lm = False  # the result depends on opts.rescore_lm_scale (when rescore_arpa is set)
    lm_scales_in_one_pass = False

    def check(self, model, opts):
        super().check(model, opts)
        if self.nbest:
            _nbest_mode(opts)

    def cache_key(self, opts, resources):
        key = super().cache_key(opts, resources)
        if key is None:
            return None
        arpa = None if opts.rescore_arpa is None else _file_key(Path(opts.rescore_arpa))
        return (key, arpa, _backend(opts))

    def prepare(self, model, opts, resources):
        base = super().prepare(model, opts, resources)
        backend = _backend(opts)
        lang = self._lang_dir(opts, resources)
        state = LatticeState(base.graph, base.id_to_word, base.vocab_size, base.kind, base.info)
        if backend == "k2":
            from asr_kd.decoding.k2_graph import k2_graph_from_kaldifst  # noqa: PLC0415

            state.k2_graph = k2_graph_from_kaldifst(base.graph)
        if self.needs_rescore_lm and opts.rescore_arpa is None:
            raise ValueError(f"decoding method {self.name!r} needs SearchOptions.rescore_arpa (e.g. a 4-gram ARPA)")
        if opts.rescore_arpa is not None:
            from asr_kd.decoding.lattice import NgramScorer  # noqa: PLC0415

            state.rescorer = NgramScorer.from_arpa(opts.rescore_arpa, lang / "words.txt")
            if backend == "k2" and self.name == "whole-lattice-rescoring":
                from asr_kd.decoding.k2_graph import k2_grammar_from_kaldifst  # noqa: PLC0415

                state.k2_grammar = k2_grammar_from_kaldifst(state.rescorer.G)
        from asr_kd.lm.lang import read_lexicon_entries, read_symbols  # noqa: PLC0415

        tokens = read_symbols(lang / "tokens.txt")
        words = read_symbols(lang / "words.txt")
        state.spellings = {
            words[e.word]: [tokens[t] for t in e.units] for e in read_lexicon_entries(lang / "lexicon.txt")
        }
        if (lang / "bpe.model").is_file():
            from asr_kd.data.tokenizer import Tokenizer  # noqa: PLC0415

            state.tokenizer = Tokenizer.from_dir(lang)
        return state

    @staticmethod
    def _k2_lattice(lp, lens, opts, state):
        """k2's lattice of ``state.k2_graph`` and its utterance order."""
        from asr_kd.decoding.k2_graph import k2_get_lattice  # noqa: PLC0415

        return k2_get_lattice(
            state.k2_graph,
            lp,
            lens,
            search_beam=opts.search_beam,
            output_beam=opts.lattice_beam,
            acoustic_scale=opts.acoustic_scale,
        )

    def lattices(self, model, enc_out, opts, state, *, samples: int = 0):
        """N :class:`~asr_kd.decoding.lattice.Lattice` (None where the search reached no final state).

        With ``samples > 0`` and the k2 backend, ``(lattices, word sequences)``: also the words of
        ``samples`` paths per utterance drawn by ``k2.random_paths`` (scores scaled by ``opts.nbest_scale``)
        from the k2 lattice; with kaldi-decoder lattices the word sequences are None (drawn later, in numpy).
        """
        lp = self._log_probs(model, enc_out, opts, state, self.name)
        lens = enc_out.out_lens
        drawn = None
        if state.k2_graph is not None:
            from asr_kd.decoding.k2_graph import k2_lattices_to_lattices, k2_sample_word_sequences  # noqa: PLC0415

            lat, order = self._k2_lattice(lp, lens, opts, state)
            lats = k2_lattices_to_lattices(lat, order, lp.size(0))
            if samples > 0:
                drawn = k2_sample_word_sequences(lat, order, lp.size(0), samples, opts.nbest_scale)
        else:
            from asr_kd.decoding.lattice import kaldi_get_lattice  # noqa: PLC0415

            lats = kaldi_get_lattice(
                state.graph,
                lp,
                lens,
                beam=opts.search_beam,
                lattice_beam=opts.lattice_beam,
                acoustic_scale=opts.acoustic_scale,
            )
        return (lats, drawn) if samples > 0 else lats

    def nbest_lists(self, model, enc_out, opts, state) -> list[NBest]:
        """N n-best lists of word sequences, by ``opts.nbest_mode`` (the module docstring)."""
        from asr_kd.decoding.lattice import lattice_nbest, lattice_nbest_sampled  # noqa: PLC0415

        if _nbest_mode(opts) == "exact" or int(opts.num_paths) == 1:  # (one path: the 1-best either way)
            return [
                lattice_nbest(lat, opts.num_paths, beam=opts.lattice_beam)
                for lat in self.lattices(model, enc_out, opts, state)
            ]
        lats, drawn = self.lattices(model, enc_out, opts, state, samples=int(opts.num_paths) - 1)
        return [
            lattice_nbest_sampled(
                lat,
                opts.num_paths,
                nbest_scale=opts.nbest_scale,
                seed=opts.nbest_seed,
                samples=None if drawn is None else drawn[n],
            )
            for n, lat in enumerate(lats)
        ]

    def _suffix_extra(self, opts) -> list[str]:
        parts = []
        if opts.rescore_arpa is not None and self.uses_rescore_lm:
            parts.append(f"{Path(opts.rescore_arpa).name.removesuffix('.arpa')}_lms-{opts.rescore_lm_scale:g}")
        if self.nbest:
            parts.append(_nbest_suffix(opts))
        return parts


def _nbest_suffix(opts) -> str:
    """``n-<num_paths>`` (exact), ``sampled-<num_paths>_ns-<nbest_scale>`` (+ ``_seed-<s>`` when not 0)."""
    if _nbest_mode(opts) == "exact":
        return f"n-{opts.num_paths}"
    seed = f"_seed-{opts.nbest_seed}" if opts.nbest_seed else ""
    return f"sampled-{opts.num_paths}_ns-{opts.nbest_scale:g}{seed}"


@register_decoding_method("nbest", nbest=True, requires=("ctc",), output="words")
class NbestDecoding(_LatticeMethod):
    """The lattice's n-best of distinct word sequences, best total score first (``opts.nbest_mode``)."""

    def search(self, model, enc_out, opts, state):
        return self.nbest_lists(model, enc_out, opts, state)


@register_decoding_method("nbest-rescoring", nbest=True, requires=("ctc",), output="words")
class NbestRescoring(_LatticeMethod):
    """The n-best of ``nbest`` with ``acoustic + opts.rescore_lm_scale * ln p(rescore_arpa)``
    (components ``acoustic``, ``lm``, ``graph``; :func:`~asr_kd.decoding.lattice.best_for_lm_scales`
    gives the best for other scales from the same result)."""

    needs_rescore_lm = True
    uses_rescore_lm = True
    lm_scales_in_one_pass = True  # the decode CLI scores every --rescore-lm-scale from one search

    def search(self, model, enc_out, opts, state):
        from asr_kd.decoding.lattice import rescore_nbest  # noqa: PLC0415

        return [
            rescore_nbest(nb, state.rescorer, opts.rescore_lm_scale)
            for nb in self.nbest_lists(model, enc_out, opts, state)
        ]


@register_decoding_method("whole-lattice-rescoring", requires=("ctc",), output="words")
class WholeLatticeRescoring(_LatticeMethod):
    """The best path of ``acoustic + opts.rescore_lm_scale * ln p(rescore_arpa)`` over the whole lattice."""

    needs_rescore_lm = True
    uses_rescore_lm = True

    def search(self, model, enc_out, opts, state):
        if state.k2_grammar is not None:
            from asr_kd.decoding.k2_graph import k2_whole_lattice_rescore  # noqa: PLC0415

            lp = self._log_probs(model, enc_out, opts, state, self.name)
            lat, order = self._k2_lattice(lp, enc_out.out_lens, opts, state)
            res = k2_whole_lattice_rescore(lat, order, lp.size(0), state.k2_grammar, opts.rescore_lm_scale)
        else:
            from asr_kd.decoding.lattice import whole_lattice_rescore  # noqa: PLC0415

            res = [
                whole_lattice_rescore(lat, state.rescorer, opts.rescore_lm_scale)
                for lat in self.lattices(model, enc_out, opts, state)
            ]
        return best_paths(res)


@register_decoding_method(
    "attention-decoder-rescoring-with-ngram", nbest=True, requires=("ctc", "attention_decoder"), output="words"
)
class AttentionDecoderRescoringWithNgram(_LatticeMethod):
    """The lattice n-best rescored by the attention decoder: ``acoustic + ngram + opts.attention_scale *
    log p_att(tokens, eos)``; ``ngram`` is the graph score, or ``rescore_lm_scale * ln p(rescore_arpa)``
    when ``opts.rescore_arpa`` is set (components ``acoustic``, ``ngram``, ``att``)."""

    uses_rescore_lm = True

    def search(self, model, enc_out, opts, state):
        from asr_kd.decoding.attention import attention_rescoring  # noqa: PLC0415
        from asr_kd.decoding.lattice import _rerank  # noqa: PLC0415

        nbests = self.nbest_lists(model, enc_out, opts, state)
        spelled = [[state.words_to_tokens(h) for h in nb.tokens] for nb in nbests]
        att_lists = attention_rescoring(
            model.attention_decoder,
            enc_out.out,
            enc_out.out_lens,
            spelled,
            ctc_scores=[[0.0] * len(s) for s in spelled],
            ctc_weight=0.0,
            sos=model.sos_id,
            eos=model.eos_id,
        )
        out = []
        for nb, toks, att in zip(nbests, spelled, att_lists, strict=True):
            att_of = {tuple(t): s for t, s in zip(att.tokens, att.components["att"])}
            ac = list(nb.components["acoustic"])
            if state.rescorer is not None:
                ngram = [opts.rescore_lm_scale * state.rescorer.score(h) for h in nb.tokens]
            else:
                ngram = list(nb.components["graph"])
            a = [float(att_of[tuple(t)]) for t in toks]
            scores = [x + y + opts.attention_scale * z for x, y, z in zip(ac, ngram, a)]
            out.append(_rerank(nb.tokens, scores, {"acoustic": ac, "ngram": ngram, "att": a}))
        return out
