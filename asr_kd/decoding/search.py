"""Model-level decoding: one entry point that runs a named search method on an ``AsrModel``.

The search functions of this package take tensors and heads; :func:`decode_batch` wires an
``AsrModel`` (encoder + heads, see ``asr_kd.models.asr_model``) to them, so the decode CLI, KD
experiment runners and tests share one mapping from method names to searches.

Methods (:data:`METHODS`) and the head each needs:

====================  ======================  =====================================================
name                  head                    search
====================  ======================  =====================================================
ctc-greedy            ctc (or inter-CTC)      :func:`~asr_kd.decoding.ctc.ctc_greedy_search`
ctc-prefix-beam       ctc (or inter-CTC)      :func:`~asr_kd.decoding.ctc.ctc_prefix_beam_search`
attention-beam        attention_decoder       joint CTC/attention one-pass beam search (CTC term
                                              when the model has a ctc head and ctc_weight > 0)
attention-rescoring   ctc + attention_decoder CTC prefix-beam n-best rescored by the decoder
transducer-greedy     transducer              :func:`~asr_kd.decoding.transducer.transducer_greedy_search`
modified-beam         transducer              :func:`~asr_kd.decoding.transducer.modified_beam_search`
mask-ctc              ctc + mask_ctc          :func:`~asr_kd.decoding.mask_ctc.mask_ctc_easy_first`
mask-ctc-beam         ctc + mask_ctc          :func:`~asr_kd.decoding.mask_ctc.mask_ctc_beam_search`
                                              (Algorithm 1 of Gong et al. 2022; beam, p_thr, K)
====================  ======================  =====================================================

``ctc_layer`` (1-based, an inter-CTC layer) decodes the CTC methods from that layer's head on the
encoder's ``layer_outputs[ctc_layer - 1]`` (the sub-model of self-KD).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from asr_kd.decoding.attention import attention_beam_search, attention_rescoring
from asr_kd.decoding.common import best_paths
from asr_kd.decoding.ctc import ctc_greedy_search
from asr_kd.decoding.mask_ctc import mask_ctc_beam_search, mask_ctc_easy_first
from asr_kd.decoding.transducer import modified_beam_search, transducer_greedy_search

__all__ = ["METHODS", "NBEST_METHODS", "SearchOptions", "decode_batch", "decode_nbest", "check_method",
           "ctc_log_probs"]

#: method name -> heads it needs (attribute names of AsrModel that must not be None)
METHODS: dict[str, tuple[str, ...]] = {
    "ctc-greedy": ("ctc",),
    "ctc-prefix-beam": ("ctc",),
    "attention-beam": ("attention_decoder",),
    "attention-rescoring": ("ctc", "attention_decoder"),
    "transducer-greedy": ("transducer",),
    "modified-beam": ("transducer",),
    "mask-ctc": ("ctc", "mask_ctc"),
    "mask-ctc-beam": ("ctc", "mask_ctc"),
}


#: methods that produce an n-best list (the others return a single hypothesis per utterance)
NBEST_METHODS = ("ctc-prefix-beam", "attention-beam", "attention-rescoring", "modified-beam", "mask-ctc-beam")


@dataclass
class SearchOptions:
    """Knobs of :func:`decode_batch` (each used only by the methods it names)."""

    beam: int = 10               # ctc-prefix-beam, attention-*, modified-beam (icefall: 4), mask-ctc-beam
    ctc_weight: float = 0.3      # attention-beam (joint scoring), attention-rescoring
    ctc_layer: Optional[int] = None  # decode the CTC methods from this inter-CTC layer (1-based)
    max_sym_per_frame: int = 1   # transducer-greedy
    p_thr: float = 0.99          # mask-ctc, mask-ctc-beam
    iterations: int = 2          # mask-ctc* K: masks filled per MLM iteration ("paper" schedule)
    mask_schedule: str = "paper"  # mask-ctc*: "paper" | "espnet" (K = iterations), asr_kd.decoding.mask_ctc
    length_penalty: float = 0.0  # attention-beam


def check_method(model: Any, method: str, opts: SearchOptions | None = None) -> None:
    """Raise ``ValueError`` naming what is missing when ``model`` cannot run ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown decoding method {method!r}; choose from {sorted(METHODS)}")
    opts = opts or SearchOptions()
    for head in METHODS[method]:
        if head == "ctc" and opts.ctc_layer is not None:
            model.inter_ctc_head(opts.ctc_layer)  # KeyError names the available layers
            continue
        if getattr(model, head, None) is None:
            raise ValueError(f"method {method!r} needs the model's {head} head, which this model lacks "
                             f"(enabled heads: {model.enabled_heads()})")


def ctc_log_probs(model: Any, enc_out: Any, opts: SearchOptions) -> torch.Tensor:
    """(N, T', V) CTC log-probs from the final head or from inter-CTC layer ``opts.ctc_layer``."""
    if opts.ctc_layer is None:
        return model.ctc(enc_out.out).log_softmax(-1)
    head = model.inter_ctc_head(opts.ctc_layer)
    return head(enc_out.layer_outputs[opts.ctc_layer - 1]).log_softmax(-1)


def _search(model: Any, enc_out: Any, method: str, opts: SearchOptions) -> list:
    """Run ``method`` on an encoded batch: ``list[NBest]`` for :data:`NBEST_METHODS`, else token lists."""
    enc, enc_lens = enc_out.out, enc_out.out_lens
    needs_ctc = "ctc" in METHODS[method] or (method == "attention-beam" and model.ctc is not None
                                             and opts.ctc_weight > 0)
    ctc_lp = ctc_log_probs(model, enc_out, opts) if needs_ctc else None
    blank = model.blank_id
    # the native C++ prefix beam search when built (asr_kd.ops backend switch), else the reference
    from asr_kd.ops import ctc_prefix_beam_search

    if method == "ctc-greedy":
        return ctc_greedy_search(ctc_lp, enc_lens, blank_id=blank)
    if method == "ctc-prefix-beam":
        return ctc_prefix_beam_search(ctc_lp, enc_lens, beam=opts.beam, blank_id=blank)
    if method == "attention-beam":
        return attention_beam_search(
            model.attention_decoder, enc, enc_lens, beam=opts.beam, sos=model.sos_id, eos=model.eos_id,
            ctc_log_probs=ctc_lp, ctc_weight=opts.ctc_weight if ctc_lp is not None else 0.0,
            length_penalty=opts.length_penalty, blank_id=blank)
    if method == "attention-rescoring":
        nbest = ctc_prefix_beam_search(ctc_lp, enc_lens, beam=opts.beam, blank_id=blank)
        return attention_rescoring(model.attention_decoder, enc, enc_lens, nbest,
                                   ctc_weight=opts.ctc_weight, sos=model.sos_id, eos=model.eos_id)
    if method == "transducer-greedy":
        t = model.transducer
        return transducer_greedy_search(t.predictor, t.joiner, enc, enc_lens,
                                        max_sym_per_frame=opts.max_sym_per_frame)
    if method == "modified-beam":
        t = model.transducer
        return modified_beam_search(t.predictor, t.joiner, enc, enc_lens, beam=opts.beam)
    if method == "mask-ctc":
        return mask_ctc_easy_first(ctc_lp, enc_lens, model.mask_ctc, enc, enc_lens, p_thr=opts.p_thr,
                                   K=opts.iterations, mask_id=model.mask_ctc.mask_id, blank_id=blank,
                                   schedule=opts.mask_schedule)
    if method == "mask-ctc-beam":
        return mask_ctc_beam_search(ctc_lp, enc_lens, model.mask_ctc, enc, enc_lens, beam=opts.beam,
                                    p_thr=opts.p_thr, K=opts.iterations, mask_id=model.mask_ctc.mask_id,
                                    blank_id=blank, schedule=opts.mask_schedule)
    raise AssertionError(method)  # check_method covers every name


@torch.no_grad()
def decode_batch(model: Any, x: torch.Tensor, x_lens: torch.Tensor, method: str,
                 opts: SearchOptions | None = None, *, encoder_out: Any = None) -> list[list[int]]:
    """Decode one batch: x (N, T, F) fbank, x_lens (N,) -> N token-id lists (best hypothesis).

    ``encoder_out``: the model's ``EncoderOutput`` for this batch when the caller already has it.
    """
    opts = opts or SearchOptions()
    check_method(model, method, opts)
    enc_out = encoder_out if encoder_out is not None else model.encode(x, x_lens)
    res = _search(model, enc_out, method, opts)
    return best_paths(res) if method in NBEST_METHODS else res


@torch.no_grad()
def decode_nbest(model: Any, x: torch.Tensor, x_lens: torch.Tensor, method: str,
                 opts: SearchOptions | None = None, *, nbest: int | None = None,
                 encoder_out: Any = None) -> tuple[list[list[list[int]]], list[list[float]]]:
    """N-best lists of one batch (teacher n-bests for sequence-level KD).

    Args:
        method: one of :data:`NBEST_METHODS` (the beam is ``opts.beam``).
        nbest: keep at most this many hypotheses per utterance (default: all the beam returns).
        encoder_out: the model's ``EncoderOutput`` for this batch, when already computed.

    Returns:
        ``(tokens, scores)``: per utterance a list of token-id sequences, best first, and their
        log-domain scores (the search's ranking scores).
    """
    if method not in NBEST_METHODS:
        raise ValueError(f"method {method!r} gives no n-best list; choose from {NBEST_METHODS}")
    opts = opts or SearchOptions()
    check_method(model, method, opts)
    enc_out = encoder_out if encoder_out is not None else model.encode(x, x_lens)
    res = _search(model, enc_out, method, opts)
    k = nbest if nbest is not None else None
    tokens = [[list(h) for h in r.tokens[:k]] for r in res]
    scores = [[float(v) for v in r.scores[:k]] for r in res]
    return tokens, scores
