"""Model-level decoding: a registry of named decoding methods run on an ``AsrModel``.

The search functions of this package take tensors and heads; a *decoding method* wires an
``AsrModel`` (encoder + heads, see ``asr_kd.models.asr_model``) to one of them, so the decode CLI,
KD teachers, experiment runners and tests share one mapping from names to searches.

A method is a :class:`DecodingMethod` registered under its name with
:func:`register_decoding_method` (``nbest``: whether it returns an n-best list; ``requires``: the
heads it needs). It has two steps:

- ``prepare(model, opts, resources) -> state``: builds what the search needs besides the model,
  once (e.g. the HL / HLG graph of ``ctc-hlg`` from ``opts.lang_dir``). States with a
  :meth:`~DecodingMethod.cache_key` are cached per method and reused by later calls;
- ``search(model, enc_out, opts, state)``: one encoded batch (``enc_out.out`` ``(N, T', D)``,
  ``enc_out.out_lens`` ``(N,)``) -> N :class:`~asr_kd.decoding.common.NBest` (n-best methods) or N
  token-id lists.

:func:`prepare_decoding` checks the heads and runs ``prepare`` (-> :class:`PreparedDecoding`, for
many batches); :func:`decode_batch` / :func:`decode_nbest` do both for one batch.

Registered methods (:func:`list_decoding_methods`) and the heads each needs:

====================  ======================  =====================================================
name                  head                    search
====================  ======================  =====================================================
ctc-greedy            ctc (or inter-CTC)      :func:`~asr_kd.decoding.ctc.ctc_greedy_search`
ctc-prefix-beam       ctc (or inter-CTC)      :func:`asr_kd.ops.ctc_prefix_beam_search` (native
                                              when built, else the Python reference)
ctc-hlg               ctc (or inter-CTC)      :func:`~asr_kd.decoding.wfst.wfst_decode` on the cached
                                              determinised HL graph of ``opts.lang_dir`` (HLG with
                                              ``opts.arpa``, :mod:`asr_kd.decoding.hlg`);
                                              outputs **word ids** of ``words.txt``
attention-beam        attention_decoder       joint CTC/attention one-pass beam search (CTC term
                                              when the model has a ctc head and ctc_weight > 0)
attention-rescoring   ctc + attention_decoder CTC prefix-beam n-best rescored by the decoder
transducer-greedy     transducer              :func:`~asr_kd.decoding.transducer.transducer_greedy_search`
modified-beam         transducer              :func:`~asr_kd.decoding.transducer.modified_beam_search`
modified-beam-lm      transducer              the same with token n-gram shallow fusion (``opts.lm_arpa``,
                                              ``opts.lm_scale``, :mod:`asr_kd.decoding.lm_fusion`)
mask-ctc              ctc + mask_ctc          :func:`~asr_kd.decoding.mask_ctc.mask_ctc_easy_first`
mask-ctc-beam         ctc + mask_ctc          :func:`~asr_kd.decoding.mask_ctc.mask_ctc_beam_search`
                                              (Algorithm 1 of Gong et al. 2022; beam, p_thr, K)
streaming-greedy      transducer (causal      chunk-by-chunk greedy search with encoder caches
                      streaming encoder)      (``opts.chunk_size``, ``opts.left_context``,
                                              :mod:`asr_kd.decoding.streaming`); decodes the features
streaming-modified-   transducer (causal      chunk-by-chunk modified beam search, the hypotheses
beam                  streaming encoder)      carried across chunks
====================  ======================  =====================================================

icefall's CTC lattice methods on the HLG of ``opts.lang_dir`` / ``opts.arpa`` (``1best``, ``ctc-decoding``,
``nbest``, ``nbest-rescoring``, ``whole-lattice-rescoring``, ``attention-decoder-rescoring-with-ngram``) are
registered by :mod:`asr_kd.decoding.lattice_methods`; ``opts.blank_penalty`` applies to every CTC method.

N-best methods: ctc-prefix-beam, attention-beam, attention-rescoring, modified-beam, modified-beam-lm,
mask-ctc-beam, nbest, nbest-rescoring, attention-decoder-rescoring-with-ngram.

``ctc_layer`` (1-based, an inter-CTC layer) decodes the CTC methods from that layer's head on the
encoder's layer ``ctc_layer`` at the output frame rate, ``enc_out.layer(ctc_layer)`` (N, T', D_k)
(the sub-model of self-KD).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from asr_kd import ops  # ops.ctc_prefix_beam_search: the native op when built, else the reference
from asr_kd.decoding.attention import attention_beam_search, attention_rescoring
from asr_kd.decoding.common import best_paths
from asr_kd.decoding.ctc import ctc_greedy_search
from asr_kd.decoding.mask_ctc import mask_ctc_beam_search, mask_ctc_easy_first
from asr_kd.decoding.transducer import modified_beam_search, transducer_greedy_search

__all__ = [
    "DecodingMethod",
    "DECODING_METHODS",
    "register_decoding_method",
    "get_decoding_method",
    "list_decoding_methods",
    "PreparedDecoding",
    "prepare_decoding",
    "METHODS",
    "NBEST_METHODS",
    "SearchOptions",
    "decode_batch",
    "decode_nbest",
    "check_method",
    "ctc_log_probs",
    "HlgGraph",
]

PathLike = str | Path


@dataclass
class SearchOptions:
    """Knobs of the decoding methods (each used only by the methods it names)."""

    beam: int = 10  # ctc-prefix-beam, attention-*, modified-beam (icefall: 4), mask-ctc-beam
    ctc_weight: float = 0.3  # attention-beam (joint scoring), attention-rescoring
    ctc_layer: int | None = None  # decode the CTC methods from this inter-CTC layer (1-based)
    max_sym_per_frame: int = 1  # transducer-greedy
    p_thr: float = 0.99  # mask-ctc, mask-ctc-beam
    iterations: int = 2  # mask-ctc* K: masks filled per MLM iteration ("paper" schedule)
    mask_schedule: str = "paper"  # mask-ctc*: "paper" | "espnet" (K = iterations), asr_kd.decoding.mask_ctc
    length_penalty: float = 0.0  # attention-beam
    lang_dir: PathLike | None = None  # ctc-hlg: tokens.txt, words.txt, lexicon.txt (H o L)
    arpa: PathLike | None = None  # ctc-hlg: ARPA LM for G (None: HL, no LM)
    lm_scale: float = 1.0  # ctc-hlg: G weight scale; modified-beam-lm: the token LM's weight
    search_beam: float = 16.0  # ctc-hlg: decoder beam (cost units)
    acoustic_scale: float = 1.0  # ctc-hlg: scale of the CTC log-probs
    keep_epsilon: bool = False  # ctc-hlg: keep LG's eps:eps arcs (a far smaller graph; asr_kd.decoding.hlg)
    ctc_topo: str = "auto"  # ctc-hlg, lattice methods, ctc-decoding: H's CTC topology, "standard" | "modified" |
    #   "auto" (modified above 1000 tokens; asr_kd.decoding.wfst.build_ctc_topo)
    lm_arpa: PathLike | None = None  # modified-beam-lm: token-level ARPA (words = the model's tokens)
    blank_penalty: float = 0.0  # subtracted from the blank logit (transducer-*, modified-beam*), log-prob (CTC methods)
    decoder_cache: bool = True  # modified-beam*: cache the predictor output per context (same results)
    chunk_size: int = -1  # streaming-*: encoder frames per chunk (> 0; 4 = 160 ms at 25 Hz)
    left_context: int = -1  # streaming-*: visible chunks to the left (-1 = all)
    feed_frames: int | None = None  # streaming-*: input frames per call (None: subsampling * chunk_size)
    # the CTC lattice methods (asr_kd.decoding.lattice_methods): nbest, nbest-rescoring, whole-lattice-rescoring, ...
    num_paths: int = 100  # nbest*, attention-decoder-rescoring-with-ngram: paths of the n-best (icefall's 100)
    nbest_mode: str = "sampled"  # lattice n-bests: "sampled" (icefall's: the best path + num_paths - 1 draws,
    #   deduplicated) or "exact" (the num_paths best distinct word sequences); asr_kd.decoding.lattice_methods
    nbest_scale: float = 0.5  # sampled n-best: scale of the lattice scores before drawing (icefall's 0.5)
    nbest_seed: int = 0  # sampled n-best, kaldi-decoder lattices: the draws' seed (k2's random_paths has none)
    lattice_beam: float = 8.0  # lattice methods: lattice pruning beam (k2 output_beam)
    rescore_arpa: PathLike | None = None  # nbest-rescoring, whole-lattice-rescoring: the higher-order LM
    rescore_lm_scale: float = 1.0  # its weight (acoustic + rescore_lm_scale * ln p)
    attention_scale: float = 1.0  # attention-decoder-rescoring-with-ngram: weight of log p_att
    lattice_backend: str = "kaldi"  # lattice methods: "kaldi" (kaldi-decoder), "k2", "auto" (k2 when it imports)


# ----------------------------------------------------------------------------------------------
# the registry
# ----------------------------------------------------------------------------------------------


class DecodingMethod:
    """Base class of decoding methods (see the module docstring).

    Class attributes (set by :func:`register_decoding_method`): ``name``; ``nbest`` (``search``
    returns ``list[NBest]``, else ``list[list[int]]``); ``requires`` (AsrModel heads that must not
    be None; ``"ctc"`` means the inter-CTC head of ``opts.ctc_layer`` when that is set); ``output``
    (``"tokens"``: token ids, ``"words"``: word ids of the prepared state's ``id_to_word``);
    ``default_beam`` (the beam the decode CLI uses when none is given).

    ``suffix_options``: the :class:`SearchOptions` fields named in result-file suffixes
    (:meth:`suffix`).
    """

    name: ClassVar[str] = ""
    nbest: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()
    output: ClassVar[str] = "tokens"
    default_beam: ClassVar[int] = 10
    suffix_options: ClassVar[tuple[str, ...]] = ()
    #: prepared states kept per method (least recently used dropped first)
    cache_size: ClassVar[int] = 4
    #: the method decodes features itself (:meth:`decode_features`, e.g. chunk-by-chunk streaming)
    #: instead of searching ``model.encode``'s output
    from_features: ClassVar[bool] = False

    def __init__(self) -> None:
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()

    def check(self, model: Any, opts: SearchOptions) -> None:
        """Raise ``ValueError`` naming the missing head when ``model`` cannot run this method."""
        for head in self.requires:
            if head == "ctc" and opts.ctc_layer is not None:
                model.inter_ctc_head(opts.ctc_layer)  # KeyError names the available layers
                continue
            if getattr(model, head, None) is None:
                enabled = model.enabled_heads() if hasattr(model, "enabled_heads") else "?"
                raise ValueError(
                    f"decoding method {self.name!r} needs the model's {head} head, which this "
                    f"model lacks (enabled heads: {enabled})"
                )

    def cache_key(self, opts: SearchOptions, resources: Mapping[str, Any]) -> Hashable | None:
        """Key under which :meth:`prepare`'s result is cached (None: prepare on every call)."""
        return None

    def prepare(self, model: Any, opts: SearchOptions, resources: Mapping[str, Any]) -> Any:
        """Build what :meth:`search` needs besides the model (default: nothing)."""
        return None

    def prepared(self, model: Any, opts: SearchOptions, resources: Mapping[str, Any]) -> Any:
        """:meth:`prepare`, through the cache when :meth:`cache_key` gives a key."""
        key = self.cache_key(opts, resources)
        if key is None:
            return self.prepare(model, opts, resources)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        state = self.prepare(model, opts, resources)
        self._cache[key] = state
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return state

    def cache_clear(self) -> None:
        """Drop the cached prepared states."""
        self._cache.clear()

    def search(self, model: Any, enc_out: Any, opts: SearchOptions, state: Any) -> list:
        """One encoded batch -> N :class:`NBest` (``nbest``) or N id lists."""
        raise NotImplementedError

    def decode_features(
        self, model: Any, x: torch.Tensor, x_lens: torch.Tensor, opts: SearchOptions, state: Any
    ) -> list:
        """(``from_features`` methods) x (N, T, F), x_lens (N,) -> what :meth:`search` returns."""
        raise NotImplementedError

    def words(self, hyps: Sequence[Sequence[int]], tokenizer: Any, state: Any) -> list[list[str]]:
        """Best hypotheses (N id lists) -> N word lists (token ids through ``tokenizer.decode``)."""
        return [tokenizer.decode(list(h)).split() for h in hyps]

    def suffix(self, opts: SearchOptions) -> str:
        """Result-file suffix: the name and the values of :attr:`suffix_options`, e.g.
        ``ctc-prefix-beam_beam-10`` (``ctc_layer`` and a non-default ``mask_schedule`` only when set)."""
        parts = [self.name]
        for field in self.suffix_options:
            part = _SUFFIX_PARTS[field](opts)
            if part:
                parts.append(part)
        return "_".join(parts)


_SUFFIX_PARTS = {
    "beam": lambda o: f"beam-{o.beam}",
    "ctc_weight": lambda o: f"ctcw-{o.ctc_weight:g}",
    "p_thr": lambda o: f"pthr-{o.p_thr:g}",
    "iterations": lambda o: f"K-{o.iterations}",
    "mask_schedule": lambda o: "" if o.mask_schedule == "paper" else f"sched-{o.mask_schedule}",
    "ctc_layer": lambda o: "" if o.ctc_layer is None else f"layer-{o.ctc_layer}",
    "lm_scale": lambda o: f"lms-{o.lm_scale:g}",
    "blank_penalty": lambda o: f"bp-{o.blank_penalty:g}" if o.blank_penalty else "",
    "chunk_size": lambda o: f"chunk-{o.chunk_size}",
    "left_context": lambda o: f"left-{o.left_context}" if o.left_context >= 0 else "left-all",
    "feed_frames": lambda o: f"feed-{o.feed_frames}" if o.feed_frames is not None else "",
}

#: method name -> the registered method object
DECODING_METHODS: dict[str, DecodingMethod] = {}


def register_decoding_method(
    name: str, *, nbest: bool = False, requires: Sequence[str] = (), output: str = "tokens", default_beam: int = 10
):
    """Class decorator: register a :class:`DecodingMethod` subclass under ``name``.

    Args:
        name: the method name (``decode_batch(..., method=name)``, ``--method`` of the CLI).
        nbest: ``search`` returns ``list[NBest]`` (usable by :func:`decode_nbest`).
        requires: AsrModel heads the method needs (``"ctc"``, ``"attention_decoder"``, ...).
        output: ``"tokens"`` or ``"words"`` (ids of the prepared ``id_to_word``).
        default_beam: the CLI's beam when ``--beam`` is not given.
    """
    if output not in ("tokens", "words"):
        raise ValueError(f"output must be 'tokens' or 'words', got {output!r}")

    def deco(cls):
        if name in DECODING_METHODS:
            raise ValueError(f"decoding method {name!r} registered twice")
        if not (isinstance(cls, type) and issubclass(cls, DecodingMethod)):
            raise TypeError(f"decoding method {name!r} must be a DecodingMethod subclass")
        cls.name, cls.nbest, cls.requires = name, bool(nbest), tuple(requires)
        cls.output, cls.default_beam = output, int(default_beam)
        DECODING_METHODS[name] = cls()
        return cls

    return deco


def list_decoding_methods(*, nbest: bool | None = None) -> list[str]:
    """Names of the registered methods, sorted (``nbest=True`` / ``False``: only those / the others)."""
    return sorted(n for n, m in DECODING_METHODS.items() if nbest is None or m.nbest == nbest)


def get_decoding_method(name: str) -> DecodingMethod:
    """The registered method ``name``; ``ValueError`` listing the registered names otherwise."""
    try:
        return DECODING_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown decoding method {name!r}; registered: {list_decoding_methods()}") from None


class _MethodsView(Mapping):
    """Read-only live view ``name -> requires`` of the registry."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return DECODING_METHODS[name].requires

    def __iter__(self) -> Iterator[str]:
        return iter(DECODING_METHODS)

    def __len__(self) -> int:
        return len(DECODING_METHODS)

    def __repr__(self) -> str:
        return repr(dict(self))


class _NbestNames(Sequence):
    """Read-only live tuple-like view of the n-best method names (registration order)."""

    def _names(self) -> tuple[str, ...]:
        return tuple(n for n, m in DECODING_METHODS.items() if m.nbest)

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


#: method name -> heads it needs (a live view of the registry)
METHODS: Mapping[str, tuple[str, ...]] = _MethodsView()

#: methods that produce an n-best list (a live view; the others return one hypothesis per utterance)
NBEST_METHODS: Sequence[str] = _NbestNames()


@dataclass
class PreparedDecoding:
    """A method checked against a model and prepared with its options: decodes many batches."""

    method: DecodingMethod
    model: Any
    opts: SearchOptions
    state: Any = None

    @property
    def name(self) -> str:
        return self.method.name

    @torch.no_grad()
    def search(self, enc_out: Any) -> list:
        """The method's raw result on an encoded batch: N :class:`NBest` or N id lists."""
        return self.method.search(self.model, enc_out, self.opts, self.state)

    @torch.no_grad()
    def decode(self, x: torch.Tensor, x_lens: torch.Tensor, *, encoder_out: Any = None) -> list[list[int]]:
        """x (N, T, F) fbank, x_lens (N,) -> N best hypotheses (token ids, or word ids for
        ``output == "words"``). ``encoder_out``: the model's ``EncoderOutput`` when already computed
        (not for ``from_features`` methods, which encode the features themselves)."""
        res = self._run(x, x_lens, encoder_out)
        return best_paths(res) if self.method.nbest else res

    def _run(self, x: torch.Tensor, x_lens: torch.Tensor, encoder_out: Any) -> list:
        if self.method.from_features:
            return self.method.decode_features(self.model, x, x_lens, self.opts, self.state)
        enc_out = encoder_out if encoder_out is not None else self.model.encode(x, x_lens)
        return self.search(enc_out)

    @torch.no_grad()
    def decode_nbest(
        self, x: torch.Tensor, x_lens: torch.Tensor, *, nbest: int | None = None, encoder_out: Any = None
    ) -> tuple[list[list[list[int]]], list[list[float]]]:
        """``(tokens, scores)`` per utterance, best first, at most ``nbest`` each (see :func:`decode_nbest`)."""
        if not self.method.nbest:
            raise ValueError(f"method {self.name!r} gives no n-best list; choose from {NBEST_METHODS}")
        res = self._run(x, x_lens, encoder_out)
        tokens = [[list(h) for h in r.tokens[:nbest]] for r in res]
        if self.method.output == "words":  # lattice methods: word ids spelled in model tokens
            tokens = [[self.state.words_to_tokens(h) for h in hyps] for hyps in tokens]
        scores = [[float(v) for v in r.scores[:nbest]] for r in res]
        return tokens, scores

    def words(self, hyps: Sequence[Sequence[int]], tokenizer: Any = None) -> list[list[str]]:
        """Best hypotheses from :meth:`decode` -> N word lists."""
        return self.method.words(hyps, tokenizer, self.state)


def prepare_decoding(
    model: Any, method: str, opts: SearchOptions | None = None, *, resources: Mapping[str, Any] | None = None
) -> PreparedDecoding:
    """Check that ``model`` has the heads ``method`` needs and prepare the method's resources.

    Raises:
        ValueError: unknown method (the message lists the registered ones) or a missing head
            (named in the message); ``KeyError`` for an ``opts.ctc_layer`` without inter-CTC head.
    """
    m = get_decoding_method(method)
    opts = opts or SearchOptions()
    m.check(model, opts)
    return PreparedDecoding(m, model, opts, m.prepared(model, opts, dict(resources or {})))


def check_method(model: Any, method: str, opts: SearchOptions | None = None) -> None:
    """Raise ``ValueError`` naming what is missing when ``model`` cannot run ``method``."""
    get_decoding_method(method).check(model, opts or SearchOptions())


def ctc_log_probs(model: Any, enc_out: Any, opts: SearchOptions) -> torch.Tensor:
    """(N, T', V) CTC log-probs from the final head or from inter-CTC layer ``opts.ctc_layer`` (its
    layer brought to the output frame rate, ``EncoderOutput.layer``, as in training), with
    ``opts.blank_penalty`` subtracted from the blank column."""
    if opts.ctc_layer is None:
        lp = model.ctc(enc_out.out).log_softmax(-1)
    else:
        head = model.inter_ctc_head(opts.ctc_layer)
        k = opts.ctc_layer
        h = enc_out.layer(k) if hasattr(enc_out, "layer") else enc_out.layer_outputs[k - 1]
        lp = head(h).log_softmax(-1)
    if opts.blank_penalty:  # icefall's blank_penalty of the CTC decoders (blank = model.blank_id)
        lp = lp.clone()
        lp[..., getattr(model, "blank_id", 0)] -= opts.blank_penalty
    return lp


@torch.no_grad()
def decode_batch(
    model: Any,
    x: torch.Tensor,
    x_lens: torch.Tensor,
    method: str,
    opts: SearchOptions | None = None,
    *,
    encoder_out: Any = None,
    resources: Mapping[str, Any] | None = None,
) -> list[list[int]]:
    """Decode one batch: x (N, T, F) fbank, x_lens (N,) -> N id lists (best hypothesis).

    The ids are tokens, except for methods with ``output == "words"`` (``ctc-hlg``: word ids of
    ``words.txt``). ``encoder_out``: the model's ``EncoderOutput`` for this batch when the caller
    already has it. ``resources``: prepared inputs of the method (see its class), else built from
    ``opts`` and cached. For many batches, :func:`prepare_decoding` once and ``.decode`` each.
    """
    return prepare_decoding(model, method, opts, resources=resources).decode(x, x_lens, encoder_out=encoder_out)


@torch.no_grad()
def decode_nbest(
    model: Any,
    x: torch.Tensor,
    x_lens: torch.Tensor,
    method: str,
    opts: SearchOptions | None = None,
    *,
    nbest: int | None = None,
    encoder_out: Any = None,
    resources: Mapping[str, Any] | None = None,
) -> tuple[list[list[list[int]]], list[list[float]]]:
    """N-best lists of one batch (teacher n-bests for sequence-level KD).

    Args:
        method: one of :data:`NBEST_METHODS` (the beam is ``opts.beam``).
        nbest: keep at most this many hypotheses per utterance (default: all the beam returns).
        encoder_out: the model's ``EncoderOutput`` for this batch, when already computed.

    Returns:
        ``(tokens, scores)``: per utterance a list of token-id sequences, best first, and their
        log-domain scores (the search's ranking scores). The word sequences of the HLG lattice methods
        (``nbest``, ``nbest-rescoring``, ...) come spelled in the model's tokens (the lang dir's BPE).
    """
    m = get_decoding_method(method)
    if not m.nbest:
        raise ValueError(f"method {method!r} gives no n-best list; choose from {NBEST_METHODS}")
    prepared = prepare_decoding(model, method, opts, resources=resources)
    return prepared.decode_nbest(x, x_lens, nbest=nbest, encoder_out=encoder_out)


# ----------------------------------------------------------------------------------------------
# the methods
# ----------------------------------------------------------------------------------------------


@register_decoding_method("ctc-greedy", requires=("ctc",))
class CtcGreedy(DecodingMethod):
    """Best path of the CTC posteriors (``opts.blank_penalty``)."""

    suffix_options = ("ctc_layer", "blank_penalty")

    def search(self, model, enc_out, opts, state):
        lp = ctc_log_probs(model, enc_out, opts)
        return ctc_greedy_search(lp, enc_out.out_lens, blank_id=model.blank_id)


@register_decoding_method("ctc-prefix-beam", nbest=True, requires=("ctc",))
class CtcPrefixBeam(DecodingMethod):
    """CTC prefix beam search (``opts.beam``, ``opts.blank_penalty``): the native op when built, else the reference."""

    suffix_options = ("beam", "ctc_layer", "blank_penalty")

    def search(self, model, enc_out, opts, state):
        lp = ctc_log_probs(model, enc_out, opts)
        return ops.ctc_prefix_beam_search(lp, enc_out.out_lens, beam=opts.beam, blank_id=model.blank_id)


@register_decoding_method("attention-beam", nbest=True, requires=("attention_decoder",))
class AttentionBeam(DecodingMethod):
    """Joint CTC/attention beam search; the CTC prefix score is used when the model has a ctc head
    and ``opts.ctc_weight > 0`` (from ``opts.ctc_layer``'s head when set), else attention alone."""

    suffix_options = ("beam", "ctc_weight")

    def search(self, model, enc_out, opts, state):
        use_ctc = model.ctc is not None and opts.ctc_weight > 0
        lp = ctc_log_probs(model, enc_out, opts) if use_ctc else None
        return attention_beam_search(
            model.attention_decoder,
            enc_out.out,
            enc_out.out_lens,
            beam=opts.beam,
            sos=model.sos_id,
            eos=model.eos_id,
            ctc_log_probs=lp,
            ctc_weight=opts.ctc_weight if use_ctc else 0.0,
            length_penalty=opts.length_penalty,
            blank_id=model.blank_id,
        )


@register_decoding_method("attention-rescoring", nbest=True, requires=("ctc", "attention_decoder"))
class AttentionRescoring(DecodingMethod):
    """The CTC prefix-beam n-best (``opts.beam``) rescored by the attention decoder."""

    suffix_options = ("beam", "ctc_weight", "ctc_layer")

    def search(self, model, enc_out, opts, state):
        enc, lens = enc_out.out, enc_out.out_lens
        nbest = ops.ctc_prefix_beam_search(
            ctc_log_probs(model, enc_out, opts), lens, beam=opts.beam, blank_id=model.blank_id
        )
        return attention_rescoring(
            model.attention_decoder, enc, lens, nbest, ctc_weight=opts.ctc_weight, sos=model.sos_id, eos=model.eos_id
        )


@register_decoding_method("transducer-greedy", requires=("transducer",))
class TransducerGreedy(DecodingMethod):
    """Greedy transducer search (``opts.max_sym_per_frame``, ``opts.blank_penalty``)."""

    suffix_options = ("blank_penalty",)

    def search(self, model, enc_out, opts, state):
        t = model.transducer
        return transducer_greedy_search(
            t.predictor,
            t.joiner,
            enc_out.out,
            enc_out.out_lens,
            max_sym_per_frame=opts.max_sym_per_frame,
            blank_penalty=opts.blank_penalty,
        )


@register_decoding_method("modified-beam", nbest=True, requires=("transducer",), default_beam=4)
class ModifiedBeam(DecodingMethod):
    """Transducer modified beam search (one symbol per frame, ``opts.beam``, ``opts.blank_penalty``;
    the predictor output cached per context unless ``opts.decoder_cache`` is off)."""

    suffix_options = ("beam", "blank_penalty")

    def search(self, model, enc_out, opts, state):
        t = model.transducer
        return modified_beam_search(
            t.predictor,
            t.joiner,
            enc_out.out,
            enc_out.out_lens,
            beam=opts.beam,
            lm=state,
            lm_scale=opts.lm_scale if state is not None else 0.0,
            blank_penalty=opts.blank_penalty,
            cache=opts.decoder_cache,
        )


@register_decoding_method("modified-beam-lm", nbest=True, requires=("transducer",), default_beam=4)
class ModifiedBeamLm(ModifiedBeam):
    """Modified beam search with token n-gram shallow fusion (:mod:`asr_kd.decoding.lm_fusion`).

    ``prepare`` reads ``opts.lm_arpa`` (an ARPA whose words are the model's tokens) and the token
    table ``tokens.txt`` of ``opts.lang_dir`` (or ``resources["lm"]``: a ready
    :class:`~asr_kd.decoding.lm_fusion.TokenNgramLm`); the model's vocabulary must equal the table's.
    Emitting a token adds ``opts.lm_scale * ln p_LM``; ``</s>`` is scored at the end.
    """

    suffix_options = ("beam", "lm_scale", "blank_penalty")

    def cache_key(self, opts, resources):
        if "lm" in resources:
            return None
        if opts.lm_arpa is None or opts.lang_dir is None:
            raise ValueError(
                "decoding method 'modified-beam-lm' needs a token-level ARPA and the lang dir's tokens.txt: "
                "SearchOptions(lm_arpa=..., lang_dir=...) (decode --lm-arpa), or resources={'lm': TokenNgramLm}"
            )
        return (_file_key(Path(opts.lm_arpa)), _file_key(Path(opts.lang_dir) / "tokens.txt"))

    def prepare(self, model, opts, resources):
        from asr_kd.decoding.lm_fusion import TokenNgramLm  # noqa: PLC0415

        lm = resources.get("lm")
        if lm is None:
            lm = TokenNgramLm.from_files(
                opts.lm_arpa, Path(opts.lang_dir) / "tokens.txt", blank_id=int(model.transducer.predictor.blank_id)
            )
        vocab = getattr(model, "vocab_size", None)
        if vocab is not None and int(vocab) != lm.vocab_size:
            raise ValueError(
                f"modified-beam-lm: the model has {int(vocab)} tokens but the LM's token table "
                f"({opts.lang_dir}/tokens.txt) has {lm.vocab_size}"
            )
        return lm


@register_decoding_method("mask-ctc", requires=("ctc", "mask_ctc"))
class MaskCtc(DecodingMethod):
    """Mask-CTC easy-first filling (``opts.p_thr``, ``opts.iterations`` = K, ``opts.mask_schedule``)."""

    suffix_options = ("p_thr", "iterations", "mask_schedule", "ctc_layer")

    def search(self, model, enc_out, opts, state):
        enc, lens = enc_out.out, enc_out.out_lens
        return mask_ctc_easy_first(
            ctc_log_probs(model, enc_out, opts),
            lens,
            model.mask_ctc,
            enc,
            lens,
            p_thr=opts.p_thr,
            K=opts.iterations,
            mask_id=model.mask_ctc.mask_id,
            blank_id=model.blank_id,
            schedule=opts.mask_schedule,
        )


@register_decoding_method("mask-ctc-beam", nbest=True, requires=("ctc", "mask_ctc"))
class MaskCtcBeam(DecodingMethod):
    """Mask-CTC beam search (``opts.beam``, ``opts.p_thr``, ``opts.iterations`` = K, schedule)."""

    suffix_options = ("beam", "p_thr", "iterations", "mask_schedule", "ctc_layer")

    def search(self, model, enc_out, opts, state):
        enc, lens = enc_out.out, enc_out.out_lens
        return mask_ctc_beam_search(
            ctc_log_probs(model, enc_out, opts),
            lens,
            model.mask_ctc,
            enc,
            lens,
            beam=opts.beam,
            p_thr=opts.p_thr,
            K=opts.iterations,
            mask_id=model.mask_ctc.mask_id,
            blank_id=model.blank_id,
            schedule=opts.mask_schedule,
        )


@dataclass
class HlgGraph:
    """The prepared state of ``ctc-hlg``.

    Attributes:
        graph: the kaldifst graph (input labels ``token + 1``, output labels word ids).
        id_to_word: word id -> word (``words.txt``).
        vocab_size: V of the graph's token set (``tokens.txt``), None when unknown.
        kind: ``"HL"`` or ``"HLG"``.
    """

    graph: Any
    id_to_word: Mapping[int, str]
    vocab_size: int | None = None
    kind: str = "HL"
    info: Any = None  # asr_kd.decoding.hlg.GraphInfo (build time, size, cache file) when built here


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


@register_decoding_method("ctc-hlg", requires=("ctc",), output="words")
class CtcHlg(DecodingMethod):
    """WFST decoding of the CTC log-probs (kaldifst graph + kaldi-decoder ``FasterDecoder``).

    ``prepare`` gets the graph from :func:`asr_kd.decoding.hlg.get_hlg`: ``HL = H o det(L)`` from
    the lang dir (``opts.lang_dir`` or ``resources["lang_dir"]``: ``tokens.txt``, ``words.txt``,
    ``lexicon.txt``) and, with ``opts.arpa``, ``HLG = H o det(L o G)`` (G from kaldilm,
    ``opts.lm_scale``), disambiguation symbols and epsilons removed. The graph is built once and
    cached in the lang dir (``HL.fst`` / ``HLG_<lm>.fst``, rebuilt when the sha256 of its inputs
    changes), and per process per lang dir, LM and scale. H's CTC topology is ``opts.ctc_topo``
    (``"auto"``: the modified one, O(V) arcs, above 1000 tokens; see
    :func:`~asr_kd.decoding.wfst.build_ctc_topo`). ``resources["hlg"] = (graph, id_to_word)``
    passes a graph built elsewhere (e.g. :func:`~asr_kd.decoding.wfst.build_hlg_from_lang_dir`,
    the undeterminised composition). The search uses ``opts.search_beam``
    and ``opts.acoustic_scale``; hypotheses are **word ids** (``PreparedDecoding.words`` maps them
    to words). Needs blank = 0 and the packages ``kaldifst`` and ``kaldi-decoder``.
    """

    def check(self, model, opts):
        super().check(model, opts)
        if getattr(model, "blank_id", 0) != 0:
            raise ValueError(
                f"decoding method 'ctc-hlg' needs blank id 0 (the FST epsilon), the model has {model.blank_id}"
            )
        from asr_kd.decoding.wfst import CTC_TOPOS  # noqa: PLC0415

        if opts.ctc_topo not in CTC_TOPOS:
            raise ValueError(
                f"SearchOptions.ctc_topo must be one of {', '.join(map(repr, CTC_TOPOS))}, got {opts.ctc_topo!r}"
            )

    @staticmethod
    def _lang_dir(opts, resources) -> Path:
        lang_dir = resources.get("lang_dir", opts.lang_dir)
        if lang_dir is None:
            raise ValueError(
                "decoding method 'ctc-hlg' needs a lang dir (tokens.txt, words.txt, lexicon.txt): "
                "SearchOptions(lang_dir=...) or resources={'lang_dir': ...}"
            )
        return Path(lang_dir)

    def cache_key(self, opts, resources):
        if "hlg" in resources:
            return None
        lang = self._lang_dir(opts, resources)
        files = []
        for name in ("tokens.txt", "words.txt", "lexicon.txt"):
            if not (lang / name).is_file():
                raise FileNotFoundError(f"ctc-hlg: {lang / name} not found")
            files.append(_file_key(lang / name))
        arpa = opts.arpa
        if arpa is None:
            lm = None
        elif "\n" in str(arpa):  # ARPA text
            lm = ("text", hash(str(arpa)))
        else:
            lm = _file_key(Path(arpa))
        return (tuple(files), lm, float(opts.lm_scale), bool(opts.keep_epsilon), opts.ctc_topo)

    def prepare(self, model, opts, resources):
        try:
            import kaldi_decoder  # noqa: F401, PLC0415
            import kaldifst  # noqa: F401, PLC0415
        except ImportError as e:
            raise ImportError(f"decoding method 'ctc-hlg' needs the kaldifst and kaldi-decoder packages ({e})") from e
        if "hlg" in resources:
            graph, id_to_word = resources["hlg"]
            return HlgGraph(graph, id_to_word, None, "HLG" if opts.arpa is not None else "HL")
        from asr_kd.decoding.hlg import get_hlg  # noqa: PLC0415
        from asr_kd.lm.lang import is_disambig, read_symbols  # noqa: PLC0415

        lang = self._lang_dir(opts, resources)
        graph, id_to_word, info = get_hlg(
            lang, opts.arpa, lm_scale=opts.lm_scale, remove_epsilon=not opts.keep_epsilon, ctc_topo=opts.ctc_topo
        )
        vocab = sum(1 for s in read_symbols(lang / "tokens.txt") if not is_disambig(s))
        return HlgGraph(graph, id_to_word, vocab, info.kind, info)

    @staticmethod
    def _log_probs(model, enc_out, opts, state, label: str):
        """The CTC log-probs, checked against the graph's vocabulary (``label`` names the method in the error)."""
        lp = ctc_log_probs(model, enc_out, opts)
        if state.vocab_size is not None and lp.size(-1) != state.vocab_size:
            raise ValueError(
                f"{label}: the model has {lp.size(-1)} CTC outputs but the lang dir's "
                f"tokens.txt has {state.vocab_size} tokens"
            )
        return lp

    def search(self, model, enc_out, opts, state):
        from asr_kd.decoding.wfst import wfst_decode  # noqa: PLC0415

        lp = self._log_probs(model, enc_out, opts, state, "ctc-hlg")
        res = wfst_decode(state.graph, lp, enc_out.out_lens, beam=opts.search_beam, acoustic_scale=opts.acoustic_scale)
        return best_paths(res)

    def words(self, hyps, tokenizer, state):
        return [[state.id_to_word[i] for i in h] for h in hyps]

    def _suffix_extra(self, opts) -> list[str]:
        """Suffix parts between the graph's and the blank penalty's (the lattice methods' rescoring LM, n)."""
        return []

    def suffix(self, opts):
        parts = [self.name, "noG" if opts.arpa is None else f"G_lms-{opts.lm_scale:g}", *self._suffix_extra(opts)]
        if opts.blank_penalty:
            parts.append(f"bp-{opts.blank_penalty:g}")
        if opts.keep_epsilon:
            parts.append("eps")
        if opts.ctc_topo != "auto":  # auto: named by the lang dir (its vocabulary size decides)
            parts.append(f"topo-{opts.ctc_topo}")
        if opts.ctc_layer is not None:
            parts.append(f"layer-{opts.ctc_layer}")
        return "_".join(parts)


# icefall's CTC lattice methods (1best, ctc-decoding, nbest, nbest-rescoring, whole-lattice-rescoring,
# attention-decoder-rescoring-with-ngram) register themselves here
from asr_kd.decoding import lattice_methods as _lattice_methods  # noqa: E402, F401

# chunk-by-chunk streaming transducer methods (streaming-greedy, streaming-modified-beam)
from asr_kd.decoding import streaming as _streaming  # noqa: E402, F401
