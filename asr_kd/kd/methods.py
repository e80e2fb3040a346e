"""KD methods, registered by name; a training config picks one or several, each with a weight and a
schedule (:mod:`asr_kd.kd.schedules`), and :class:`asr_kd.kd.task.KdLossFn` adds them to the ASR loss.

A method is an ``nn.Module`` (it may own parameters, e.g. a projection between student and teacher
dimensions; those live in the student model's ``kd_aux`` so the optimiser, DDP and checkpoints see
them) with::

    needs_teacher: set[str]     # TeacherOutput fields it reads (the teacher computes only those)
    needs_student: set[str]     # encoder extras it reads from the student: "attn", "qkv"
    forward(ctx: KdContext) -> dict[str, Tensor]   # named losses, SUMMED over the batch

The losses are batch sums like the ASR losses of :class:`~asr_kd.models.asr_model.AsrModel`; the task
divides everything by the same normaliser (frames, tokens or utterances).

Frame-level methods (``ctc_kd``, ``feature``, ``attention_relation``) compare student and teacher frame
by frame: both must run at the same frame rate (``Encoder.subsampling_factor``, or per layer
``Encoder.layer_info``). Encoders at the same rate may still count the edge frames differently
(Conformer ``T' = ((T - 1) // 2 - 1) // 2``, Zipformer ``T' = ((T - 7) // 2 + 1) // 2``); up to
:data:`EDGE_FRAMES` frames of difference per utterance are accepted and the frames both sides have,
``min(T'_student, T'_teacher)``, are compared.

Config::

    kd:
      teacher: {type: asr, checkpoint: exp/teacher/averaged.pt}       # or offline / hf_text / self
      total_steps: 2000                                              # for schedules (else training.max_steps)
      methods:
        - {name: ctc_kd, weight: 1.0, temperature: 1.0, blank_mask: false}
        - {name: self_kd, weight: 1.0, layer: 4, schedule: {name: self_kd, t: 0.3}}

Registered methods (this module): ``ctc_kd`` (frame-level KD of CTC posteriors from a separate teacher,
online logits or offline top-k), ``self_kd`` (final CTC head -> intermediate CTC head of the same encoder),
``seq_kd_ctc`` (the teacher's n-best as weighted CTC targets), ``feature`` (layer-to-layer feature
distance), ``attention_relation`` (self-attention relation KL), ``mlm_kd`` and ``mlm_seq_kd`` (AR
attention decoder -> Mask-CTC MLM decoder, frame- and sequence-level). Others register with
:func:`register_kd_method`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from asr_kd.kd.teachers import TeacherOutput

__all__ = [
    "EDGE_FRAMES",
    "KdContext",
    "KdMethod",
    "KD_METHODS",
    "register_kd_method",
    "build_kd_method",
    "CtcKd",
    "SelfKd",
    "SeqKdCtc",
    "FeatureKd",
    "AttentionRelationKd",
    "MlmKd",
    "MlmSeqKd",
]


@dataclass
class KdContext:
    """Everything a method may read for one batch.

    Attributes:
        model: the (unwrapped) student ``AsrModel``.
        batch: the data batch.
        tokens: the reference token sequences (N).
        enc: the student's ``EncoderOutput`` (``out`` (N, T', D), ``out_lens``, ``layer_outputs``, and
            ``attn`` / ``qkv`` when a method asked for them).
        losses: the student's ASR losses of this batch.
        teacher: the teacher's output (None for teacher-free methods such as self-KD).
        step: the training step.
        cache: per-batch memo shared by the methods (e.g. the student's CTC logits).
        heads: the student decoders' outputs when a method needs ``"heads"``
            (``att_logits``, ``mlm_logits``, ``mlm_masked``; see ``AsrModel.forward``).
    """

    model: nn.Module
    batch: Mapping[str, Any]
    tokens: Sequence[Sequence[int]]
    enc: Any
    losses: Mapping[str, Any]
    teacher: TeacherOutput | None
    step: int
    cache: dict[str, Any] = field(default_factory=dict)
    heads: dict[str, Any] = field(default_factory=dict)

    def ctc_logits(self, layer: int | None = None) -> Tensor:
        """(N, T', V) student CTC logits: the final head (``layer=None``) or inter-CTC layer ``layer``."""
        key = f"ctc_logits_{layer}"
        if key not in self.cache:
            m = self.model
            if layer is None:
                if m.ctc is None:
                    raise ValueError("this KD method needs the student's final CTC head (model.ctc)")
                self.cache[key] = m.ctc(self.enc.out)
            else:
                self.cache[key] = m.inter_ctc_head(layer)(self.enc.layer(layer))
        return self.cache[key]


class KdMethod(nn.Module):
    """Base class of KD methods (see the module docstring)."""

    needs_teacher: frozenset[str] = frozenset()
    needs_student: frozenset[str] = frozenset()
    #: encoder capabilities (``Encoder.capabilities``) the student must declare; ``"attn"`` / ``"qkv"``
    #: in ``needs_student`` are added automatically
    needs_encoder: frozenset[str] = frozenset()

    def forward(self, ctx: KdContext) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


KD_METHODS: dict[str, Callable[..., KdMethod]] = {}


def register_kd_method(name: str):
    """Class decorator: make a method selectable by ``{name: <name>, ...}`` in ``kd.methods``."""

    def deco(cls):
        if name in KD_METHODS:
            raise ValueError(f"KD method {name!r} registered twice")
        KD_METHODS[name] = cls
        cls.kd_name = name
        return cls

    return deco


def build_kd_method(name: str, model: nn.Module, **options: Any) -> KdMethod:
    """Instantiate the method ``name`` for the student ``model`` with its config options."""
    if name not in KD_METHODS:
        raise ValueError(f"unknown KD method {name!r}; known: {sorted(KD_METHODS)}")
    cls = KD_METHODS[name]
    encoder = getattr(model, "encoder", None)
    if encoder is not None and hasattr(encoder, "require"):
        for cap in sorted(cls.needs_encoder | (cls.needs_student & {"attn", "qkv"})):
            encoder.require(cap, f"KD method {name!r}")
    try:
        return cls(model=model, **options)
    except TypeError as e:
        raise ValueError(f"bad options for KD method {name!r}: {e}") from None


def _teacher_field(ctx: KdContext, name: str) -> Any:
    if ctx.teacher is None or getattr(ctx.teacher, name) is None:
        raise ValueError(
            f"the KD method needs the teacher's {name!r}, which the configured teacher "
            "does not provide (check kd.teacher)"
        )
    return getattr(ctx.teacher, name)


#: largest per-utterance difference of teacher and student frame counts a frame-level method accepts
EDGE_FRAMES = 2


def _common_frames(
    who: str,
    student_lens: Tensor,
    teacher_lens: Tensor | None,
    student_rate: int | None = None,
    teacher_rate: int | None = None,
    hint: str = "",
) -> Tensor:
    """(N,) frames both sides have, ``min(student_lens, teacher_lens)`` (``student_lens`` without a
    teacher count). Raises ``ValueError`` naming ``who`` when the declared rates (input frames per
    frame) differ or the counts differ by more than :data:`EDGE_FRAMES`."""
    if student_rate and teacher_rate and int(student_rate) != int(teacher_rate):
        raise ValueError(
            f"{who}: the student runs at {student_rate} input frames per frame and the teacher "
            f"at {teacher_rate}; frame-level KD needs the same frame rate{hint}"
        )
    if teacher_lens is None:
        return student_lens
    t_lens = teacher_lens.to(student_lens.device)
    if t_lens.shape != student_lens.shape:
        raise ValueError(
            f"{who}: teacher lengths {tuple(t_lens.shape)} for a student batch of {tuple(student_lens.shape)}"
        )
    if student_lens.numel() and int((student_lens - t_lens).abs().max()) > EDGE_FRAMES:
        raise ValueError(
            f"{who}: teacher and student frame counts differ ({t_lens.tolist()} vs "
            f"{student_lens.tolist()}) by more than {EDGE_FRAMES} frames: frame-level KD needs "
            f"the same subsampling{hint}"
        )
    return torch.minimum(student_lens, t_lens)


def _frames(x: Any, t: int, dim: int = 1) -> Any:
    """The first ``t`` frames along ``dim`` of a tensor or of a tuple of tensors."""
    if isinstance(x, tuple):
        return tuple(_frames(v, t, dim) for v in x)
    return x.narrow(dim, 0, min(t, x.size(dim)))


def _num_frames(x: Any, dim: int = 1) -> int:
    return int((x[0] if isinstance(x, tuple) else x).size(dim))


def _student_rate(ctx: KdContext, layer: int | None = None) -> int | None:
    """Input frames per frame of the student's output (``layer=None``) or of 1-based ``layer``."""
    encoder = getattr(ctx.model, "encoder", None)
    if layer is not None:
        info = getattr(encoder, "layer_info", None)
        if info:
            return int(info[layer - 1].subsampling)
    rate = getattr(encoder, "subsampling_factor", None)
    return int(rate) if rate else None


@register_kd_method("ctc_kd")
class CtcKd(KdMethod):
    """Conventional frame-level KD of CTC posteriors from a separate teacher (softmax-level KD).

    loss = sum over valid frames of KL(p_teacher || p_student) at ``temperature`` (x tau^2), from the
    teacher's CTC logits (online) or its top-k log-probs (offline, renormalised over the kept entries).

    Args:
        layer: the student head to train: None = final CTC head, k = inter-CTC head of layer k.
        temperature: tau.
        blank_mask: drop frames where the teacher's blank posterior exceeds ``blank_threshold``
            (blank-frame masking; ``blank_weight`` > 0 down-weights them instead).
        loss_type: ``"kl"`` or ``"ce"``.
    """

    needs_teacher = frozenset({"ctc_logits"})

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: int | None = None,
        temperature: float = 1.0,
        blank_mask: bool = False,
        blank_threshold: float = 0.5,
        blank_weight: float = 0.0,
        loss_type: str = "kl",
    ):
        super().__init__()
        self.layer = layer
        self.temperature = float(temperature)
        self.blank_mask = bool(blank_mask)
        self.blank_threshold = float(blank_threshold)
        self.blank_weight = float(blank_weight)
        self.loss_type = loss_type
        self.blank_id = int(getattr(model, "blank_id", 0))

    def forward(self, ctx: KdContext) -> dict[str, Tensor]:
        from asr_kd.losses.kd import frame_kd

        t = ctx.teacher
        if t is not None and t.ctc_topk is not None:
            teacher, ttype = t.ctc_topk, "topk"
        else:
            teacher, ttype = _teacher_field(ctx, "ctc_logits"), "logits"
        student = ctx.ctc_logits(self.layer)
        lens = _common_frames(
            "ctc_kd",
            ctx.enc.out_lens,
            t.lens if t is not None else None,
            _student_rate(ctx),
            t.subsampling if t is not None else None,
        )
        frames = min(student.size(1), _num_frames(teacher))
        loss = frame_kd(
            _frames(student, frames),
            _frames(teacher, frames),
            lens,
            teacher_type=ttype,
            temperature=self.temperature,
            loss_type=self.loss_type,
            blank_id=self.blank_id if self.blank_mask else None,
            blank_threshold=self.blank_threshold if self.blank_mask else None,
            blank_weight=self.blank_weight,
            reduction="sum",
        )
        return {"ctc_kd": loss}


@register_kd_method("self_kd")
class SelfKd(KdMethod):
    """Self-KD for CTC (Kim, Kim, Lee, arXiv 2406.07909): the final CTC head of the encoder is the
    self-teacher, the intermediate CTC head at ``layer`` the self-student; frame-level KL from the
    final posteriors (detached) to the intermediate ones. No separate teacher.

    The student model needs ``inter_ctc: {layers: [layer]}`` (its own head, not shared) next to ``ctc``;
    the full loss is ``CTC + interCTC + alpha(t) * KD`` with the weights ``{ctc: 1, inter_ctc: 1}`` and
    this method's weight/schedule (``{name: self_kd, t: 0.3}``).

    Args:
        layer: the intermediate layer (1-based); default the model's first inter-CTC layer.
        temperature: tau.
        blank_mask: drop frames where the self-teacher's blank posterior exceeds ``blank_threshold``
            (off by default: the paper finds it hurts self-KD).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: int | None = None,
        temperature: float = 1.0,
        blank_mask: bool = False,
        blank_threshold: float = 0.5,
        loss_type: str = "kl",
    ):
        super().__init__()
        layers = list(getattr(model, "inter_ctc_layers", []))
        if layer is None:
            if not layers:
                raise ValueError("self_kd needs a student with an intermediate CTC head (model.inter_ctc.layers)")
            layer = layers[0]
        if layer not in layers:
            raise ValueError(f"self_kd layer {layer} has no inter-CTC head (inter-CTC layers: {layers})")
        if getattr(model, "ctc", None) is None:
            raise ValueError("self_kd needs the final CTC head (the self-teacher)")
        self.layer = int(layer)
        self.temperature = float(temperature)
        self.blank_mask = bool(blank_mask)
        self.blank_threshold = float(blank_threshold)
        self.loss_type = loss_type
        self.blank_id = int(getattr(model, "blank_id", 0))

    def forward(self, ctx: KdContext) -> dict[str, Tensor]:
        from asr_kd.losses.kd import frame_kd

        teacher = ctx.ctc_logits(None).detach()
        loss = frame_kd(
            ctx.ctc_logits(self.layer),
            teacher,
            ctx.enc.out_lens,
            teacher_type="logits",
            temperature=self.temperature,
            loss_type=self.loss_type,
            blank_id=self.blank_id if self.blank_mask else None,
            blank_threshold=self.blank_threshold if self.blank_mask else None,
            reduction="sum",
        )
        return {"self_kd": loss}

    #: the point of self-KD is the sub-model (``AsrModel.submodel``), which needs truncation
    needs_encoder = frozenset({"truncate"})


@register_kd_method("seq_kd_ctc")
class SeqKdCtc(KdMethod):
    """Sequence-level KD on the teacher's n-best: sum_i w_i CTC(student, y_i), with the hypothesis
    probabilities renormalised over the n-best (``w = softmax(scores / temperature)``).

    Args:
        layer: student CTC head (None = final, k = inter-CTC layer k).
        temperature: of the n-best weights.
    """

    needs_teacher = frozenset({"nbest"})

    def __init__(self, model: nn.Module, *, layer: int | None = None, temperature: float = 1.0):
        super().__init__()
        self.layer = layer
        self.temperature = float(temperature)
        self.blank_id = int(getattr(model, "blank_id", 0))

    def forward(self, ctx: KdContext) -> dict[str, Tensor]:
        from asr_kd.losses.kd import sequence_kd_ctc

        nbest = _teacher_field(ctx, "nbest")
        scores = _teacher_field(ctx, "nbest_scores")
        log_probs = ctx.ctc_logits(self.layer).log_softmax(-1)
        loss = sequence_kd_ctc(
            log_probs,
            ctx.enc.out_lens,
            nbest,
            scores,
            blank_id=self.blank_id,
            temperature=self.temperature,
            reduction="sum",
        )
        return {"seq_kd_ctc": loss}


def _layer(seq: Sequence[Any], k: int, who: str) -> Any:
    """1-based layer k of a per-layer list (k = -1: the last)."""
    n = len(seq)
    idx = n - 1 if k == -1 else k - 1
    if not 0 <= idx < n:
        raise ValueError(f"{who} layer {k} out of range (1..{n} or -1)")
    return seq[idx]


@register_kd_method("feature")
class FeatureKd(KdMethod):
    """Feature distance between student and teacher encoder layers, both at the output frame rate
    (``EncoderOutput.layer``: multi-rate layers are resampled; the teacher gives its layers at its
    output rate), summed over the pairs and the frames both sides have.

    Args:
        pairs: ``[[student_layer, teacher_layer], ...]`` (1-based, -1 = last); default ``[[-1, -1]]``.
        kind: ``"l1"``, ``"l2"`` (mean squared error per frame) or ``"cosine"``.
        student_dim: the student layers' dim; default what the encoder declares per layer
            (``Encoder.layer_info``).
        teacher_dim: the teacher layers' dim, one int or one per pair; default the student's. Where a
            pair's dims differ, a learned linear projection student -> teacher (a parameter of this method).
    """

    needs_teacher = frozenset({"layer_outputs"})

    def __init__(
        self,
        model: nn.Module,
        *,
        pairs: Sequence[Sequence[int]] = ((-1, -1),),
        kind: str = "l2",
        student_dim: int | None = None,
        teacher_dim: int | None = None,
    ):
        super().__init__()
        self.pairs = [(int(s), int(t)) for s, t in pairs]
        self.kind = kind
        info = list(getattr(model.encoder, "layer_info", None) or [])
        n_layers = int(getattr(model.encoder, "num_layers", len(info)))
        if teacher_dim is not None and not isinstance(teacher_dim, int):
            tds = [int(d) for d in teacher_dim]
            if len(tds) != len(self.pairs):
                raise ValueError(f"feature KD: {len(tds)} teacher dims for {len(self.pairs)} layer pairs")
        else:
            tds = [teacher_dim] * len(self.pairs)
        projs = []
        for (s, _), td in zip(self.pairs, tds):
            if student_dim is not None:
                sd = int(student_dim)
            elif info:
                sd = int(_layer(info, s, "student").dim)
            else:
                sd = int(model.encoder.output_dim)
            td = int(td or sd)
            projs.append(nn.Linear(sd, td) if sd != td else nn.Identity())
        self.num_student_layers = n_layers
        self.proj = nn.ModuleList(projs)

    def forward(self, ctx: KdContext) -> dict[str, Tensor]:
        from asr_kd.losses.kd import feature_distance

        t_layers = _teacher_field(ctx, "layer_outputs")
        lens = _common_frames(
            "feature KD", ctx.enc.out_lens, ctx.teacher.lens, _student_rate(ctx), ctx.teacher.subsampling
        )
        total = None
        for (s, t), proj in zip(self.pairs, self.proj):
            k = len(ctx.enc.layer_outputs) if s == -1 else s
            _layer(ctx.enc.layer_outputs, s, "student")  # range check
            student, teacher = ctx.enc.layer(k), _layer(t_layers, t, "teacher")
            frames = min(student.size(1), teacher.size(1))
            d = feature_distance(
                proj(_frames(student, frames)), _frames(teacher, frames), lens, kind=self.kind, reduction="sum"
            )
            total = d if total is None else total + d
        return {"feature": total}


@register_kd_method("attention_relation")
class AttentionRelationKd(KdMethod):
    """Self-attention relation distillation (MiniLM-v2 style): KL between the teacher's and the
    student's Q-Q, K-K and V-V relations at paired layers; works across different dims/heads.

    The q/k/v of a layer are at that layer's own frame rate (multi-rate encoders such as the
    Zipformer run layers at several rates, ``Encoder.layer_info``), with its own valid frames
    (``EncoderOutput.layer_lens``); a pair's layers must run at the same rate, else ``ValueError``
    names the pair and the student's layer rates.

    Args:
        pairs: ``[[student_layer, teacher_layer], ...]`` (1-based, -1 = last); default ``[[-1, -1]]``.
        relations: subset of ``("q", "k", "v")``.
        num_relation_heads: relation heads (default: the teacher's heads).
    """

    needs_teacher = frozenset({"qkv"})
    needs_student = frozenset({"qkv"})

    def __init__(
        self,
        model: nn.Module,
        *,
        pairs: Sequence[Sequence[int]] = ((-1, -1),),
        relations: Sequence[str] = ("q", "k", "v"),
        num_relation_heads: int | None = None,
    ):
        super().__init__()
        self.pairs = [(int(s), int(t)) for s, t in pairs]
        bad = set(relations) - {"q", "k", "v"}
        if bad:
            raise ValueError(f"relations must be among q, k, v; got {sorted(bad)}")
        self.relations = [("q", "k", "v").index(r) for r in relations]
        self.num_relation_heads = num_relation_heads

    def forward(self, ctx: KdContext) -> dict[str, Tensor]:
        from asr_kd.losses.kd import attention_relation_kl

        t_qkv = _teacher_field(ctx, "qkv")
        enc, teacher = ctx.enc, ctx.teacher
        if enc.qkv is None:
            raise ValueError("the student encoder returned no q/k/v (return_qkv)")
        info = getattr(getattr(ctx.model, "encoder", None), "layer_info", None) or []
        total = None
        for s, t in self.pairs:
            sq, tq = _layer(enc.qkv, s, "student"), _layer(t_qkv, t, "teacher")
            ks = len(enc.qkv) if s == -1 else s
            kt = len(t_qkv) if t == -1 else t
            s_lens = enc.layer_lens[ks - 1] if getattr(enc, "layer_lens", None) is not None else enc.out_lens
            t_lens = teacher.layer_lens[kt - 1] if teacher.layer_lens is not None else teacher.lens
            t_rate = teacher.layer_info[kt - 1].subsampling if teacher.layer_info else teacher.subsampling
            hint = (
                f" (student layer rates: {[li.subsampling for li in info]}; pair layers at the same rate)"
                if info
                else ""
            )
            lens = _common_frames(
                f"attention_relation pair [{s}, {t}] (student layer {ks}, teacher layer {kt})",
                s_lens,
                t_lens,
                _student_rate(ctx, ks),
                t_rate,
                hint,
            )
            frames = min(_num_frames(sq, 2), _num_frames(tq, 2))
            sq, tq = _frames(sq, frames, 2), _frames(tq, frames, 2)
            for r in self.relations:
                d = attention_relation_kl(
                    sq[r], tq[r], lens, num_relation_heads=self.num_relation_heads, reduction="sum"
                )
                total = d if total is None else total + d
        return {"attention_relation": total}


def _mlm_scale(num_masked: Tensor, num_utts: int) -> Tensor:
    """Masked-position sums -> the MLM loss scale of ``combine_losses``: / masks * utterances."""
    return num_utts / num_masked.clamp(min=1).to(torch.float64)


@register_kd_method("mlm_kd")
class MlmKd(KdMethod):
    """Decoder frame-level KD from an autoregressive teacher into a Mask-CTC student (AR -> NAR,
    Gong et al. 2022): KL between the teacher's attention-decoder distribution, teacher-forced on the
    reference, and the student MLM's distribution at the masked positions of the student's own MLM
    loss, normalised by the number of masks (and scaled to the batch like the MLM loss:
    ``sum / num_masked * num_utts``).

    Args:
        temperature: tau. loss_type: ``"kl"`` or ``"ce"`` (the paper's Eq. 7 is the CE form; the
            two differ by the teacher entropy, a constant).
    """

    needs_teacher = frozenset({"att_logits"})
    needs_student = frozenset({"heads"})

    def __init__(self, model: nn.Module, *, temperature: float = 1.0, loss_type: str = "kl"):
        super().__init__()
        if getattr(model, "mask_ctc", None) is None:
            raise ValueError("mlm_kd needs a student with a Mask-CTC decoder (model.mask_ctc)")
        self.temperature = float(temperature)
        self.loss_type = loss_type

    def forward(self, ctx: KdContext) -> dict[str, Tensor]:
        from asr_kd.losses.kd import frame_kd

        logits, masked = ctx.heads["mlm_logits"], ctx.heads["mlm_masked"]
        teacher = _teacher_field(ctx, "att_logits")[:, : logits.size(1)]
        if teacher.size(1) < logits.size(1):
            raise ValueError("teacher attention logits shorter than the student's MLM positions")
        mask = masked.ys_out != -1
        total = frame_kd(
            logits, teacher, None, mask=mask, temperature=self.temperature, loss_type=self.loss_type, reduction="sum"
        )
        return {"mlm_kd": total * _mlm_scale(masked.num_masked.sum(), len(ctx.tokens)).to(total.dtype)}


@register_kd_method("mlm_seq_kd")
class MlmSeqKd(KdMethod):
    """Decoder sequence-level KD on the teacher's n-best (AR -> NAR): each hypothesis y_i (weight
    ``w_i = softmax(scores / temperature)`` over the n-best, Eq. 9) is masked like a training target
    and the student MLM's cross-entropy at its masked positions is averaged over them:

        loss = sum_n sum_i w_ni * (1 / M_ni) * sum_{j masked} -log p_mlm(y_nij | y_obs, H_n)

    Empty hypotheses carry no MLM target and are skipped (their weight is not redistributed).

    Args:
        temperature: of the n-best weights. seed: the masking RNG seed offset (masks are drawn from a
            generator seeded by ``seed + step``, reproducible under resume).
    """

    needs_teacher = frozenset({"nbest"})

    def __init__(self, model: nn.Module, *, temperature: float = 1.0, seed: int = 0):
        super().__init__()
        if getattr(model, "mask_ctc", None) is None:
            raise ValueError("mlm_seq_kd needs a student with a Mask-CTC decoder (model.mask_ctc)")
        self.temperature = float(temperature)
        self.seed = int(seed)

    def forward(self, ctx: KdContext) -> dict[str, Tensor]:
        from asr_kd.losses.kd import nbest_weights
        from asr_kd.losses.masking import mask_tokens

        nbest = _teacher_field(ctx, "nbest")
        weights = nbest_weights(_teacher_field(ctx, "nbest_scores"), self.temperature)
        rows, hyps, ws = [], [], []
        for n, (hs, w) in enumerate(zip(nbest, weights)):
            for h, wi in zip(hs, w.tolist()):
                if len(h) > 0:
                    rows.append(n)
                    hyps.append(list(h))
                    ws.append(wi)
        enc = ctx.enc
        if not hyps:
            return {"mlm_seq_kd": enc.out.sum() * 0.0}
        decoder = ctx.model.mask_ctc
        g = torch.Generator().manual_seed(self.seed + int(ctx.step))
        masked = mask_tokens(hyps, decoder.mask_id, generator=g, device=enc.out.device)
        idx = torch.tensor(rows, device=enc.out.device)
        logits = decoder(enc.out.index_select(0, idx), enc.out_lens.index_select(0, idx), masked.ys_in)
        logp = logits.float().log_softmax(-1)
        tgt = masked.ys_out
        valid = tgt != -1
        nll = -logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        nll = torch.where(valid, nll, torch.zeros_like(nll)).sum(1) / masked.num_masked.clamp(min=1)
        w = torch.tensor(ws, dtype=nll.dtype, device=nll.device)
        return {"mlm_seq_kd": (w * nll).sum()}
