"""The ASR loss function the trainer calls: data batch -> ``AsrModel`` losses -> one scalar.

Usage::

    loss_fn = AsrLossFn(weights=model.loss_weights, normalize="utts", warm_step=2000)
    trainer = Trainer(model, optimizer, loss_fn, train_dl, ...)

Batch schema: :mod:`asr_kd.data.dataset` (``inputs`` (N, T, F), ``feature_lens`` (N,),
``supervisions.tokens`` list[list[int]], ``supervisions.cut_id``). The model returns summed, unscaled
losses (:meth:`asr_kd.models.asr_model.AsrModel.forward`); :func:`asr_kd.models.asr_model.combine_losses`
weighs them (with icefall's pruned RNN-T warm-up over ``warm_step`` steps); the result is divided by
the normaliser (``utts``: N, ``frames``: sum of T', ``tokens``: sum of S) for back-propagation. Logged
parts are the unscaled losses divided by the same normaliser and weighted by it when averaged.

KD methods wrap or subclass this (e.g. add a distillation term to :meth:`AsrLossFn.combine`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from .trainer import LossOutput

__all__ = ["AsrLossFn", "load_asr_model"]

_NORMALISERS = {"utts": "num_utts", "frames": "num_frames", "tokens": "num_tokens"}
_COUNTS = ("num_frames", "num_tokens", "num_utts", "num_masked")


class AsrLossFn:
    """Callable ``(model, batch, step) -> LossOutput | None`` for :class:`~asr_kd.training.Trainer`.

    Args:
        weights: loss name -> weight (``None``: the model's ``loss_weights``).
        normalize: ``"utts"`` (default), ``"frames"`` or ``"tokens"``.
        warm_step, simple_loss_scale: pruned RNN-T warm-up (see ``combine_losses``).
        mlm_normalize: ``"sum"`` (default, ESPnet) or ``"masks"``: the Mask-CTC MLM loss summed over
            the masked tokens, or averaged over them (see ``combine_losses``).
        combine: the combination function (default ``asr_kd.models.asr_model.combine_losses``);
            called as ``combine(losses, weights, step, warm_step=..., simple_loss_scale=...,
            mlm_normalize=...)``.
        model_kwargs: extra keyword arguments of the model's forward (e.g. ``chunk_size``).
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        normalize: str = "utts",
        warm_step: int = 0,
        simple_loss_scale: float = 0.5,
        mlm_normalize: str = "sum",
        combine: Callable[..., torch.Tensor] | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
    ):
        if normalize not in _NORMALISERS:
            raise ValueError(f"normalize must be one of {sorted(_NORMALISERS)}, not {normalize!r}")
        if combine is None:
            from asr_kd.models.asr_model import combine_losses as combine
        self.weights = dict(weights) if weights is not None else None
        self.normalize = normalize
        self.warm_step = int(warm_step)
        self.simple_loss_scale = float(simple_loss_scale)
        from asr_kd.models.asr_model import MLM_NORMALIZERS

        if mlm_normalize not in MLM_NORMALIZERS:  # fail at start-up, not at the first MLM batch
            raise ValueError(f"mlm_normalize must be one of {MLM_NORMALIZERS}, not {mlm_normalize!r}")
        self.mlm_normalize = mlm_normalize
        self.combine_fn = combine
        self.model_kwargs = dict(model_kwargs or {})

    @staticmethod
    def unpack(batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[list[int]], list[str] | None]:
        sup = batch["supervisions"]
        return batch["inputs"], batch["feature_lens"], sup["tokens"], sup.get("cut_id")

    def combine(self, losses: Mapping[str, Any], weights: Mapping[str, float], step: int) -> torch.Tensor:
        return self.combine_fn(losses, weights, step, warm_step=self.warm_step,
                               simple_loss_scale=self.simple_loss_scale, mlm_normalize=self.mlm_normalize)

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Any], step: int) -> LossOutput | None:
        x, x_lens, tokens, cut_ids = self.unpack(batch)
        if x.size(0) == 0:  # every cut of the batch was dropped by the dataset
            return None
        losses = model(x, x_lens, tokens, **self.model_kwargs)
        weights = self.weights
        if weights is None:
            from .checkpoint import unwrap_model

            weights = unwrap_model(model).loss_weights
        total = self.combine(losses, weights, step)
        norm = losses[_NORMALISERS[self.normalize]].clamp(min=1).to(total.dtype)
        parts = {k: (v.detach().float() / norm) for k, v in losses.items()
                 if k not in _COUNTS and isinstance(v, torch.Tensor) and v.dim() == 0}
        return LossOutput(loss=total / norm, parts=parts, num_frames=float(norm), cut_ids=cut_ids)


def load_asr_model(path, device: str | torch.device = "cpu", strict: bool = True):
    """Rebuild an ``AsrModel`` from a checkpoint's stored config and load its weights (eval mode).

    Works for training checkpoints and for the output of ``asr_kd.bin.average``. Returns
    ``(model, config)``; ``config`` is the full experiment config (``config["data"]`` has the
    manifest dir, prefix, lang dir and feature settings the model was trained with).
    """
    from asr_kd.models.asr_model import build_asr_model

    from .checkpoint import _strip_module_prefix

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    config = ckpt.get("config") or {}
    if "model" not in config:
        raise ValueError(f"{path}: the checkpoint has no model config (config['model'])")
    model = build_asr_model(config["model"])
    state = {k: v for k, v in _strip_module_prefix(ckpt["model"]).items()
             if not k.startswith("kd_aux.")}  # training-only KD modules
    model.load_state_dict(state, strict=strict)
    return model.to(device).eval(), config
