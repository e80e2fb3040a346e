"""Output heads on top of an encoder (docs/DESIGN.md "Heads").

- :class:`CtcHead` (also the intermediate-CTC heads)
- transducer: :class:`StatelessPredictor`, :class:`Joiner`, :class:`TransducerHead`
- :class:`AttentionDecoder` (autoregressive, with ``forward_one_step`` for beam search)
- :class:`MaskCtcDecoder` (conditional masked LM)
"""

from asr_kd.models.heads.attention_decoder import AttentionDecoder, add_sos_eos, causal_mask
from asr_kd.models.heads.ctc import CtcHead
from asr_kd.models.heads.mask_ctc import MaskCtcDecoder
from asr_kd.models.heads.transducer import (
    Joiner,
    StatelessPredictor,
    TransducerHead,
    prepend_blank,
)

__all__ = [
    "CtcHead",
    "StatelessPredictor",
    "Joiner",
    "TransducerHead",
    "prepend_blank",
    "AttentionDecoder",
    "add_sos_eos",
    "causal_mask",
    "MaskCtcDecoder",
]
