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

Chunk (streaming) training: ``chunk=ChunkConfig`` (from the ``training.chunk`` config section) adds
``chunk_size`` / ``left_context`` to every training forward: fixed, or drawn per batch (dynamic chunk
training, :func:`asr_kd.models.encoder.masks.sample_chunk_size` / ``sample_left_context``) from an RNG
seeded by ``(seed, rank, step)``, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from . import ddp
from .trainer import LossOutput

__all__ = ["AsrLossFn", "ChunkConfig", "load_asr_model", "BundleError", "BUNDLE_MODEL", "BUNDLE_REQUIRED"]

_NORMALISERS = {"utts": "num_utts", "frames": "num_frames", "tokens": "num_tokens"}
_COUNTS = ("num_frames", "num_tokens", "num_utts", "num_masked")


_DYNAMIC_ONLY = ("max_chunk", "full_context_prob", "max_left_chunks", "unlimited_left_prob")
#: ChunkConfig fields set from the model, not from the config section
_FROM_MODEL = ("chunk_multiple",)


@dataclass(frozen=True)
class ChunkConfig:
    """Chunk settings of the training forwards (the ``training.chunk`` config section).

    Fixed chunks (``dynamic: false``): every training and validation forward uses ``chunk_size``
    (encoder frames T', -1 = full context) and ``left_context`` (chunks, -1 = all).

    Dynamic chunk training (``dynamic: true``): per training batch, the chunk size is
    ``m * sample_chunk_size(max_chunk // m, rng, full_context_prob=...)`` with ``m = chunk_multiple``
    (-1 with probability ``full_context_prob``, else uniform over the multiples of ``m`` in
    1..``max_chunk``); the left context is
    ``sample_left_context(max_left_chunks, rng, unlimited_prob=unlimited_left_prob)`` when
    ``max_left_chunks`` is set (and a chunk was drawn), else ``left_context``. The RNG is
    ``random.Random`` seeded with ``(seed, rank, step)``. Validation runs with full context.

    ``seed``: default ``training.seed`` (see :meth:`from_dict`).

    ``chunk_multiple``: not a config key; :meth:`for_encoder` sets it to the encoder's
    ``Encoder.chunk_multiple`` (1 = any size) after checking the settings against the encoder.
    """

    dynamic: bool = False
    chunk_size: int = -1
    left_context: int = -1
    max_chunk: int = 32
    full_context_prob: float = 0.5
    max_left_chunks: int | None = None
    unlimited_left_prob: float = 0.5
    seed: int = 0
    chunk_multiple: int = 1

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], seed: int = 0, where: str = "training.chunk") -> ChunkConfig:
        """Build from a config mapping; unknown or contradictory keys raise ``ValueError`` naming them."""
        if not isinstance(d, Mapping):
            raise ValueError(f"{where} must be a mapping, not {type(d).__name__}")
        known = [f.name for f in fields(cls) if f.name not in _FROM_MODEL]
        unknown = [k for k in d if k not in known]
        if unknown:
            raise ValueError(
                f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in "
                f"{where}; known keys: {', '.join(known)}"
            )
        dynamic = d.get("dynamic", False)
        if not isinstance(dynamic, bool):
            raise ValueError(f"{where}.dynamic must be true or false, not {dynamic!r}")
        if dynamic and "chunk_size" in d:
            raise ValueError(f"{where}.chunk_size is the fixed chunk size; with dynamic: true set max_chunk")
        if dynamic and "left_context" in d and d.get("max_left_chunks") is not None:
            raise ValueError(f"{where}: give left_context (fixed) or max_left_chunks (sampled), not both")
        if not dynamic:
            extra = [k for k in _DYNAMIC_ONLY if k in d]
            if extra:
                raise ValueError(f"{where}: {', '.join(extra)} only apply with dynamic: true")
        values = {k: d[k] for k in known if k in d}
        values.setdefault("seed", seed)
        cfg = cls(**values)
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "training.chunk") -> None:
        def as_int(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{where}.{name} must be an integer >= {lo}, not {v!r}")

        as_int("chunk_size", -1)
        if self.chunk_size == 0:
            raise ValueError(f"{where}.chunk_size must be -1 (full context) or >= 1, not 0")
        as_int("left_context", -1)
        as_int("max_chunk", 1)
        if self.max_left_chunks is not None:
            as_int("max_left_chunks", 0)
        for name in ("full_context_prob", "unlimited_left_prob"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{where}.{name} must be a probability in [0, 1], not {v!r}")
        as_int("seed", -(2**63))
        as_int("chunk_multiple", 1)

    def for_encoder(self, encoder: Any, where: str = "training.chunk") -> ChunkConfig:
        """This config checked against ``encoder`` and bound to its ``chunk_multiple``.

        Raises ``ValueError`` naming the field when the encoder cannot use the settings: a fixed
        ``chunk_size`` that ``encoder.check_chunk_size`` rejects (e.g. a Zipformer chunk that is not a
        multiple of half its slowest stack's factor, or an encoder without the ``chunked`` capability),
        or, with ``dynamic: true``, a ``max_chunk`` below the encoder's ``chunk_multiple`` or an encoder
        that rejects chunks at all. ``max_chunk`` need not be a multiple: draws stay at or below it.
        """
        m = int(getattr(encoder, "chunk_multiple", 1))
        name = type(encoder).__name__
        check = getattr(encoder, "check_chunk_size", None)
        if self.dynamic:
            if self.max_chunk < m:
                raise ValueError(
                    f"{where}.max_chunk = {self.max_chunk}: {name} uses chunks of multiples of "
                    f"{m} output frames; set max_chunk >= {m}"
                )
            if check is not None:
                try:
                    check(m * (self.max_chunk // m), self.left_context)
                except ValueError as e:
                    raise ValueError(f"{where}.dynamic: {name} cannot train on chunks: {e}") from e
        elif self.chunk_size > 0 and check is not None:
            try:
                check(self.chunk_size, self.left_context)
            except ValueError as e:
                raise ValueError(f"{where}.chunk_size = {self.chunk_size}: {e}") from e
        return replace(self, chunk_multiple=m)

    def sample(self, step: int, rank: int = 0) -> dict[str, int]:
        """``{"chunk_size", "left_context"}`` of the training batch ``step`` on ``rank``."""
        if not self.dynamic:
            return self.eval_kwargs()
        from asr_kd.models.encoder.masks import sample_chunk_size, sample_left_context

        rng = random.Random(f"asr_kd.chunk:{self.seed}:{rank}:{step}")
        m = self.chunk_multiple
        chunk = sample_chunk_size(self.max_chunk // m, rng, full_context_prob=self.full_context_prob)
        if chunk < 0:
            return {"chunk_size": -1, "left_context": -1}
        chunk *= m
        if self.max_left_chunks is not None:
            left = sample_left_context(self.max_left_chunks, rng, unlimited_prob=self.unlimited_left_prob)
        else:
            left = self.left_context
        return {"chunk_size": chunk, "left_context": left}

    def eval_kwargs(self) -> dict[str, int]:
        """Settings outside training steps: the fixed chunk, or full context for dynamic training."""
        if self.dynamic:
            return {"chunk_size": -1, "left_context": -1}
        return {"chunk_size": self.chunk_size, "left_context": self.left_context}


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
        model_kwargs: extra keyword arguments of the model's forward, passed to every forward.
        chunk: a :class:`ChunkConfig` (or its config mapping) for chunk / dynamic chunk training.
            Training forwards get :meth:`chunk_kwargs` of their step; the trainer also calls
            :meth:`on_step_start` / :meth:`on_step_end` so that :attr:`model_kwargs` holds the
            current step's values for subclasses that read it (KD losses). Call
            :meth:`check_model` at start-up so that settings the encoder cannot use fail there; the
            first call of the loss function checks a model nobody checked.
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
        chunk: ChunkConfig | Mapping[str, Any] | None = None,
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
        self._model_kwargs = dict(model_kwargs or {})
        if chunk is not None and not isinstance(chunk, ChunkConfig):
            chunk = ChunkConfig.from_dict(chunk)
        self.chunk: ChunkConfig | None = chunk
        if chunk is not None and {"chunk_size", "left_context"} & set(self._model_kwargs):
            raise ValueError("chunk_size/left_context given both in model_kwargs and in the chunk config")
        self._step_chunk: dict[str, int] | None = None
        self._chunk_checked = chunk is None

    def check_model(self, model: torch.nn.Module) -> None:
        """Check the chunk config against ``model``'s encoder and draw only chunk sizes it can use
        (:meth:`ChunkConfig.for_encoder`; ``ValueError`` naming the ``training.chunk`` field)."""
        if self.chunk is not None:
            from .checkpoint import unwrap_model

            encoder = getattr(unwrap_model(model), "encoder", None)
            if encoder is not None:
                self.chunk = self.chunk.for_encoder(encoder)
        self._chunk_checked = True

    def _ensure_checked(self, model: torch.nn.Module, step: int) -> None:
        """:meth:`check_model` on the first call when nobody called it (the step's draw is redone)."""
        if not self._chunk_checked:
            self.check_model(model)
            if self._step_chunk is not None:
                self._step_chunk = self.chunk_kwargs(step, True)

    # ------------------------------------------------------------------ chunk settings per step
    def chunk_kwargs(self, step: int | None, training: bool) -> dict[str, int]:
        """``chunk_size`` / ``left_context`` for a forward: the training batch ``step``'s draw, or the
        evaluation settings (``training=False``); ``{}`` without a chunk config."""
        if self.chunk is None:
            return {}
        if training and step is not None:
            return self.chunk.sample(int(step), ddp.get_rank())
        return self.chunk.eval_kwargs()

    def on_step_start(self, progress: Any) -> None:
        """Trainer hook: fix the chunk settings of this training step (see :attr:`model_kwargs`)."""
        self._step_chunk = self.chunk_kwargs(progress.step, True) if self.chunk is not None else None

    def on_step_end(self, progress: Any) -> None:
        self._step_chunk = None

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the model's forward: the fixed ``model_kwargs`` plus the chunk settings
        of the current training step (between the trainer's step hooks), else the evaluation ones."""
        chunk = self._step_chunk if self._step_chunk is not None else self.chunk_kwargs(None, False)
        return {**self._model_kwargs, **chunk}

    @model_kwargs.setter
    def model_kwargs(self, value: Mapping[str, Any] | None) -> None:
        self._model_kwargs = dict(value or {})

    @staticmethod
    def unpack(batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[list[int]], list[str] | None]:
        sup = batch["supervisions"]
        return batch["inputs"], batch["feature_lens"], sup["tokens"], sup.get("cut_id")

    def combine(self, losses: Mapping[str, Any], weights: Mapping[str, float], step: int) -> torch.Tensor:
        return self.combine_fn(
            losses,
            weights,
            step,
            warm_step=self.warm_step,
            simple_loss_scale=self.simple_loss_scale,
            mlm_normalize=self.mlm_normalize,
        )

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Any], step: int) -> LossOutput | None:
        x, x_lens, tokens, cut_ids = self.unpack(batch)
        if x.size(0) == 0:  # every cut of the batch was dropped by the dataset
            return None
        self._ensure_checked(model, step)
        kwargs = {**self._model_kwargs, **self.chunk_kwargs(step, model.training)}
        losses = model(x, x_lens, tokens, **kwargs)
        weights = self.weights
        if weights is None:
            from .checkpoint import unwrap_model

            weights = unwrap_model(model).loss_weights
        total = self.combine(losses, weights, step)
        norm = losses[_NORMALISERS[self.normalize]].clamp(min=1).to(total.dtype)
        parts = {
            k: (v.detach().float() / norm)
            for k, v in losses.items()
            if k not in _COUNTS and isinstance(v, torch.Tensor) and v.dim() == 0
        }
        return LossOutput(loss=total / norm, parts=parts, num_frames=float(norm), cut_ids=cut_ids)


#: the weights file of a pretrained-model bundle (``asr_kd.bin.export --bundle``)
BUNDLE_MODEL = "model.pt"
#: files every bundle has; the lang files it bundles are listed in ``meta["bundle"]["files"]`` of its model.pt
BUNDLE_REQUIRED = (BUNDLE_MODEL, "config.yaml", "bpe.model", "tokens.txt")


class BundleError(ValueError):
    """A pretrained-model bundle is incomplete or inconsistent; the message names the bad file."""


def _bundle_meta(ckpt: Mapping[str, Any]) -> Mapping[str, Any] | None:
    meta = ckpt.get("meta") or {}
    bundle = meta.get("bundle") if isinstance(meta, Mapping) else None
    return bundle if isinstance(bundle, Mapping) else None


def _check_bundle(bundle_dir, info: Mapping[str, Any], vocab_size: int) -> None:
    """Raise :class:`BundleError` for a missing bundled file, or lang files that do not fit the model."""
    import hashlib
    from pathlib import Path

    from asr_kd.data.tokenizer import Tokenizer, read_symbol_table

    bundle_dir = Path(bundle_dir)
    names = list(dict.fromkeys([*BUNDLE_REQUIRED, *(info.get("files") or [])]))
    for name in names:
        if not (bundle_dir / name).is_file():
            raise BundleError(
                f"{bundle_dir / name}: missing from the bundle {bundle_dir} "
                f"(a bundle has {', '.join(names)}; re-export it with asr_kd.bin.export --bundle)"
            )
    bpe = bundle_dir / "bpe.model"
    try:
        tok = Tokenizer(bpe)
    except Exception as e:
        raise BundleError(f"{bpe}: not a usable tokenizer ({type(e).__name__}: {e})") from e
    if tok.vocab_size != vocab_size:
        raise BundleError(
            f"{bpe}: the tokenizer has {tok.vocab_size} pieces but the model outputs {vocab_size}: "
            "this is not the BPE model the bundled model was trained with"
        )
    tokens = bundle_dir / "tokens.txt"
    try:
        ids = read_symbol_table(tokens).values()
    except Exception as e:
        raise BundleError(f"{tokens}: unreadable symbol table ({type(e).__name__}: {e})") from e
    if len(ids) != vocab_size or (ids and max(ids) != vocab_size - 1):
        raise BundleError(f"{tokens}: {len(ids)} tokens, but the model outputs {vocab_size}")
    for name, digest in (info.get("sha256") or {}).items():
        path = bundle_dir / name
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise BundleError(f"{path}: differs from the file the bundle was exported with (sha256 mismatch)")


def load_asr_model(path, device: str | torch.device = "cpu", strict: bool = True, use_averaged_model: bool = False):
    """Rebuild an ``AsrModel`` from a checkpoint's stored config and load its weights (eval mode).

    Works for training checkpoints, for the output of ``asr_kd.bin.average`` and for pretrained-model
    bundles (a directory written by ``asr_kd.bin.export --bundle``, or that directory's ``model.pt``).
    With ``use_averaged_model=True`` the weights are the checkpoint's running model average
    (``model_avg``, from ``training.average_period``; an error if it has none). Returns
    ``(model, config)``; ``config`` is the full experiment config (``config["data"]`` has the
    manifest dir, prefix, lang dir and feature settings the model was trained with).

    The model is always float32: fp16 weights (a bundle exported with ``--fp16``) are converted on
    loading. For a bundle, ``config["data"]["lang_dir"]`` is the bundle directory, and the bundle is
    checked first: a missing file, an unreadable (e.g. truncated) ``model.pt``, or a ``bpe.model`` /
    ``tokens.txt`` whose vocabulary differs from the model's output size raise :class:`BundleError`
    naming the file. A truncated or corrupt training checkpoint (also a KD teacher's) raises
    :class:`~asr_kd.training.checkpoint.CorruptCheckpointError` naming the file.

    ``model.trained_tokens``: the pieces of the lang dir the model was trained with (``[piece(0), ...]``,
    from ``meta["tokens"]``; None for a checkpoint that does not store them), for
    :func:`asr_kd.data.tokenizer.check_vocab`.
    """
    from pathlib import Path

    from asr_kd.models.asr_model import build_asr_model

    from .checkpoint import CorruptCheckpointError, _strip_module_prefix, averaged_state_dict, read_checkpoint

    path = Path(path)
    bundle_dir = None
    if path.is_dir():
        bundle_dir, path = path, path / BUNDLE_MODEL
        if not path.is_file():
            raise BundleError(
                f"{path}: missing; {bundle_dir} is a directory but not a model bundle "
                "(give a checkpoint file, or a directory written by asr_kd.bin.export --bundle)"
            )
    try:
        ckpt = read_checkpoint(path)  # verifies the checksum; a bad file raises naming it
    except CorruptCheckpointError as e:
        if bundle_dir is None and not (path.name == BUNDLE_MODEL and (path.parent / "bpe.model").is_file()):
            raise  # not a bundle's model.pt: CorruptCheckpointError names the file and the fix
        cause = e.__cause__ or e
        raise BundleError(
            f"{path}: cannot be read, the file is truncated or corrupt "
            f"({type(cause).__name__}: {cause}); re-export or re-download the bundle"
        ) from e
    info = _bundle_meta(ckpt)
    if info is not None and bundle_dir is None:
        bundle_dir = path.parent  # the model.pt of a bundle: its lang files are beside it
    config = ckpt.get("config") or {}
    if "model" not in config:
        raise ValueError(f"{path}: the checkpoint has no model config (config['model'])")
    model = build_asr_model(config["model"])
    if bundle_dir is not None:
        _check_bundle(bundle_dir, info or {}, int(model.vocab_size))
        config = dict(config, data=dict(config.get("data") or {}, lang_dir=str(bundle_dir)))
    weights = ckpt["model"]
    if use_averaged_model:
        if ckpt.get("model_avg") is None:
            raise ValueError(f"{path}: the checkpoint has no model_avg (train with training.average_period > 0)")
        weights = averaged_state_dict(weights, ckpt["model_avg"])
    state = {
        k: v for k, v in _strip_module_prefix(weights).items() if not k.startswith("kd_aux.")
    }  # training-only KD modules
    model.load_state_dict(state, strict=strict)  # copies (and so casts) fp16 tensors into the fp32 model
    tokens = (ckpt.get("meta") or {}).get("tokens")
    model.trained_tokens = [str(t) for t in tokens] if tokens else None
    return model.to(device).eval(), config
