"""Loss functions for asr_kd models (all summed over the batch; callers normalise).

- :mod:`asr_kd.losses.ctc`      CTC via ``F.ctc_loss`` or (optional) ``k2.ctc_loss``
- :mod:`asr_kd.losses.rnnt`     pruned RNN-T (fast_rnnt), full RNN-T (fast_rnnt / pure PyTorch),
                                icefall-style warm-up of the pruned-loss scales
- :mod:`asr_kd.losses.ce`       label-smoothed CE (attention decoder), masked-LM CE (Mask-CTC)
- :mod:`asr_kd.losses.masking`  ESPnet-style token masking for Mask-CTC training
- :mod:`asr_kd.losses.kd`       KD losses: frame-level posterior KD (via ``asr_kd.ops``), n-best
                                sequence KD with CTC, feature distances, attention-map KL,
                                MiniLM-style attention-relation KL
"""

from asr_kd.losses.ce import label_smoothing_loss, masked_lm_loss
from asr_kd.losses.ctc import ctc_loss, k2_available, pad_token_lists
from asr_kd.losses.kd import (
    attention_map_kl,
    attention_relation_kl,
    feature_distance,
    frame_kd,
    nbest_weights,
    sequence_kd_ctc,
)
from asr_kd.losses.masking import MaskedTokens, mask_tokens
from asr_kd.losses.rnnt import (
    fast_rnnt_available,
    make_boundary,
    pruned_rnnt_loss,
    rnnt_loss_full,
    rnnt_loss_reference,
    transducer_loss_scales,
)

__all__ = [
    "ctc_loss",
    "k2_available",
    "pad_token_lists",
    "fast_rnnt_available",
    "make_boundary",
    "pruned_rnnt_loss",
    "rnnt_loss_full",
    "rnnt_loss_reference",
    "transducer_loss_scales",
    "label_smoothing_loss",
    "masked_lm_loss",
    "MaskedTokens",
    "mask_tokens",
    "frame_kd",
    "nbest_weights",
    "sequence_kd_ctc",
    "feature_distance",
    "attention_map_kl",
    "attention_relation_kl",
]
