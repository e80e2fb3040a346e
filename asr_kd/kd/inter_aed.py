"""interAED-KD (Hentschel et al., arXiv 2401.11700): a masked LM's token distributions distilled into a CTC
student through small auxiliary attention decoders on its final and/or intermediate encoder layers.

Each auxiliary decoder is an :class:`~asr_kd.models.heads.attention_decoder.AttentionDecoder` that
cross-attends to one encoder layer (at the output frame rate, ``EncoderOutput.layer``) and is trained,
teacher-forced on the reference re-tokenised into the teacher's WordPiece units, with

    loss_k = ce_weight * CE(reference) + kl_weight * tau^2 * sum_j KL(q_j || softmax(z_kj / tau))

where q_j is the teacher's distribution for piece j with piece j masked (:mod:`asr_kd.kd.mlm`,
renormalised over its stored top-k) and z_kj the decoder's logits predicting piece j. The final
position (predicting ``[SEP]`` = eos) has CE only. The decoders live in the student's ``kd_aux``: they are
training-only and are dropped by export, by averaging and when a model is loaded for decoding; the
student decodes with its CTC head (greedy, parallel).

Config (``kd.methods``)::

    - {name: inter_aed_kd, layers: [final]}                         # AED-KD: the final layer
    - {name: inter_aed_kd, layers: [3, final], kl_weight: 1.0,      # interAED-KD
       temperature: 1.0, restrict_to: data/text/train.txt}
    - {name: inter_aed_kd, layers: [final], teacher: none}          # auxiliary AED on the reference only

with ``kd.teacher: {type: offline_mlm}`` (targets dumped by :mod:`asr_kd.bin.dump_mlm`) or
``{type: hf_mlm, model_dir: ...}`` (online); ``teacher: none`` needs no ``kd.teacher``.

Vocabulary: the auxiliary decoders predict WordPiece units of ``tokenizer_dir`` (the MLM's folder): all V
of them, or with ``restrict_to: <text file>`` only the pieces that occur in that text (plus the specials);
the teacher's distributions are then restricted to those pieces and renormalised, and reference pieces
outside the subset become ``[UNK]``. The student's CTC keeps its own lang dir: BPE, or the same tokenizer's
WordPiece units (``prepare_lang --token-type wordpiece --tokenizer-dir <tokenizer_dir>``,
:mod:`asr_kd.lm.wordpiece_lang`), so that decoders and CTC share the units.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from asr_kd.kd.methods import KdContext, KdMethod, register_kd_method

__all__ = ["InterAedKd", "topk_kl"]

log = logging.getLogger(__name__)

#: teacher modes of :class:`InterAedKd` (``teacher`` option)
TEACHER_MODES = ("mlm", "none")


def topk_kl(
    student_logits: Tensor,
    values: Tensor,
    indices: Tensor,
    weights: Tensor,
    temperature: float = 1.0,
) -> Tensor:
    """``tau^2 * sum_{n,j} w_nj KL(q_nj || softmax(z_nj / tau))``: q_nj = softmax of the kept teacher
    log-probs ``values[n, j]`` over their K entries (``-inf`` entries dropped); positions whose entries are
    all ``-inf`` contribute 0.

    Args:
        student_logits: (N, L, V) logits z; the only input that gets a gradient.
        values, indices: (N, L, K) teacher log-probs and their class ids (detached here).
        weights: (N, L) float or bool position weights.
    Returns:
        a scalar (the weighted sum).
    """
    values, indices = values.detach(), indices.detach()
    logp_s = (student_logits.float() / temperature).log_softmax(-1).gather(-1, indices)  # (N, L, K)
    keep = torch.isfinite(values)
    # renormalised over the kept entries; a row with none kept (NaN) becomes q = 0 and counts nothing
    logq = values.float().masked_fill(~keep, float("-inf")).log_softmax(-1).masked_fill(~keep, 0.0)
    q = logq.exp() * keep
    per_pos = (q * (logq - logp_s)).sum(-1)  # (N, L)
    return (temperature**2) * (per_pos * weights.to(per_pos.dtype)).sum()


def _layer_key(layer: Any, num_layers: int) -> str:
    if layer in ("final", -1):
        return "final"
    k = int(layer)
    if not 1 <= k <= num_layers:
        raise ValueError(f"layer {layer!r} out of range: 1..{num_layers} or 'final'")
    return f"l{k}"


@register_kd_method("inter_aed_kd")
class InterAedKd(KdMethod):
    """Auxiliary attention decoders on chosen encoder layers, CE to the reference + KL to a masked LM
    (module docstring).

    Args:
        layers: encoder layers to attach a decoder to: 1-based ints and/or ``"final"`` (the encoder output).
        teacher: ``"mlm"`` (KL to the teacher's distributions) or ``"none"`` (CE only: the control).
        tokenizer_dir: the WordPiece tokenizer (the MLM's folder); default the MiniLM package folder.
        restrict_to: a text file, one sentence a line (e.g. the train text): the decoders
            predict only the pieces that occur in it (plus specials). None: the whole vocabulary.
        ce_weight, kl_weight: the two terms' weights (the method's ``weight`` multiplies both).
        temperature: tau of the student softmax in the KL (dump the teacher at the same tau).
        d_model, num_layers, heads, d_ff, dropout: each decoder's size.
        lowercase, max_length: as :class:`~asr_kd.kd.wordpiece.WordPieceVocab`.

    Losses (batch sums): ``aed_ce_<layer>`` and, with a teacher, ``aed_kl_<layer>`` (already times
    ``kl_weight``), ``<layer>`` = ``l<k>`` or ``final``.
    """

    needs_student = frozenset()

    def __init__(
        self,
        model: nn.Module,
        *,
        layers: Sequence[Any] = ("final",),
        teacher: str | None = "mlm",
        tokenizer_dir: str | Path | None = None,
        restrict_to: str | Path | None = None,
        ce_weight: float = 1.0,
        kl_weight: float = 1.0,
        temperature: float = 1.0,
        d_model: int = 256,
        num_layers: int = 1,
        heads: int = 4,
        d_ff: int = 1024,
        dropout: float = 0.1,
        lowercase: bool = True,
        max_length: int = 128,
    ):
        super().__init__()
        from asr_kd.kd.wordpiece import WordPieceVocab
        from asr_kd.models.heads.attention_decoder import AttentionDecoder

        mode = "none" if teacher is None else str(teacher).lower()
        if mode not in TEACHER_MODES:
            raise ValueError(f"inter_aed_kd: teacher must be one of {TEACHER_MODES}, got {teacher!r}")
        self.mode = mode
        self.needs_teacher = frozenset({"mlm_topk"}) if mode == "mlm" else frozenset()
        if isinstance(layers, (str, int)):
            layers = [layers]
        if not layers:
            raise ValueError("inter_aed_kd: layers must not be empty")
        encoder = model.encoder
        n_layers = int(getattr(encoder, "num_layers", len(getattr(encoder, "layer_info", []) or [])))
        info = list(getattr(encoder, "layer_info", None) or [])
        self.vocab = WordPieceVocab(tokenizer_dir, lowercase=lowercase, max_length=max_length)
        self.sub = None
        if restrict_to is not None:
            path = Path(restrict_to)
            if not path.is_file():
                raise FileNotFoundError(f"inter_aed_kd: restrict_to {path} not found")
            with open(path, encoding="utf-8") as f:
                self.sub = self.vocab.corpus_subset(line.strip() for line in f if line.strip())
            log.info("inter_aed_kd: %d of %d WordPiece units occur in %s", len(self.sub), self.vocab.size, path)
        v_out = len(self.sub) if self.sub is not None else self.vocab.size
        self.ce_weight, self.kl_weight = float(ce_weight), float(kl_weight)
        self.temperature = float(temperature)
        if self.temperature <= 0:
            raise ValueError(f"inter_aed_kd: temperature must be > 0, got {temperature}")
        self.keys: list[str] = []
        decoders = {}
        for layer in layers:
            key = _layer_key(layer, n_layers)
            if key in decoders:
                raise ValueError(f"inter_aed_kd: layer {layer!r} given twice")
            dim = (
                int(encoder.output_dim)
                if key == "final"
                else int(info[int(key[1:]) - 1].dim if info else encoder.output_dim)
            )
            decoders[key] = AttentionDecoder(
                v_out, d_model, num_layers, heads, d_ff=d_ff, dropout=dropout, d_memory=dim
            )
            self.keys.append(key)
        self.decoders = nn.ModuleDict(decoders)
        self.sos = self._out_id(self.vocab.cls_id)
        self.eos = self._out_id(self.vocab.sep_id)

    def _out_id(self, full_id: int) -> int:
        return int(self.sub.full_to_sub[full_id]) if self.sub is not None else int(full_id)

    @property
    def output_size(self) -> int:
        """V of the decoders (the whole vocabulary or the corpus subset)."""
        return len(self.sub) if self.sub is not None else self.vocab.size

    # ------------------------------------------------------------------ start-up checks
    def check_teacher(self, teacher: Any) -> None:
        """Refuse a teacher that gives no MLM distributions, or an online one of another vocabulary."""
        if self.mode == "none":
            return
        from asr_kd.data.tokenizer import VocabMismatchError
        from asr_kd.kd.mlm import HfMlmTeacher, OfflineMlmTeacher

        if isinstance(teacher, HfMlmTeacher):
            mine, theirs = self.vocab.fingerprint(), teacher.vocab.fingerprint()
            if mine != theirs:
                raise VocabMismatchError(
                    f"vocabulary mismatch: the hf_mlm teacher {teacher.model_dir} has {theirs['size']} WordPiece "
                    f"units, inter_aed_kd's tokenizer_dir {self.vocab.model_dir} {mine['size']} (or other pieces)"
                )
        elif not isinstance(teacher, OfflineMlmTeacher):
            raise ValueError(
                "inter_aed_kd with teacher: mlm needs kd.teacher {type: offline_mlm} or {type: hf_mlm, model_dir: ...}"
                f", got {type(teacher).__name__}; use teacher: none for the reference-only control"
            )

    def check_offline_cuts(self, cuts: Any, manifest: Any = None) -> bool:
        """The stored MLM targets' vocabulary must be this method's (:func:`asr_kd.kd.mlm.check_mlm_targets`)."""
        if self.mode == "none":
            return False
        from asr_kd.kd.mlm import check_mlm_targets

        return check_mlm_targets(
            cuts,
            self.vocab.fingerprint(),
            manifest=manifest,
            who=f"inter_aed_kd ({self.vocab.model_dir})",
            temperature=self.temperature,
        )

    # ------------------------------------------------------------------ loss
    def _references(self, ctx: KdContext) -> tuple[list[list[int]], Mapping[str, Any] | None]:
        """The reference in WordPiece ids (the teacher's when it gives them), and the teacher's extra."""
        t = ctx.teacher.extra if (self.mode == "mlm" and ctx.teacher is not None) else None
        if self.mode == "mlm" and (t is None or "mlm_topk" not in t):
            raise ValueError("inter_aed_kd needs the teacher's MLM distributions (kd.teacher: offline_mlm or hf_mlm)")
        if t is not None and t.get("mlm_ids") is not None:
            ids = [list(r) for r in t["mlm_ids"]]
        else:
            ids = [i for i, _ in self.vocab.encode(list(ctx.batch["supervisions"]["text"]))]
        return ids, t

    def forward(self, ctx: KdContext) -> dict[str, Tensor]:
        from asr_kd.models.heads.attention_decoder import add_sos_eos

        enc = ctx.enc
        device = enc.out.device
        ids, t = self._references(ctx)
        if len(ids) != enc.out.size(0):
            raise ValueError(f"inter_aed_kd: {len(ids)} references for a batch of {enc.out.size(0)}")
        ys = [self.sub.tokens(r) for r in ids] if self.sub is not None else ids
        ys_in, ys_out = add_sos_eos(ys, self.sos, self.eos, device=device)  # (N, L+1)
        kl_args = None
        if t is not None:
            values, indices = t["mlm_topk"]
            lens = t["mlm_lens"].to(device)
            if lens.tolist() != [len(r) for r in ids]:
                raise ValueError(
                    f"inter_aed_kd: teacher targets for {lens.tolist()} pieces, references of {[len(r) for r in ids]}"
                )
            values, indices = values.to(device), indices.to(device)
            if self.sub is not None:
                values, indices = self.sub.topk(values, indices)
            lmax = ys_in.size(1) - 1
            if values.size(1) < lmax:
                pad = lmax - values.size(1)
                values = torch.nn.functional.pad(values, (0, 0, 0, pad), value=float("-inf"))
                indices = torch.nn.functional.pad(indices, (0, 0, 0, pad))
            w = torch.arange(lmax, device=device)[None, :] < lens[:, None]  # (N, L)
            kl_args = (values[:, :lmax], indices[:, :lmax], w)
        out = {}
        for key in self.keys:
            memory = enc.out if key == "final" else enc.layer(int(key[1:]))
            logits = self.decoders[key](memory, enc.out_lens, ys_in)  # (N, L+1, V_aux)
            ce = torch.nn.functional.cross_entropy(
                logits.float().flatten(0, 1), ys_out.flatten(), ignore_index=-1, reduction="sum"
            )
            out[f"aed_ce_{key}"] = self.ce_weight * ce
            if kl_args is not None:
                v, i, w = kl_args
                kl = topk_kl(logits[:, : v.size(1)], v, i, w, self.temperature)
                out[f"aed_kl_{key}"] = self.kl_weight * kl
        return out
