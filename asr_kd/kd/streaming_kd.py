"""Streaming KD through auxiliary non-streaming layers (Shim et al., arXiv 2308.16415): a full-context
teacher's layers distilled into a causal, chunked student, through a training-only branch on each chosen
student layer that sees the whole utterance, as the teacher does.

On student layer ``s`` paired with teacher layer ``l`` (``layers``), the branch (:class:`AuxBranch`) is

    h_s (N, T', D_s) --in_proj--> one full-attention Transformer layer --out_proj--> z (N, T', D_t)
    h_s (N, T', D_s) --in_proj--> unidirectional LSTM --apc_proj--> p (N, T', D_t)

and the losses against the teacher's layer ``l`` output ``y`` (N, T', D_t), all batch sums over the valid
frames ``t < T'_n`` both sides have:

- ``skd_l1`` / ``skd_cos``: feature distance ``mean_d |z - y|`` and ``1 - cos(z, y)`` per frame
  (:func:`asr_kd.losses.kd.feature_distance`);
- ``skd_rel``: the MiniLMv2 self-attention relation KL of the Q-Q, K-K and V-V relations (``relations``),
  student Q/K/V from the branch's Transformer layer, teacher Q/K/V from its layer ``l``, both split into
  ``num_relation_heads`` relation heads (:func:`asr_kd.losses.kd.attention_relation_kl`);
- ``skd_apc``: autoregressive predictive coding: ``mean_d |p_t - y_{t+N}|`` (``apc_shift`` N) over the
  frames ``t < T'_n - N`` (the last N frames of each utterance have no target and are masked).

The LSTM reads the streaming layer ``h_s`` (``apc_input: student``), so the prediction of the teacher's
future is made from the past only, as the streaming student must; ``apc_input: branch`` feeds it the
Transformer layer's output instead (which has seen the future: the task becomes easier and teaches less).

Direct layer KD (``mode: direct``, the ablation): no branch; the same losses on the streaming layer
itself: ``z = proj(h_s)`` (a linear projection to the teacher's dim, identity when equal), the student
layer's own Q/K/V (``Encoder`` capability ``qkv``) and a linear APC predictor ``p = apc_proj(h_s)``.

Frame rates. Everything is compared at the common rate, the encoder output rate of both models
(``Encoder.subsampling_factor``, 4 = 25 Hz for the Zipformer); the teacher and student output rates must
be equal. Layer features are taken at the output rate (``EncoderOutput.layer``: a Zipformer layer at a
slower stack is repeated, a faster one averaged over pairs of frames); a layer's Q/K/V (at the layer's own
rate) are brought to the output rate the same way (:func:`asr_kd.models.encoder.base.resample_frames`);
a layer whose rate is not an integer multiple or divisor of the output rate is refused at start-up.

The branch modules live in the student's ``kd_aux`` (training-only): export, averaging and loading a
model for decoding drop them, so the deployed student is the plain streaming model.

Config (``kd.methods``; ``kd.teacher: {type: asr, checkpoint: <full-context transducer>}``)::

    - {name: streaming_kd, weight: 1.0, layers: [2, 4, 6, 8], mode: branch,
       l1_weight: 1.0, cosine_weight: 1.0, relation_weight: 1.0, apc_weight: 1.0, apc_shift: 2,
       relations: [q, k, v], num_relation_heads: 4, d_model: 144, heads: 4, d_ff: 576, lstm_dim: 144}

``layers``: 1-based student layers paired with the teacher layer of the same index, or explicit
``[student, teacher]`` pairs (-1 = the last layer). A term whose weight is 0 is not computed.

The student is trained with ``training.chunk`` (:class:`asr_kd.training.asr_task.ChunkConfig`); the teacher
always runs with full context. :func:`chunk_from_ms` turns a chunk / left context in milliseconds into the
encoder's units and refuses values its subsampling cannot use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from asr_kd.kd.methods import KdContext, KdMethod, _common_frames, _teacher_field, register_kd_method

__all__ = [
    "AuxBranch",
    "BranchTransformerLayer",
    "StreamingKd",
    "apc_l1",
    "chunk_from_ms",
    "layer_pairs",
    "qkv_at_rate",
]

log = logging.getLogger(__name__)

#: ``mode`` values of :class:`StreamingKd`
MODES = ("branch", "direct")
#: ``apc_input`` values of :class:`StreamingKd`
APC_INPUTS = ("student", "branch")

#: input frames per second of the fbank features every encoder reads (10 ms shift)
FBANK_FRAMES_PER_SECOND = 100


def chunk_from_ms(encoder: Any, chunk_ms: float, left_context_ms: float) -> tuple[int, int]:
    """``(chunk_size, left_context)`` in the encoder's units (output frames; chunks) for a chunk of
    ``chunk_ms`` and a left context of ``left_context_ms`` milliseconds (-1: unlimited).

    Raises ``ValueError`` when the chunk is not a whole number of output frames (40 ms at 25 Hz), when the
    encoder cannot use that many (:meth:`~asr_kd.models.encoder.base.Encoder.check_chunk_size`: e.g. a
    Zipformer needs a multiple of half its slowest stack's factor), or when the left context is not a
    whole number of chunks.
    """
    frame_ms = 1000.0 * int(encoder.subsampling_factor) / FBANK_FRAMES_PER_SECOND
    c = float(chunk_ms) / frame_ms
    if chunk_ms <= 0 or abs(c - round(c)) > 1e-6:
        raise ValueError(
            f"chunk of {chunk_ms} ms: {type(encoder).__name__} output frames are {frame_ms:g} ms "
            f"(subsampling {encoder.subsampling_factor}); use a positive multiple of {frame_ms:g} ms"
        )
    chunk = int(round(c))
    encoder.check_chunk_size(chunk, -1)
    if left_context_ms == -1:
        left = -1
    else:
        lc = float(left_context_ms) / (chunk * frame_ms)
        if left_context_ms < 0 or abs(lc - round(lc)) > 1e-6:
            raise ValueError(
                f"left context of {left_context_ms} ms is not a whole number of {chunk * frame_ms:g} ms chunks "
                "(the encoder counts left context in chunks); use a multiple of the chunk, or -1"
            )
        left = int(round(lc))
    encoder.check_chunk_size(chunk, left)
    return chunk, left


def layer_pairs(layers: Any, num_student: int, num_teacher: int | None = None) -> list[tuple[int, int]]:
    """``layers`` config -> ``[(student, teacher), ...]``, 1-based, ``-1`` resolved to the last layer.

    An int ``l`` pairs student layer ``l`` with teacher layer ``l``; ``[s, t]`` pairs them explicitly.
    Raises ``ValueError`` for an empty mapping, a layer outside ``1..num_*`` (or -1), a mapping that
    needs more teacher layers than the teacher has, or a student layer given twice.
    """
    if isinstance(layers, (int, str)):
        layers = [layers]
    if not layers:
        raise ValueError("streaming_kd: layers must not be empty")
    pairs = []
    for item in layers:
        if isinstance(item, Sequence) and not isinstance(item, str):
            if len(item) != 2:
                raise ValueError(f"streaming_kd: a layer pair is [student, teacher], got {list(item)}")
            s, t = int(item[0]), int(item[1])
        else:
            s = t = int(item)
        pairs.append((s, t))
    out = []
    for s, t in pairs:
        s = num_student if s == -1 else s
        if not 1 <= s <= num_student:
            raise ValueError(f"streaming_kd: student layer {s} out of range 1..{num_student} (or -1)")
        if num_teacher is not None:
            t = num_teacher if t == -1 else t
            if not 1 <= t <= num_teacher:
                raise ValueError(
                    f"streaming_kd: the layer mapping {pairs} needs teacher layer {t}, but the teacher has "
                    f"{num_teacher} layers (the student {num_student}); map the student's layers onto 1..{num_teacher}"
                )
        out.append((s, t))
    seen = [s for s, _ in out]
    if len(set(seen)) != len(seen):
        raise ValueError(f"streaming_kd: student layer given twice in {pairs}")
    return out


def _check_rate(who: str, rate: int, out_rate: int) -> None:
    if rate % out_rate and out_rate % rate:
        raise ValueError(
            f"streaming_kd: {who} runs at {rate} input frames per frame, which cannot be brought to the common "
            f"rate of {out_rate} (neither a multiple nor a divisor)"
        )


def qkv_at_rate(
    qkv: tuple[Tensor, Tensor, Tensor], rate: int, out_rate: int, length: int, lens: Tensor | None
) -> tuple[Tensor, ...]:
    """A layer's ``(q, k, v)``, each (N, H, T_k, Dh) at ``rate`` input frames per frame, brought to
    ``out_rate``: each (N, H, length, Dh) (:func:`~asr_kd.models.encoder.base.resample_frames` on the
    heads' concatenation; ``lens`` (N,) valid frames at ``rate``)."""
    from asr_kd.models.encoder.base import resample_frames

    out = []
    for x in qkv:
        n, h, t, dh = x.shape
        flat = x.transpose(1, 2).reshape(n, t, h * dh)
        flat = resample_frames(flat, int(rate), int(out_rate), length, lens)
        out.append(flat.reshape(n, length, h, dh).transpose(1, 2))
    return tuple(out)


def apc_l1(pred: Tensor, target: Tensor, lens: Tensor, shift: int) -> Tensor:
    """APC loss ``sum_n sum_{t < lens[n] - shift} mean_d |pred[n, t] - target[n, t + shift]|``.

    Args:
        pred: (N, T, D) predictions made at frame t; target: (N, T, D) teacher features (detached).
        lens: (N,) valid frames of both; shift: N >= 1 frames ahead.
    Returns:
        a scalar (a batch sum; the last ``shift`` valid frames of each utterance, which have no target,
        and the padding contribute 0).
    """
    from asr_kd.losses.kd import feature_distance

    if shift < 1:
        raise ValueError(f"apc_shift must be >= 1, got {shift}")
    t = pred.size(1)
    if t <= shift:
        return pred.sum() * 0.0
    return feature_distance(
        pred[:, : t - shift], target[:, shift:], (lens - shift).clamp(min=0), kind="l1", reduction="sum"
    )


class BranchTransformerLayer(nn.Module):
    """A pre-LayerNorm Transformer encoder layer with full (non-causal) self-attention that also returns
    its per-head queries, keys and values.

    ``forward(x (N, T, D), lens (N,)) -> (y (N, T, D), (q, k, v) each (N, H, T, D / H))``; padded keys are
    masked. No positional encoding: its input, a convolution-bearing encoder layer, already carries position.
    """

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        from asr_kd.models.heads.transformer import MultiHeadAttention

        self.norm1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.SiLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model), nn.Dropout(dropout)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        n, t, _ = x.shape
        mask = (torch.arange(t, device=x.device)[None, :] < lens[:, None].to(x.device))[:, None, :]  # (N, 1, T)
        a = self.norm1(x)
        k, v = self.attn.project_kv(a, a)
        q = self.attn.q_proj(a).view(n, t, self.attn.h, self.attn.dh).transpose(1, 2)
        x = x + self.drop(self.attn.attend(a, k, v, mask))
        x = x + self.ff(self.norm2(x))
        return x, (q, k, v)


class AuxBranch(nn.Module):
    """The auxiliary non-streaming branch of one student layer (module docstring).

    Args:
        d_in: D_s of the student layer; d_out: D_t of the teacher layer.
        d_model, heads, d_ff, dropout: the Transformer layer.
        lstm_dim: hidden size of the unidirectional LSTM (0: no LSTM, no APC).
        apc_input: ``"student"`` (the LSTM reads the streaming layer) or ``"branch"``.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        d_model: int = 144,
        heads: int = 4,
        d_ff: int = 576,
        dropout: float = 0.0,
        lstm_dim: int = 144,
        apc_input: str = "student",
    ):
        super().__init__()
        self.in_proj = nn.Linear(d_in, d_model) if d_in != d_model else nn.Identity()
        self.transformer = BranchTransformerLayer(d_model, heads, d_ff, dropout)
        self.out_proj = nn.Linear(d_model, d_out)
        self.apc_input = apc_input
        if lstm_dim > 0:
            self.lstm = nn.LSTM(d_model, lstm_dim, batch_first=True)
            self.apc_proj = nn.Linear(lstm_dim, d_out)
        else:
            self.lstm = None

    def forward(self, h: Tensor, lens: Tensor, need_apc: bool = True) -> dict[str, Any]:
        """h (N, T, D_s), lens (N,) -> ``{"feature": (N, T, D_t), "qkv": (q, k, v), "apc": (N, T, D_t) | None}``."""
        a = self.in_proj(h)
        y, qkv = self.transformer(a, lens)
        out = {"feature": self.out_proj(y), "qkv": qkv, "apc": None}
        if need_apc and self.lstm is not None:
            src = a if self.apc_input == "student" else y
            out["apc"] = self.apc_proj(self.lstm(src)[0])
        return out


def _int_list(v: Any, n: int, who: str) -> list[int]:
    if isinstance(v, int):
        return [v] * n
    vals = [int(x) for x in v]
    if len(vals) != n:
        raise ValueError(f"streaming_kd: {len(vals)} {who} for {n} layer pairs")
    return vals


@register_kd_method("streaming_kd")
class StreamingKd(KdMethod):
    """Layer-wise KD from a full-context teacher into a streaming student (module docstring).

    Args:
        layers: student layers (paired with the same teacher layer) or ``[student, teacher]`` pairs.
        mode: ``"branch"`` (auxiliary non-streaming branch) or ``"direct"`` (the streaming layers).
        l1_weight, cosine_weight, relation_weight, apc_weight: the terms' weights (0: not computed).
        relations: subset of ``q, k, v``; num_relation_heads: relation heads (default the teacher layer's).
        apc_shift: N, frames ahead (at the common rate) the APC predictor targets.
        apc_input: ``"student"`` or ``"branch"`` (what the LSTM reads).
        d_model, heads, d_ff, dropout, lstm_dim: the branch's sizes.
        teacher_dims: D_t per pair (an int or a list); default read from the teacher at start-up
            (:meth:`check_teacher`).
        require_causal: refuse a student encoder that is not causal (default true: the method distils a
            streaming student).

    Losses (batch sums, already times their term weights): ``skd_l1``, ``skd_cos``, ``skd_rel``,
    ``skd_apc``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        layers: Any = (-1,),
        mode: str = "branch",
        l1_weight: float = 1.0,
        cosine_weight: float = 1.0,
        relation_weight: float = 0.0,
        apc_weight: float = 0.0,
        relations: Sequence[str] = ("q", "k", "v"),
        num_relation_heads: int | None = None,
        apc_shift: int = 2,
        apc_input: str = "student",
        d_model: int = 144,
        heads: int = 4,
        d_ff: int = 576,
        dropout: float = 0.0,
        lstm_dim: int = 144,
        teacher_dims: Any = None,
        require_causal: bool = True,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"streaming_kd: mode must be one of {MODES}, got {mode!r}")
        if apc_input not in APC_INPUTS:
            raise ValueError(f"streaming_kd: apc_input must be one of {APC_INPUTS}, got {apc_input!r}")
        bad = set(relations) - {"q", "k", "v"}
        if bad or not relations:
            raise ValueError(f"streaming_kd: relations must be a non-empty subset of q, k, v; got {list(relations)}")
        encoder = model.encoder
        if require_causal and not getattr(encoder, "causal", False):
            raise ValueError(
                f"streaming_kd distils a streaming student, but the student encoder ({type(encoder).__name__}) is "
                "not causal: set model.encoder.causal: true (and training.chunk), or require_causal: false"
            )
        self.mode = mode
        self.weights = {
            "skd_l1": float(l1_weight),
            "skd_cos": float(cosine_weight),
            "skd_rel": float(relation_weight),
            "skd_apc": float(apc_weight),
        }
        if not any(self.weights.values()):
            raise ValueError("streaming_kd: every term weight is 0 (l1, cosine, relation, apc)")
        self.relations = [("q", "k", "v").index(r) for r in relations]
        self.num_relation_heads = num_relation_heads
        self.apc_shift = int(apc_shift)
        if self.apc_shift < 1:
            raise ValueError(f"streaming_kd: apc_shift must be >= 1, got {apc_shift}")
        self.apc_input = apc_input
        self.branch_args = dict(d_model=d_model, heads=heads, d_ff=d_ff, dropout=dropout, lstm_dim=lstm_dim)
        if self.weights["skd_apc"] and mode == "branch" and lstm_dim <= 0:
            raise ValueError("streaming_kd: apc_weight > 0 needs an LSTM (lstm_dim > 0)")
        self.info = list(encoder.layer_info)
        self.out_rate = int(encoder.subsampling_factor)
        self.pairs = layer_pairs(layers, len(self.info))
        self.raw_pairs = layers
        for s, _ in self.pairs:
            _check_rate(f"student layer {s}", int(self.info[s - 1].subsampling), self.out_rate)
        need_t = {"layer_outputs"}
        if self.weights["skd_rel"]:
            need_t.add("qkv")
            if mode == "direct":
                encoder.require("qkv", "streaming_kd (mode: direct, relation_weight > 0)")
        self.needs_teacher = frozenset(need_t)
        self.needs_student = frozenset({"qkv"} if (mode == "direct" and self.weights["skd_rel"]) else set())
        self.branches = nn.ModuleList()
        self.bound = False
        if teacher_dims is not None:
            self._build(_int_list(teacher_dims, len(self.pairs), "teacher_dims"))

    # ------------------------------------------------------------------ start-up
    def _build(self, dims: Sequence[int]) -> None:
        mods = []
        for (s, _), d_t in zip(self.pairs, dims):
            d_s = int(self.info[s - 1].dim)
            if self.mode == "branch":
                mods.append(AuxBranch(d_s, int(d_t), apc_input=self.apc_input, **self.branch_args))
            else:
                m = nn.Module()
                m.proj = nn.Linear(d_s, int(d_t)) if d_s != int(d_t) else nn.Identity()
                m.apc_proj = nn.Linear(d_s, int(d_t)) if self.weights["skd_apc"] else None
                mods.append(m)
        self.branches = nn.ModuleList(mods)
        self.bound = True

    def bind_teacher(self, num_layers: int, layer_info: Sequence[Any], subsampling: int) -> None:
        """Check the layer mapping and frame rates against the teacher and build the modules that
        depend on its dims (``ValueError`` for a mapping the teacher's layer count cannot cover, an
        output rate that differs from the student's, or a layer rate that cannot be brought to it)."""
        self.pairs = layer_pairs(self.raw_pairs, len(self.info), int(num_layers))
        if int(subsampling) != self.out_rate:
            raise ValueError(
                f"streaming_kd: the teacher's output runs at {subsampling} input frames per frame and the "
                f"student's at {self.out_rate}; layer KD needs the same output frame rate"
            )
        for _, t in self.pairs:
            _check_rate(f"teacher layer {t}", int(layer_info[t - 1].subsampling), self.out_rate)
        dims = [int(layer_info[t - 1].dim) for _, t in self.pairs]
        if self.bound:
            want = [self._teacher_dim(i) for i in range(len(self.pairs))]
            if want != dims:
                raise ValueError(f"streaming_kd: teacher_dims {want} but the teacher's layers have {dims}")
            return
        device = next((p.device for p in self.parameters()), None)
        self._build(dims)
        if device is not None:
            self.to(device)

    def _teacher_dim(self, i: int) -> int:
        m = self.branches[i]
        proj = m.out_proj if self.mode == "branch" else m.proj
        return int(proj.out_features) if isinstance(proj, nn.Linear) else int(self.info[self.pairs[i][0] - 1].dim)

    def check_teacher(self, teacher: Any) -> None:
        """Start-up check (:func:`asr_kd.kd.task.build_kd_loss_fn`): an online ASR teacher whose layers
        the mapping covers, at the student's output rate; builds the dim-dependent modules."""
        model = getattr(teacher, "model", None)
        encoder = getattr(model, "encoder", None)
        if encoder is None:
            raise ValueError(
                "streaming_kd needs an online ASR teacher (kd.teacher: {type: asr, checkpoint: ...}), got "
                f"{type(teacher).__name__}"
            )
        if self.weights["skd_rel"]:
            encoder.require("qkv", "streaming_kd's teacher (relation_weight > 0)")
        self.bind_teacher(int(encoder.num_layers), list(encoder.layer_info), int(encoder.subsampling_factor))
        log.info("streaming_kd: %s, (student, teacher) layers %s", self.mode, self.pairs)

    # ------------------------------------------------------------------ loss
    def forward(self, ctx: KdContext) -> dict[str, Tensor]:
        from asr_kd.losses.kd import attention_relation_kl, feature_distance

        if not self.bound:
            raise ValueError("streaming_kd: no teacher bound (check_teacher / bind_teacher, or give teacher_dims)")
        t_layers = _teacher_field(ctx, "layer_outputs")
        teacher, enc = ctx.teacher, ctx.enc
        lens = _common_frames(
            "streaming_kd", enc.out_lens, teacher.lens, self.out_rate, teacher.subsampling, " (same output rate)"
        )
        w = self.weights
        sums: dict[str, Tensor] = {}

        def add(key: str, v: Tensor) -> None:
            sums[key] = sums[key] + v if key in sums else v

        for i, (s, t) in enumerate(self.pairs):
            h = enc.layer(s)
            y = t_layers[t - 1]
            frames = min(h.size(1), y.size(1))
            h, y = h[:, :frames], y[:, :frames].detach()
            m = self.branches[i]
            if self.mode == "branch":
                res = m(h, lens, need_apc=bool(w["skd_apc"]))
                z, s_qkv, pred = res["feature"], res["qkv"], res["apc"]
            else:
                z = m.proj(h)
                pred = m.apc_proj(h) if m.apc_proj is not None else None
                s_qkv = None
                if w["skd_rel"]:
                    if enc.qkv is None:
                        raise ValueError("streaming_kd (direct): the student encoder returned no q/k/v")
                    rate = int(self.info[s - 1].subsampling)
                    s_lens = enc.layer_lens[s - 1] if enc.layer_lens is not None else enc.out_lens
                    s_qkv = qkv_at_rate(enc.qkv[s - 1], rate, self.out_rate, frames, s_lens)
            if w["skd_l1"]:
                add("skd_l1", w["skd_l1"] * feature_distance(z, y, lens, kind="l1", reduction="sum"))
            if w["skd_cos"]:
                add("skd_cos", w["skd_cos"] * feature_distance(z, y, lens, kind="cosine", reduction="sum"))
            if w["skd_rel"]:
                t_qkv = _teacher_field(ctx, "qkv")[t - 1]
                info = teacher.layer_info[t - 1] if teacher.layer_info else None
                t_rate = int(info.subsampling) if info is not None else self.out_rate
                t_lens = teacher.layer_lens[t - 1] if teacher.layer_lens is not None else teacher.lens
                t_qkv = qkv_at_rate(t_qkv, t_rate, self.out_rate, frames, t_lens)
                s_qkv = tuple(x[:, :, :frames] for x in s_qkv)
                for r in self.relations:
                    kl = attention_relation_kl(
                        s_qkv[r], t_qkv[r], lens, num_relation_heads=self.num_relation_heads, reduction="sum"
                    )
                    add("skd_rel", w["skd_rel"] * kl)
            if w["skd_apc"]:
                add("skd_apc", w["skd_apc"] * apc_l1(pred, y, lens, self.apc_shift))
        return sums
