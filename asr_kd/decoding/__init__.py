"""Search functions (plain functions returning result objects) and WER scoring.

Modules: :mod:`~asr_kd.decoding.ctc` (greedy, prefix beam search, prefix scorer),
:mod:`~asr_kd.decoding.attention` (joint CTC/attention beam search, attention rescoring),
:mod:`~asr_kd.decoding.transducer` (greedy, modified beam search),
:mod:`~asr_kd.decoding.streaming` (chunk-by-chunk transducer decoding with caches; per-chunk latency),
:mod:`~asr_kd.decoding.mask_ctc` (Mask-CTC easy-first and beam search),
:mod:`~asr_kd.decoding.wfst` (HL / HLG WFST decoding),
:mod:`~asr_kd.decoding.k2_graph` (the same graphs decoded with k2, optional, imported lazily),
:mod:`~asr_kd.decoding.lattice` (HLG lattices, their n-best, n-gram rescoring; kaldi-decoder + kaldifst),
:mod:`~asr_kd.decoding.lattice_methods` (icefall's CTC methods 1best, nbest, nbest-rescoring,
whole-lattice-rescoring, ..., registered in the registry),
:mod:`~asr_kd.decoding.wer` (WER/CER, result files, real-time factor), and
:mod:`~asr_kd.decoding.search`: the registry of named decoding methods run on an ``AsrModel``
(:func:`decode_batch`, :func:`register_decoding_method`, :func:`list_decoding_methods`).
"""

from asr_kd.decoding.attention import attention_beam_search, attention_rescoring
from asr_kd.decoding.common import NBest, best_paths
from asr_kd.decoding.ctc import CtcPrefixScorer, ctc_greedy_search, ctc_prefix_beam_search
from asr_kd.decoding.mask_ctc import mask_ctc_beam_search, mask_ctc_easy_first, mask_fill_schedule
from asr_kd.decoding.search import (
    DecodingMethod,
    SearchOptions,
    decode_batch,
    decode_nbest,
    list_decoding_methods,
    prepare_decoding,
    register_decoding_method,
)
from asr_kd.decoding.streaming import StreamingTransducerDecoder, simulate_streaming, stream_decode
from asr_kd.decoding.transducer import modified_beam_search, transducer_greedy_search
from asr_kd.decoding.wer import (
    Timer,
    WerResult,
    compute_wer,
    measure_rtf,
    result_path,
    write_errs,
    write_recogs,
    write_wer_summary,
)

__all__ = [
    "NBest",
    "best_paths",
    "CtcPrefixScorer",
    "ctc_greedy_search",
    "ctc_prefix_beam_search",
    "attention_beam_search",
    "attention_rescoring",
    "transducer_greedy_search",
    "modified_beam_search",
    "StreamingTransducerDecoder",
    "stream_decode",
    "simulate_streaming",
    "mask_ctc_easy_first",
    "mask_ctc_beam_search",
    "mask_fill_schedule",
    "DecodingMethod",
    "SearchOptions",
    "decode_batch",
    "decode_nbest",
    "list_decoding_methods",
    "prepare_decoding",
    "register_decoding_method",
    "WerResult",
    "compute_wer",
    "write_recogs",
    "write_errs",
    "write_wer_summary",
    "result_path",
    "Timer",
    "measure_rtf",
]
