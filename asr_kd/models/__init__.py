"""Models: encoders (:mod:`asr_kd.models.encoder`), heads (:mod:`asr_kd.models.heads`) and
:mod:`asr_kd.models.asr_model`. Only the encoder names are re-exported here; import heads and
``AsrModel`` from their own modules."""

from asr_kd.models.encoder import (
    CONFORMER_PRESETS,
    ConformerEncoder,
    Encoder,
    EncoderOutput,
    conformer_encoder,
    conformer_preset,
)

__all__ = [
    "CONFORMER_PRESETS",
    "ConformerEncoder",
    "Encoder",
    "EncoderOutput",
    "conformer_encoder",
    "conformer_preset",
]
