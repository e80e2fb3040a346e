"""Search functions (plain functions returning result objects) and WER scoring.

Modules: :mod:`~asr_kd.decoding.ctc` (greedy, prefix beam search, prefix scorer),
:mod:`~asr_kd.decoding.attention` (joint CTC/attention beam search, attention rescoring),
:mod:`~asr_kd.decoding.transducer` (greedy, modified beam search),
:mod:`~asr_kd.decoding.mask_ctc` (Mask-CTC easy-first), :mod:`~asr_kd.decoding.wer` (WER/CER, result files).
"""

from asr_kd.decoding.common import NBest, best_paths
from asr_kd.decoding.ctc import CtcPrefixScorer, ctc_greedy_search, ctc_prefix_beam_search

__all__ = [
    "NBest",
    "best_paths",
    "CtcPrefixScorer",
    "ctc_greedy_search",
    "ctc_prefix_beam_search",
]
