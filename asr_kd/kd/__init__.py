"""Knowledge distillation: teachers (online / offline), methods registered by name, schedules, and the
KD training loss. See :mod:`asr_kd.kd.methods` for the config format; :mod:`asr_kd.kd.inter_aed` registers
``inter_aed_kd`` (masked-LM token distributions through auxiliary attention decoders, :mod:`asr_kd.kd.mlm`),
:mod:`asr_kd.kd.streaming_kd` ``streaming_kd`` (full-context teacher -> streaming student through auxiliary
non-streaming layers) and :mod:`asr_kd.kd.transducer_kd` ``transducer_kd`` (joiner KD on the teacher's alignment)."""

import asr_kd.kd.inter_aed  # noqa: F401  (registers inter_aed_kd)
import asr_kd.kd.repr_transfer  # noqa: F401  (registers lm_repr_transfer)
import asr_kd.kd.streaming_kd  # noqa: F401  (registers streaming_kd)
import asr_kd.kd.transducer_kd  # noqa: F401  (registers transducer_kd)
from asr_kd.kd.methods import (
    KD_METHODS,
    AttentionRelationKd,
    CtcKd,
    FeatureKd,
    KdContext,
    KdMethod,
    MlmKd,
    MlmSeqKd,
    SelfKd,
    SeqKdCtc,
    build_kd_method,
    register_kd_method,
)
from asr_kd.kd.schedules import SCHEDULES, build_schedule
from asr_kd.kd.task import KdEntry, KdLossFn, build_kd_loss_fn
from asr_kd.kd.teachers import TEACHERS, AsrTeacher, Teacher, TeacherOutput, build_teacher, register_teacher

__all__ = [
    "KD_METHODS",
    "AttentionRelationKd",
    "CtcKd",
    "FeatureKd",
    "KdContext",
    "KdMethod",
    "MlmKd",
    "MlmSeqKd",
    "SelfKd",
    "SeqKdCtc",
    "build_kd_method",
    "register_kd_method",
    "SCHEDULES",
    "build_schedule",
    "KdEntry",
    "KdLossFn",
    "build_kd_loss_fn",
    "TEACHERS",
    "AsrTeacher",
    "Teacher",
    "TeacherOutput",
    "build_teacher",
    "register_teacher",
]
