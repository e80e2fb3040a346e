"""Teachers for knowledge distillation: what a teacher gives a KD method, and the online ASR teacher.

A teacher turns a training batch (schema: :mod:`asr_kd.data.dataset`) into a :class:`TeacherOutput`.
Two kinds:

- **online** teachers run a frozen model inside the training step, without gradients:
  :class:`AsrTeacher` (another asr_kd model, loaded from a checkpoint with one config line) and
  :class:`asr_kd.kd.hf.HfTextTeacher` (a Hugging Face BERT-family encoder over the transcripts);
- **offline** teachers read targets that were pre-computed once and stored with the cuts
  (:mod:`asr_kd.kd.offline`), so the student trains without running the teacher.

Config (the ``kd.teacher`` section of a training config, built by :func:`build_teacher`)::

    kd:
      teacher: {type: asr, checkpoint: exp/conformer_ctc_s/averaged.pt}     # one line
      teacher: {type: asr, checkpoint: pretrained/conformer_ctc_s}           # a pretrained-model bundle
      teacher: {type: hf_text, model_dir: null, layers: [6]}                 # BERT-family text encoder
      teacher: {type: offline, fields: [kd_ctc_topk]}                        # targets in the cuts
      teacher: {type: self}                                                  # the student itself (self-KD)
      teacher: {type: hf_mlm, model_dir: exp/mlm}                            # a masked LM (asr_kd.kd.mlm)
      teacher: {type: offline_mlm}                                           # its targets in the cuts
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TeacherOutput", "Teacher", "AsrTeacher", "build_teacher", "register_teacher", "TEACHERS"]


@dataclass
class TeacherOutput:
    """What a teacher provides for one batch (any subset; KD methods check what they need).

    Attributes:
        ctc_logits: (N, T', V) the teacher's CTC logits (or log-probs) on the batch, rows in batch order.
        ctc_topk: ``(values, indices)``, each (N, T', K): the teacher's top-k CTC log-probs (offline).
        lens: (N,) valid teacher frames T'_n.
        subsampling: input frames per teacher frame (the encoder's ``subsampling_factor``), None
            when unknown.
        layer_outputs: per encoder layer (N, T', D_t), at the output frame rate (``EncoderOutput.layer``).
        attn: per encoder layer (N, H, T'_k, T'_k) attention weights, at the layer's own rate.
        qkv: per encoder layer ``(q, k, v)``, each (N, H, T'_k, Dh), at the layer's own rate.
        layer_info: the teacher encoder's ``Encoder.layer_info`` (per layer its dim and rate; None:
            every layer at ``subsampling``).
        layer_lens: per encoder layer (N,) valid frames T'_k of ``attn`` / ``qkv`` (None: ``lens``).
        att_logits: (N, S_max + 1, V) the teacher's attention-decoder logits teacher-forced on the
            reference (``sos + y``): position j predicts token j (the last valid position eos).
        nbest: per utterance, the teacher's n-best token sequences (no blank/sos/eos).
        nbest_scores: per utterance, their log-scores (same order).
        text_hidden: per chosen layer (N, S_t, D_t) hidden states of a text teacher.
        text_mask: (N, S_t) bool, valid text-teacher positions.
        extra: anything else (method-specific); an ``asr`` teacher asked for ``"encoder_out"`` puts its
            (N, T', D) encoder output there.
    """

    ctc_logits: Tensor | None = None
    ctc_topk: tuple[Tensor, Tensor] | None = None
    lens: Tensor | None = None
    subsampling: int | None = None
    layer_outputs: list[Tensor] | None = None
    attn: list[Tensor] | None = None
    qkv: list[tuple[Tensor, Tensor, Tensor]] | None = None
    att_logits: Tensor | None = None
    nbest: list[list[list[int]]] | None = None
    nbest_scores: list[list[float]] | None = None
    text_hidden: list[Tensor] | None = None
    text_mask: Tensor | None = None
    layer_info: list[Any] | None = None
    layer_lens: list[Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Teacher(nn.Module):
    """Base class: ``teacher(batch, needs) -> TeacherOutput``.

    ``needs`` is the set of :class:`TeacherOutput` fields the configured KD methods ask for, so a
    teacher computes only those. Online teachers are frozen: :meth:`train` keeps them in eval mode,
    their parameters never require grad, and :meth:`forward` runs under ``torch.no_grad()``.
    """

    online: bool = True

    def train(self, mode: bool = True) -> Teacher:  # noqa: D102 - frozen: always eval
        return super().train(False)

    def forward(self, batch: Mapping[str, Any], needs: set[str]) -> TeacherOutput:  # pragma: no cover
        raise NotImplementedError


TEACHERS: dict[str, Callable[..., Teacher]] = {}


def register_teacher(name: str):
    """Class decorator: make a teacher buildable by ``{type: name, ...}``."""

    def deco(cls):
        if name in TEACHERS:
            raise ValueError(f"teacher type {name!r} registered twice")
        TEACHERS[name] = cls
        return cls

    return deco


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


#: the lattice n-best of a teacher is the K best word sequences (decoding's default samples them)
_NBEST_DEFAULTS = {"nbest_mode": "exact"}


@register_teacher("asr")
class AsrTeacher(Teacher):
    """An asr_kd :class:`~asr_kd.models.asr_model.AsrModel` as a frozen online teacher.

    Args:
        model: the teacher model (frozen here).
        nbest_method, nbest_size: how :attr:`TeacherOutput.nbest` is produced when a method needs it
            (a method of :mod:`asr_kd.decoding.search`, e.g. ``"ctc-prefix-beam"`` or
            ``"attention-beam"``, or the HLG lattice n-best ``"nbest"`` / ``"nbest-rescoring"``, whose
            word sequences come spelled in the model's tokens), and N (the beam, and ``num_paths``).
        nbest_options: further :class:`~asr_kd.decoding.search.SearchOptions` fields of that method,
            e.g. ``{"lang_dir": ..., "arpa": ..., "keep_epsilon": True}`` for the HLG methods (whose
            n-best is the exact K best, ``nbest_mode="exact"``, unless set here).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        nbest_method: str = "ctc-prefix-beam",
        nbest_size: int = 10,
        nbest_options: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.model = _freeze(model)
        self.nbest_method = nbest_method
        self.nbest_size = int(nbest_size)
        self.nbest_options = dict(nbest_options or {})
        self.checkpoint: str | None = None  # where it was loaded from (named in errors)
        self.eval()

    @classmethod
    def from_checkpoint(cls, checkpoint: str, device: str | torch.device = "cpu", **kwargs: Any) -> AsrTeacher:
        """Load a training checkpoint, an averaged model or a pretrained-model bundle directory
        (``asr_kd.bin.export --bundle``; fp16 weights become an fp32 model, a broken bundle raises
        :class:`asr_kd.training.asr_task.BundleError` naming the file) as a teacher
        (``weights_only=True``)."""
        from asr_kd.training.asr_task import load_asr_model

        model, _ = load_asr_model(checkpoint, device=device)
        teacher = cls(model, **kwargs)
        teacher.checkpoint = str(checkpoint)
        return teacher

    @torch.no_grad()
    def forward(self, batch: Mapping[str, Any], needs: set[str]) -> TeacherOutput:
        x, x_lens = batch["inputs"], batch["feature_lens"]
        want_attn = "attn" in needs
        want_qkv = "qkv" in needs
        enc = self.model.encode(x, x_lens, return_attn=want_attn, return_qkv=want_qkv)
        encoder = self.model.encoder
        rate = getattr(encoder, "subsampling_factor", None)
        out = TeacherOutput(
            lens=enc.out_lens,
            subsampling=int(rate) if rate else None,
            layer_info=list(getattr(encoder, "layer_info", None) or []) or None,
            layer_lens=list(enc.layer_lens) if getattr(enc, "layer_lens", None) else None,
        )
        if "ctc_logits" in needs:
            if self.model.ctc is None:
                raise ValueError("the KD method needs teacher CTC posteriors but the teacher has no CTC head")
            out.ctc_logits = self.model.ctc(enc.out)
        if "encoder_out" in needs:  # (N, T', D) the encoder output (transducer KD runs the teacher's joiner on it)
            out.extra["encoder_out"] = enc.out
        if "layer_outputs" in needs:
            # at the output frame rate (multi-rate encoders resample), each at its own dim
            out.layer_outputs = [enc.layer(k) for k in range(1, len(enc.layer_outputs) + 1)]
        if want_attn:
            out.attn = list(enc.attn)
        if want_qkv:
            out.qkv = list(enc.qkv)
        if "att_logits" in needs:
            if self.model.attention_decoder is None:
                raise ValueError("the KD method needs the teacher's attention decoder, which it lacks")
            from asr_kd.models.heads.attention_decoder import add_sos_eos

            ys_in, _ = add_sos_eos(
                batch["supervisions"]["tokens"], self.model.sos_id, self.model.eos_id, device=enc.out.device
            )
            out.att_logits = self.model.attention_decoder(enc.out, enc.out_lens, ys_in)
        if "nbest" in needs:
            from asr_kd.decoding.search import SearchOptions, decode_nbest

            out.nbest, out.nbest_scores = decode_nbest(
                self.model,
                x,
                x_lens,
                self.nbest_method,
                SearchOptions(
                    **{**_NBEST_DEFAULTS, "beam": self.nbest_size, "num_paths": self.nbest_size, **self.nbest_options}
                ),
                nbest=self.nbest_size,
                encoder_out=enc,
            )
        return out


def _check_teacher_keys(cls: type, cfg: Mapping[str, Any], extra: tuple[str, ...] = ()) -> None:
    """Reject ``kd.teacher`` keys that ``cls`` does not take, naming them and the known ones (the check of
    every config section, :func:`asr_kd.training.config.check_section`); ``extra``: keys read before
    construction (an ``asr`` teacher's ``checkpoint``). A class taking ``**kwargs`` is not checked."""
    import inspect

    from asr_kd.training.config import check_section

    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = {n: Any for n in params if n not in ("self", "model")}
    known.update({k: Any for k in (*extra, "type")})
    check_section(cfg, known, "kd.teacher")


#: teacher types registered by modules imported only when such a teacher is configured
_LAZY_TEACHERS = {
    "hf_text": "asr_kd.kd.hf",
    "offline": "asr_kd.kd.offline",
    "hf_mlm": "asr_kd.kd.mlm",
    "offline_mlm": "asr_kd.kd.mlm",
    "offline_repr": "asr_kd.kd.repr",
}


def build_teacher(config: Mapping[str, Any] | None, device: str | torch.device = "cpu") -> Teacher | None:
    """A teacher from its config section (None or ``{type: self}``: no separate teacher)."""
    if config is None:
        return None
    cfg = dict(config)
    kind = cfg.pop("type", "asr")
    if kind == "self":
        return None
    if kind not in TEACHERS and kind in _LAZY_TEACHERS:
        import importlib

        importlib.import_module(_LAZY_TEACHERS[kind])  # registers itself; imports transformers lazily
    if kind not in TEACHERS:
        raise ValueError(
            f"unknown teacher type {kind!r}; known: {sorted(set(TEACHERS) | set(_LAZY_TEACHERS) | {'self'})}"
        )
    cls = TEACHERS[kind]
    _check_teacher_keys(cls, cfg, extra=("checkpoint",) if kind == "asr" else ())
    if kind == "asr":
        checkpoint = cfg.pop("checkpoint", None)
        if checkpoint is None:
            raise ValueError("an 'asr' teacher needs 'checkpoint: <path>' (a checkpoint file or a bundle directory)")
        return AsrTeacher.from_checkpoint(checkpoint, device=device, **cfg)
    return cls(**cfg).to(device)
