"""``AsrModel``: an encoder plus any subset of heads (CTC, intermediate CTC, transducer, attention
decoder, Mask-CTC decoder), returning a dict of named, unscaled losses; its config and factory; and
:func:`combine_losses`, the weighted sum training backpropagates.

Dimension legend (docs/DESIGN.md): N batch, T input frames, F feature bins, T' encoder frames,
D encoder dim, S label length, V vocabulary (blank 0, sos = eos = 1 by the tokenizer's layout).

Usage::

    model = build_asr_model({
        "vocab_size": 500,
        "encoder": {"type": "conformer", "preset": "xs", "input_dim": 80},
        "ctc": {},
        "inter_ctc": {"layers": [2]},
        "attention_decoder": {"num_layers": 3, "heads": 4, "d_ff": 1024},
        "weights": {"ctc": 0.3, "att": 0.7, "inter_ctc": 0.3},
    })
    losses = model(x, x_lens, tokens)              # {"ctc", "inter_ctc", "inter_ctc_2", "att",
                                                   #  "num_frames", "num_tokens", "num_utts"}
    loss = combine_losses(losses, model.loss_weights, step)
    (loss / losses["num_utts"]).backward()         # the caller picks the normaliser
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from asr_kd.losses.ce import label_smoothing_loss, masked_lm_loss
from asr_kd.losses.ctc import ctc_loss, pad_token_lists
from asr_kd.losses.masking import mask_tokens
from asr_kd.losses.rnnt import RNNT_BACKENDS, transducer_loss_scales
from asr_kd.models.heads import AttentionDecoder, CtcHead, MaskCtcDecoder, TransducerHead
from asr_kd.models.heads.attention_decoder import add_sos_eos

__all__ = [
    "AsrModel",
    "AsrModelConfig",
    "build_asr_model",
    "build_encoder",
    "combine_losses",
    "default_loss_weights",
    "LOSS_NAMES",
]

#: Loss names :meth:`AsrModel.forward` may return (besides per-layer ``inter_ctc_<k>``).
#: accepted ``mlm_normalize`` values of :func:`combine_losses`
MLM_NORMALIZERS = ("sum", "masks")

LOSS_NAMES = ("ctc", "inter_ctc", "simple", "pruned", "rnnt", "att", "mlm")


class AsrModel(nn.Module):
    """Encoder + heads chosen by the caller (any subset; at least one head).

    Args:
      encoder: an :class:`asr_kd.models.encoder.Encoder` (duck-typed: ``forward`` returning an
        ``EncoderOutput``-like object with ``out``, ``out_lens``, ``layer_outputs``; ``output_dim``;
        ``num_layers``).
      vocab_size: V.
      ctc: final-layer CTC head.
      inter_ctc_layers: 1-based encoder layers with an intermediate CTC loss (InterCTC), each
        strictly below ``encoder.num_layers``.
      inter_ctc_shared: use the final ``ctc`` head on the intermediate layers instead of a separate
        :class:`CtcHead` per layer (default separate: self-KD needs an intermediate head of its own).
      transducer: :class:`TransducerHead`.
      attention_decoder: :class:`AttentionDecoder` (needs ``sos_id``/``eos_id``).
      mask_ctc: :class:`MaskCtcDecoder` (its ``mask_id`` is V).
      blank_id, sos_id, eos_id: special ids (tokenizer layout: 0, 1, 1).
      ctc_backend, ctc_zero_infinity: see :func:`asr_kd.losses.ctc.ctc_loss`.
      transducer_loss: ``"pruned"`` (losses ``simple`` and ``pruned``) or ``"full"`` (``rnnt``;
        the whole (T', U, V) lattice, small models only).
      prune_range, lm_scale, am_scale: pruned RNN-T options (:func:`~asr_kd.losses.rnnt.pruned_rnnt_loss`).
      transducer_backend: ``"fast_rnnt"`` (default) or ``"k2"``, the module computing the transducer
        losses, pruned and full (:data:`asr_kd.losses.rnnt.RNNT_BACKENDS`; same algorithm).
      lsm_weight: label smoothing of the attention-decoder loss.
      loss_weights: default weights for :func:`combine_losses` (``model.loss_weights``); when None,
        :func:`default_loss_weights` of the enabled heads.
    """

    def __init__(
        self,
        encoder: nn.Module,
        vocab_size: int,
        *,
        ctc: CtcHead | None = None,
        inter_ctc_layers: Sequence[int] = (),
        inter_ctc_shared: bool = False,
        transducer: TransducerHead | None = None,
        attention_decoder: AttentionDecoder | None = None,
        mask_ctc: MaskCtcDecoder | None = None,
        blank_id: int = 0,
        sos_id: int = 1,
        eos_id: int = 1,
        ctc_backend: str = "torch",
        ctc_zero_infinity: bool = True,
        transducer_loss: str = "pruned",
        prune_range: int = 5,
        lm_scale: float = 0.25,
        am_scale: float = 0.0,
        transducer_backend: str = "fast_rnnt",
        lsm_weight: float = 0.1,
        inter_ctc_dropout: float = 0.0,
        loss_weights: Mapping[str, float] | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.vocab_size = vocab_size
        self.ctc = ctc
        self.inter_ctc_layers = [int(k) for k in inter_ctc_layers]
        self.inter_ctc_shared = bool(inter_ctc_shared)
        n_layers = int(encoder.num_layers)
        for k in self.inter_ctc_layers:
            if not 1 <= k < n_layers:
                raise ValueError(f"inter-CTC layer {k} must be in [1, {n_layers - 1}] (1-based)")
        if len(set(self.inter_ctc_layers)) != len(self.inter_ctc_layers):
            raise ValueError(f"duplicate inter-CTC layers {self.inter_ctc_layers}")
        if self.inter_ctc_layers and self.inter_ctc_shared and ctc is None:
            raise ValueError("inter_ctc_shared=True needs the final ctc head")
        self.inter_ctc = nn.ModuleDict()
        if not self.inter_ctc_shared:
            for k in self.inter_ctc_layers:
                self.inter_ctc[str(k)] = CtcHead(_layer_dim(encoder, k), vocab_size, inter_ctc_dropout)
        if self.inter_ctc_shared:
            for k in self.inter_ctc_layers:
                if _layer_dim(encoder, k) != int(encoder.output_dim):
                    raise ValueError(
                        f"inter_ctc.shared needs layer {k} at the output dim "
                        f"{encoder.output_dim}, but it has {_layer_dim(encoder, k)}"
                    )
        self.transducer = transducer
        self.attention_decoder = attention_decoder
        self.mask_ctc = mask_ctc
        if not (ctc or self.inter_ctc_layers or transducer or attention_decoder or mask_ctc):
            raise ValueError("AsrModel needs at least one head")
        if transducer_loss not in ("pruned", "full"):
            raise ValueError(f"transducer_loss must be 'pruned' or 'full', got {transducer_loss!r}")
        if transducer_backend not in RNNT_BACKENDS:
            raise ValueError(f"transducer backend must be one of {RNNT_BACKENDS}, got {transducer_backend!r}")
        self.blank_id, self.sos_id, self.eos_id = blank_id, sos_id, eos_id
        self.ctc_backend = ctc_backend
        self.ctc_zero_infinity = ctc_zero_infinity
        self.transducer_loss = transducer_loss
        self.prune_range = prune_range
        self.lm_scale = lm_scale
        self.am_scale = am_scale
        self.transducer_backend = transducer_backend
        self.lsm_weight = lsm_weight
        # training-only modules of KD methods (e.g. projections); dropped by export / load_asr_model
        self.kd_aux = nn.ModuleDict()
        self.loss_weights: dict[str, float] = (
            dict(loss_weights) if loss_weights is not None else default_loss_weights(self.enabled_heads())
        )

    def enabled_heads(self) -> list[str]:
        """Names of the enabled heads, a subset of
        ``["ctc", "inter_ctc", "transducer", "attention_decoder", "mask_ctc"]``."""
        names = []
        for name, on in (
            ("ctc", self.ctc is not None),
            ("inter_ctc", bool(self.inter_ctc_layers)),
            ("transducer", self.transducer is not None),
            ("attention_decoder", self.attention_decoder is not None),
            ("mask_ctc", self.mask_ctc is not None),
        ):
            if on:
                names.append(name)
        return names

    def inter_ctc_head(self, layer: int) -> CtcHead:
        """The CTC head applied to encoder layer ``layer`` (1-based) at the output frame rate,
        ``EncoderOutput.layer(layer)`` (N, T', D_layer)."""
        if layer not in self.inter_ctc_layers:
            raise KeyError(f"no inter-CTC head at layer {layer}; layers: {self.inter_ctc_layers}")
        return self.ctc if self.inter_ctc_shared else self.inter_ctc[str(layer)]

    def submodel(self, layer: int) -> AsrModel:
        """The first ``layer`` encoder layers plus the inter-CTC head of that layer, as a standalone
        CTC model (self-KD's sub-model). Its outputs equal the intermediate head's inside this model;
        ``model.config`` (when this model has one) describes it for :func:`build_asr_model`."""
        self.encoder.require("truncate", "AsrModel.submodel")
        head = copy.deepcopy(self.inter_ctc_head(layer))
        sub_encoder = self.encoder.truncate(layer)
        sub = AsrModel(
            sub_encoder,
            self.vocab_size,
            ctc=head,
            blank_id=self.blank_id,
            sos_id=self.sos_id,
            eos_id=self.eos_id,
            ctc_backend=self.ctc_backend,
            ctc_zero_infinity=self.ctc_zero_infinity,
        )
        cfg = getattr(self, "config", None)
        if cfg is not None:
            sub.config = {
                "vocab_size": self.vocab_size,
                "blank_id": self.blank_id,
                "sos_id": self.sos_id,
                "eos_id": self.eos_id,
                "encoder": {"type": cfg["encoder"].get("type", "conformer"), **sub_encoder.config},
                "ctc": {k: v for k, v in (cfg.get("ctc") or {}).items() if k != "dropout"},
            }
        return sub.train(self.training)

    def encode(self, x: Tensor, x_lens: Tensor, *, chunk_size: int = -1, left_context: int = -1, **kwargs: Any) -> Any:
        """Run the encoder only (decoding, KD): x (N, T, F), x_lens (N,) -> ``EncoderOutput``."""
        return self.encoder(x, x_lens, chunk_size=chunk_size, left_context=left_context, **kwargs)

    def forward(
        self,
        x: Tensor,
        x_lens: Tensor,
        tokens: Sequence[Sequence[int]],
        *,
        chunk_size: int = -1,
        left_context: int = -1,
        return_encoder_output: bool = False,
        mask_generator: torch.Generator | None = None,
        encoder_kwargs: Mapping[str, Any] | None = None,
        return_head_outputs: bool = False,
    ) -> dict[str, Any]:
        """Encode and compute the loss of every enabled head.

        Args:
          x: (N, T, F) features; x_lens: (N,) valid frames.
          tokens: N label sequences (token ids, no blank/sos/eos).
          chunk_size, left_context: passed to the encoder (-1 = full context).
          return_encoder_output: add ``"encoder_out"`` (the ``EncoderOutput``) to the dict.
          encoder_kwargs: extra encoder options (``return_attn``, ``return_qkv``: KD methods).
          return_head_outputs: add ``"head_outputs"``, a dict with the decoders' teacher-forced logits
            for KD methods: ``att_logits`` (N, S_max + 1, V) (position j predicts token j, the last
            valid one eos), ``mlm_logits`` (N, S_max, V) and ``mlm_masked`` (the
            :class:`~asr_kd.losses.masking.MaskedTokens` the MLM loss used).
          mask_generator: ``torch.Generator`` for the Mask-CTC masking (global RNG when None).

        Returns:
          dict with, for the enabled heads, these float32 scalars, each ``-log p`` summed over the
          batch and unscaled: ``ctc``; ``inter_ctc`` (mean over the inter-CTC layers) and
          ``inter_ctc_<k>`` per layer k; ``simple`` and ``pruned`` (pruned RNN-T) or ``rnnt`` (full
          RNN-T); ``att`` (label-smoothed CE over S_n + 1 positions incl. eos); ``mlm`` (CE summed
          over the masked positions). Counts (int64 scalars): ``num_frames`` (sum of T'_n),
          ``num_tokens`` (sum of S_n), ``num_utts`` (N), and ``num_masked`` with ``mlm``.
        """
        if len(tokens) != x.size(0):
            raise ValueError(f"{len(tokens)} token sequences for a batch of {x.size(0)}")
        enc = self.encode(x, x_lens, chunk_size=chunk_size, left_context=left_context, **(encoder_kwargs or {}))
        out, out_lens = enc.out, enc.out_lens
        device = out.device
        targets, target_lens = pad_token_lists(tokens, pad=self.blank_id, device=device)
        losses: dict[str, Any] = {}
        heads: dict[str, Any] = {}

        if self.ctc is not None:
            losses["ctc"] = self._ctc(self.ctc, out, out_lens, tokens)
        if self.inter_ctc_layers:
            per_layer = []
            for k in self.inter_ctc_layers:
                loss = self._ctc(self.inter_ctc_head(k), enc.layer(k), out_lens, tokens)
                losses[f"inter_ctc_{k}"] = loss
                per_layer.append(loss)
            losses["inter_ctc"] = torch.stack(per_layer).mean()
        if self.transducer is not None:
            if bool((target_lens == 0).any()):
                raise ValueError(f"the transducer loss ({self.transducer_backend}) needs non-empty transcripts")
            if self.transducer_loss == "pruned":
                losses["simple"], losses["pruned"] = self.transducer(
                    out,
                    out_lens,
                    targets,
                    target_lens,
                    prune_range=self.prune_range,
                    lm_scale=self.lm_scale,
                    am_scale=self.am_scale,
                    backend=self.transducer_backend,
                )
            else:
                # fast_rnnt's full loss falls back to the pure-PyTorch reference when it is absent
                full_backend = "k2" if self.transducer_backend == "k2" else "auto"
                losses["rnnt"] = self.transducer.full_loss(out, out_lens, targets, target_lens, backend=full_backend)
        if self.attention_decoder is not None:
            ys_in, ys_out = add_sos_eos(tokens, self.sos_id, self.eos_id, device=device)
            logits = self.attention_decoder(out, out_lens, ys_in)
            losses["att"] = label_smoothing_loss(logits, ys_out, smoothing=self.lsm_weight)
            heads["att_logits"] = logits
        if self.mask_ctc is not None:
            masked = mask_tokens(tokens, self.mask_ctc.mask_id, generator=mask_generator, device=device)
            logits = self.mask_ctc(out, out_lens, masked.ys_in)
            losses["mlm"] = masked_lm_loss(logits, masked.ys_out)
            losses["num_masked"] = masked.num_masked.sum()
            heads["mlm_logits"], heads["mlm_masked"] = logits, masked

        losses["num_frames"] = out_lens.sum()
        losses["num_tokens"] = target_lens.sum()
        losses["num_utts"] = torch.tensor(len(tokens), device=device)
        if return_encoder_output:
            losses["encoder_out"] = enc
        if return_head_outputs:
            losses["head_outputs"] = heads
        return losses

    def _ctc(self, head: CtcHead, enc: Tensor, enc_lens: Tensor, tokens) -> Tensor:
        return ctc_loss(
            head.log_probs(enc),
            enc_lens,
            tokens,
            blank=self.blank_id,
            zero_infinity=self.ctc_zero_infinity,
            backend=self.ctc_backend,
        )


def _layer_dim(encoder: nn.Module, layer: int) -> int:
    """D_k of 1-based ``layer``, as the encoder declares it (``Encoder.layer_info``)."""
    return int(encoder.layer_info[layer - 1].dim)


# ---------------------------------------------------------------------------- loss combination
def default_loss_weights(
    heads: Sequence[str], *, ctc_weight: float = 0.3, inter_ctc_weight: float = 0.3
) -> dict[str, float]:
    """Weights for :func:`combine_losses` given the enabled heads.

    - the "main" losses (``att``, ``mlm``, ``transducer``) share ``1 - ctc_weight`` when CTC is
      also on (joint CTC/attention: ``(1 - w) att + w ctc``), else 1 each;
    - ``ctc`` gets ``ctc_weight`` next to a main loss, else 1;
    - ``inter_ctc`` gets ``inter_ctc_weight`` and the final CTC keeps ``(1 - inter_ctc_weight)``
      of its weight (ESPnet's InterCTC); without a final CTC head ``inter_ctc`` gets 1 - w.
    """
    heads = set(heads)
    main = [
        k for h, k in (("attention_decoder", "att"), ("mask_ctc", "mlm"), ("transducer", "transducer")) if h in heads
    ]
    w: dict[str, float] = {}
    has_ctc = "ctc" in heads
    for k in main:
        w[k] = (1.0 - ctc_weight) if has_ctc else 1.0
    if has_ctc:
        w["ctc"] = ctc_weight if main else 1.0
    if "inter_ctc" in heads:
        if has_ctc:
            w["inter_ctc"] = w["ctc"] * inter_ctc_weight
            w["ctc"] = w["ctc"] * (1.0 - inter_ctc_weight)
        else:
            w["inter_ctc"] = ctc_weight if main else 1.0
    return w


def combine_losses(
    losses: Mapping[str, Any],
    weights: Mapping[str, float],
    step: int = 0,
    *,
    warm_step: int = 0,
    simple_loss_scale: float = 0.5,
    mlm_normalize: str = "sum",
) -> Tensor:
    """Weighted sum of the named losses of :meth:`AsrModel.forward` (still summed over the batch).

    ``total = sum_k weights[k] * L_k`` over the keys of ``weights``, where

    - ``"transducer"`` weighs ``s * simple + p * pruned`` with ``(s, p) =
      transducer_loss_scales(step, warm_step, simple_loss_scale)`` (icefall's warm-up), or the
      full ``rnnt`` loss when the model computed that one;
    - ``"mlm"`` (summed over the masked tokens) is used as is with ``mlm_normalize="sum"`` (default,
      ESPnet's Mask-CTC: its label-smoothing loss divides the masked-token sum by the batch size,
      like the attention loss), or averaged over the masks and scaled to the batch,
      ``mlm / num_masked * num_utts``, with ``mlm_normalize="masks"``. Under a per-frame
      normaliser "masks" weighs the MLM ~(frames per utterance) times less than CTC: the MLM of
      conf/conformer_hybrid_s.yaml (issue 3) was trained that way and stayed under-fit;
    - any other key (``ctc``, ``inter_ctc``, ``inter_ctc_<k>``, ``att``, ...) is used as is.

    A weight whose loss is missing raises ``KeyError``; losses without a weight are ignored
    (e.g. the per-layer ``inter_ctc_<k>`` monitors).
    """
    total: Tensor | None = None

    def add(term: Tensor) -> None:
        nonlocal total
        total = term if total is None else total + term

    for name, w in weights.items():
        if w == 0:
            continue
        if name == "transducer":
            if "rnnt" in losses:
                add(w * losses["rnnt"])
            elif "simple" in losses and "pruned" in losses:
                s, p = transducer_loss_scales(step, warm_step, simple_loss_scale)
                add(w * (s * losses["simple"] + p * losses["pruned"]))
            else:
                raise KeyError("weight 'transducer' given but no transducer loss was computed")
        elif name == "mlm":
            if "mlm" not in losses:
                raise KeyError("weight 'mlm' given but no 'mlm' loss was computed")
            if mlm_normalize == "sum":
                add(w * losses["mlm"])
            elif mlm_normalize == "masks":
                per_token = losses["mlm"] / losses["num_masked"].clamp(min=1)
                add(w * per_token * losses["num_utts"])
            else:
                raise ValueError(f"mlm_normalize must be one of {MLM_NORMALIZERS}, not {mlm_normalize!r}")
        else:
            if name not in losses:
                raise KeyError(f"weight {name!r} given but no {name!r} loss was computed")
            add(w * losses[name])
    if total is None:
        raise ValueError(f"no loss selected by weights {dict(weights)}")
    return total


# ---------------------------------------------------------------------------- config + factory
@dataclass
class AsrModelConfig:
    """Nested model config (WeNet-like; each head section is a dict, None = head off).

    encoder: ``{"type": "conformer", "preset": "xs" | "s" | "m" (optional), <conformer_encoder
      kwargs>}``.
    ctc: ``{"dropout": 0.0, "backend": "torch" | "k2", "zero_infinity": True}``.
    inter_ctc: ``{"layers": [k, ...] (1-based), "shared": False, "dropout": 0.0}``.
    transducer: ``{"d_pred": 256, "d_joint": 256, "context_size": 2, "loss": "pruned" | "full",
      "prune_range": 5, "lm_scale": 0.25, "am_scale": 0.0, "backend": "fast_rnnt" | "k2"}``.
    attention_decoder: ``{"d_model": D_enc, "num_layers": 6, "heads": 4, "d_ff": 2048,
      "dropout": 0.1, "lsm_weight": 0.1}``.
    mask_ctc: ``{"d_model": D_enc, "num_layers": 6, "heads": 4, "d_ff": 2048, "dropout": 0.1}``.
    weights: loss weights for :func:`combine_losses` (None: :func:`default_loss_weights` with
      ``ctc_weight`` / ``inter_ctc_weight``).
    """

    vocab_size: int
    encoder: dict = field(default_factory=lambda: {"type": "conformer", "preset": "xs"})
    ctc: dict | None = None
    inter_ctc: dict | None = None
    transducer: dict | None = None
    attention_decoder: dict | None = None
    mask_ctc: dict | None = None
    blank_id: int = 0
    sos_id: int = 1
    eos_id: int = 1
    weights: dict | None = None
    ctc_weight: float = 0.3
    inter_ctc_weight: float = 0.3

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> AsrModelConfig:
        """Build from a ``model`` config section; unknown keys and wrong types raise
        :class:`asr_kd.training.config.ConfigError` (a ``ValueError``) naming the key."""
        from asr_kd.training.config import check_section, dataclass_schema  # the check of every section

        check_section(config, dataclass_schema(cls), "model")
        return cls(**copy.deepcopy(dict(config)))

    def to_dict(self) -> dict:
        return asdict(self)


_SECTION_KEYS = {
    "ctc": {"dropout", "backend", "zero_infinity"},
    "inter_ctc": {"layers", "shared", "dropout"},
    "transducer": {"d_pred", "d_joint", "context_size", "loss", "prune_range", "lm_scale", "am_scale", "backend"},
    "attention_decoder": {"d_model", "num_layers", "heads", "d_ff", "dropout", "lsm_weight"},
    "mask_ctc": {"d_model", "num_layers", "heads", "d_ff", "dropout"},
}


def _check_section(name: str, section: Mapping[str, Any]) -> dict:
    unknown = set(section) - _SECTION_KEYS[name]
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in '{name}' config; known: {sorted(_SECTION_KEYS[name])}")
    return dict(section)


def build_encoder(config: Mapping[str, Any]) -> nn.Module:
    """Encoder from ``{"type": <registered name>, **builder kwargs}``
    (:func:`asr_kd.models.encoder.registry.build_encoder`)."""
    from asr_kd.models.encoder import build_encoder as _build  # lazy: imports every encoder

    return _build(config)


def build_asr_model(config: Mapping[str, Any] | AsrModelConfig, *, encoder: nn.Module | None = None) -> AsrModel:
    """Build an :class:`AsrModel` from a nested config (see :class:`AsrModelConfig`).

    ``encoder``: use this encoder instead of building ``config["encoder"]`` (tests, KD students
    made by truncating a teacher).
    """
    cfg = config if isinstance(config, AsrModelConfig) else AsrModelConfig.from_dict(config)
    if encoder is None:
        encoder = build_encoder(cfg.encoder)
    d_enc = int(encoder.output_dim)
    v = cfg.vocab_size
    kwargs: dict[str, Any] = dict(blank_id=cfg.blank_id, sos_id=cfg.sos_id, eos_id=cfg.eos_id)

    if cfg.ctc is not None:
        c = _check_section("ctc", cfg.ctc)
        kwargs["ctc"] = CtcHead(d_enc, v, c.get("dropout", 0.0))
        kwargs["ctc_backend"] = c.get("backend", "torch")
        kwargs["ctc_zero_infinity"] = c.get("zero_infinity", True)
    if cfg.inter_ctc is not None:
        c = _check_section("inter_ctc", cfg.inter_ctc)
        kwargs["inter_ctc_layers"] = list(c.get("layers", []))
        kwargs["inter_ctc_shared"] = c.get("shared", False)
        kwargs["inter_ctc_dropout"] = c.get("dropout", 0.0)
    if cfg.transducer is not None:
        c = _check_section("transducer", cfg.transducer)
        kwargs["transducer"] = TransducerHead(
            d_enc,
            v,
            d_pred=c.get("d_pred", 256),
            d_joint=c.get("d_joint", 256),
            context_size=c.get("context_size", 2),
            blank_id=cfg.blank_id,
        )
        kwargs["transducer_loss"] = c.get("loss", "pruned")
        kwargs["prune_range"] = c.get("prune_range", 5)
        kwargs["lm_scale"] = c.get("lm_scale", 0.25)
        kwargs["am_scale"] = c.get("am_scale", 0.0)
        kwargs["transducer_backend"] = c.get("backend", "fast_rnnt")
    if cfg.attention_decoder is not None:
        c = _check_section("attention_decoder", cfg.attention_decoder)
        kwargs["attention_decoder"] = AttentionDecoder(
            v,
            c.get("d_model", d_enc),
            c.get("num_layers", 6),
            c.get("heads", 4),
            d_ff=c.get("d_ff", 2048),
            dropout=c.get("dropout", 0.1),
            d_memory=d_enc,
        )
        kwargs["lsm_weight"] = c.get("lsm_weight", 0.1)
    if cfg.mask_ctc is not None:
        c = _check_section("mask_ctc", cfg.mask_ctc)
        kwargs["mask_ctc"] = MaskCtcDecoder(
            v,
            c.get("d_model", d_enc),
            c.get("num_layers", 6),
            c.get("heads", 4),
            d_ff=c.get("d_ff", 2048),
            dropout=c.get("dropout", 0.1),
            d_memory=d_enc,
        )
    model = AsrModel(encoder, v, **kwargs)
    model.loss_weights = (
        dict(cfg.weights)
        if cfg.weights is not None
        else default_loss_weights(
            model.enabled_heads(), ctc_weight=cfg.ctc_weight, inter_ctc_weight=cfg.inter_ctc_weight
        )
    )
    model.config = cfg.to_dict()
    return model
