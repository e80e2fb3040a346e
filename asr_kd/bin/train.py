"""Train an ASR model from a YAML config; resumes automatically from the latest checkpoint in --exp-dir.

Usage::

    cd egs/synth/ASR
    # tiny demo model, a few minutes on CPU
    python -m asr_kd.bin.train --config conf/conformer_ctc_xs.yaml --exp-dir exp/conformer_ctc_xs \\
        --max-minutes 5
    # <= 5M params, 60-minute budget on the default corpus; any config key can be overridden
    python -m asr_kd.bin.train --config conf/conformer_ctc_s.yaml --exp-dir exp/conformer_ctc_s \\
        --max-minutes 60 optim.lr=1.5e-3 data.max_duration=150
    # 2 processes (DDP; gloo on CPU, nccl on GPU)
    torchrun --nproc_per_node 2 -m asr_kd.bin.train --config conf/conformer_ctc_s.yaml --exp-dir exp/ddp
    # a second --config is an overlay laid over the first (its ``replace:`` sections replace): the
    # interAED-KD row with a Zipformer student instead of its 4-layer Conformer
    python -m asr_kd.bin.train --config conf/kd/aed_kd_final_l4.yaml --config conf/students/zipformer_s.yaml \\
        --exp-dir exp/kd/zf_aed_final_s600 --max-steps 600

Running the same command again continues the run exactly where its last checkpoint left it (model,
optimiser, scheduler, sampler position, RNG); ``--no-resume`` refuses to start in a directory that
already has checkpoints (use a new ``--exp-dir``). A truncated or corrupt newest checkpoint is named in
a warning and the run resumes from the newest one that reads. Settings changed since the checkpoint
either apply and are logged (``optim.lr``, schedule settings, limits, ...) or are refused, naming the
key (the model architecture, other optimiser settings, seeds, ...): see :mod:`asr_kd.training.resume`.

In a terminal, a progress bar (loss, lr, audio seconds per second, ETA) replaces the INFO lines on the
console; they still go to ``train.log``. The bar is off under ``CI=true``, ``ASR_KD_PROGRESS=0``, with
``training.progress_bar=false`` or when stderr is not a terminal, and the console then shows INFO.

Start-up checks, before any training step: every config section rejects unknown keys and values of
the wrong type, naming the key (:func:`config_schema`); the experiment directory must be writable; stale
``.checkpoint-*.pt.*.tmp`` files of an interrupted save are removed.

Writes into --exp-dir: ``config.yaml`` (the resolved config of the latest run) and
``config-history/NNN-step-S.yaml`` (every run's, with the step it started at and what changed),
``train.log``, ``metrics.jsonl`` (``asr_kd.training.metrics``), ``tensorboard/``, ``checkpoint-<step>.pt``
(every ``training.ckpt_interval`` steps and when a limit stops the run) and ``epoch-<e>.pt`` (at each epoch
end); see :mod:`asr_kd.training.checkpoint`.

Config sections: ``data`` (below), ``model`` (``asr_kd.models.build_asr_model``; ``vocab_size``,
``blank_id``/``sos_id``/``eos_id`` and ``encoder.input_dim`` are filled in from the lang dir and
``data.num_mel_bins`` when absent), ``loss`` (``normalize``, ``warm_step``, ``simple_loss_scale``,
``mlm_normalize``, see ``asr_kd.training.asr_task``), ``optim``, ``scheduler`` (``asr_kd.training.optim``), ``training``
(``asr_kd.training.TrainerConfig`` fields, e.g. ``average_period``, plus ``seed``, ``init_from``: a
checkpoint whose model weights start a new run, e.g. the second, fine-tuning stage of a KD recipe, and
``chunk``: chunk / dynamic chunk training, ``asr_kd.training.asr_task.ChunkConfig``; ``valid_decode``: a
decoding method, e.g. ``ctc-greedy``, whose WER / CER on the validation set joins every validation), and
optionally ``kd``
(a teacher and KD methods with weights and schedules, see ``asr_kd.kd.methods``; the schedules' run length
is ``kd.total_steps``, else ``training.max_steps``).

An icefall-style Zipformer setup (ScaledAdam clips its own updates, so ``training.grad_clip`` then
defaults to ``null``: the trainer only measures the norm and skips non-finite steps)::

    optim: {name: scaled_adam, lr: 0.045, clipping_scale: 2.0}
    scheduler: {name: eden, lr_batches: 7500, lr_epochs: 3.5, warmup_batches: 500}
    training:
      average_period: 200          # model_avg in every checkpoint; average.py --use-averaged-model
      chunk: {dynamic: true, max_chunk: 32, full_context_prob: 0.5, max_left_chunks: 4}

``data`` keys: ``manifest_dir``, ``prefix`` (``<prefix>_cuts_<split>.jsonl.gz``), ``train_split``,
``valid_split``, ``lang_dir``, ``max_valid_cuts`` (first N validation cuts; 0 = all),
``min_duration`` / ``max_cut_duration`` (length filter, seconds), and every field of
``asr_kd.data.AsrDataConfig`` (``max_duration``, ``num_buckets``, ``num_workers``, ``spec_augment``,
``spec_augment_config``, ``speed_perturb``, ``on_error``, ...). Relative paths are relative to the
working directory.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
import warnings
from dataclasses import fields
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from asr_kd.training import ddp
from asr_kd.training.asr_task import AsrLossFn, ChunkConfig
from asr_kd.training.checkpoint import clean_stale_temp_files, find_latest, find_loadable_latest, read_checkpoint
from asr_kd.training.config import check_section, dataclass_schema, load_config, validate_config
from asr_kd.training.optim import (
    ScaledAdam,
    build_optimizer,
    build_scheduler,
    optimizer_schema,
    scheduler_schema,
    unused_options,
)
from asr_kd.training.resume import (
    apply_optim_changes,
    check_model_config,
    check_state_dict,
    check_writable,
    record_config,
    resume_changes,
)
from asr_kd.training.trainer import Trainer, TrainerConfig, format_dropped, seed_everything
from asr_kd.utils import progress

log = logging.getLogger("asr_kd.bin.train")

#: ``data`` keys read by this script (the others are ``AsrDataConfig`` fields), with their types
DATA_ONLY_KEYS: dict[str, Any] = {
    "manifest_dir": str,
    "prefix": str,
    "train_split": str,
    "valid_split": str | None,
    "lang_dir": str,
    "max_valid_cuts": int | None,
    "min_duration": float,
    "max_cut_duration": float,
}
#: ``training`` keys read by this script besides the ``TrainerConfig`` fields
TRAINING_ONLY_KEYS: dict[str, Any] = {
    "seed": int,
    "init_from": str | None,
    "chunk": dict | None,  # ChunkConfig.from_dict checks its keys
    "find_unused_parameters": bool,
}
#: the ``loss`` section (``AsrLossFn`` / ``KdLossFn`` keyword arguments)
LOSS_KEYS: dict[str, Any] = {
    "weights": dict | None,
    "normalize": str,
    "warm_step": int,
    "simple_loss_scale": float,
    "mlm_normalize": str,
}
#: the ``kd`` section (its teacher and methods are checked by ``asr_kd.kd.build_kd_loss_fn``)
KD_KEYS: dict[str, Any] = {"teacher": dict | None, "methods": list | dict | None, "total_steps": int | None}


def config_schema() -> dict[str, Any]:
    """``{section: {key: type}}`` of a training config, for :func:`asr_kd.training.config.validate_config`
    (``optim`` / ``scheduler`` keys depend on the chosen name, so theirs are functions of the section)."""
    from asr_kd.data import AsrDataConfig
    from asr_kd.models.asr_model import AsrModelConfig

    return {
        "data": dataclass_schema(AsrDataConfig, DATA_ONLY_KEYS),
        "model": dataclass_schema(AsrModelConfig),
        "loss": LOSS_KEYS,
        "optim": optimizer_schema,
        "scheduler": scheduler_schema,
        "training": dataclass_schema(TrainerConfig, TRAINING_ONLY_KEYS),
        "kd": KD_KEYS,
    }


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config",
        type=Path,
        action="append",
        required=True,
        help="experiment YAML; repeated: each later file is an overlay laid over the ones before "
        "(asr_kd.training.config, 'Composition')",
    )
    p.add_argument("--exp-dir", type=Path, required=True, help="checkpoints, train.log, tensorboard/")
    p.add_argument("--max-steps", type=int, help="stop after this many training steps (overrides the config)")
    p.add_argument(
        "--max-minutes",
        type=float,
        help="wall-clock budget of this invocation (set-up included); "
        "training stops before a step would cross it and writes a checkpoint",
    )
    p.add_argument("--max-epochs", type=int, help="stop after this many epochs")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--no-resume", action="store_true", help="fail if --exp-dir already has checkpoints")
    p.add_argument("--resume-from", type=Path, help="resume from this checkpoint instead of the latest")
    p.add_argument("--num-threads", type=int, help="torch intra-op threads (CPU)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides (YAML values)")
    return p


def setup_logging(exp_dir: Path, rank: int, bar_on: bool = False) -> None:
    """``train.log`` (rank 0) gets INFO; the console INFO too, or warnings only while rank 0 draws the
    progress bar (``bar_on``) and on the other ranks."""
    progress.setup_logging(
        exp_dir / "train.log" if rank == 0 else None,
        bar_on=bar_on and rank == 0,
        fmt=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s",
        console_level=None if rank == 0 else logging.WARNING,
    )


# ------------------------------------------------------------------------------------------------ pieces
def resolve_model_config(model_cfg: dict, tokenizer: Any, num_mel_bins: int) -> dict:
    """Fill in what the lang dir / features determine (vocab size, special ids, input dim)."""
    m = dict(model_cfg)
    m.setdefault("vocab_size", int(tokenizer.vocab_size))
    m.setdefault("blank_id", int(tokenizer.blank_id))
    m.setdefault("sos_id", int(tokenizer.sos_id))
    m.setdefault("eos_id", int(tokenizer.eos_id))
    enc = dict(m.get("encoder") or {"type": "conformer", "preset": "xs"})
    enc.setdefault("input_dim", int(num_mel_bins))
    m["encoder"] = enc
    return m


def build_data(data_cfg: dict, tokenizer: Any, encoder: torch.nn.Module, seed: int):
    """Train and validation DataLoaders from the ``data`` section."""
    from lhotse import CutSet

    from asr_kd.data import AsrDataConfig, AsrDataModule, CutFilter, SpecAugmentConfig

    warnings.filterwarnings("ignore", message="You are using DynamicBucketingSampler with an eagerly read CutSet")

    d = dict(data_cfg)
    manifest_dir = Path(d.get("manifest_dir", "data/manifests"))
    prefix = d.get("prefix", "synth")

    def cuts_of(split: str):
        path = manifest_dir / f"{prefix}_cuts_{split}.jsonl.gz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run prepare.sh first (or set data.manifest_dir/prefix)")
        return CutSet.from_jsonl_lazy(path)

    check_section(d, config_schema()["data"], "data")  # unknown keys and wrong types, naming the key
    names = {f.name for f in fields(AsrDataConfig)}
    kwargs = {k: v for k, v in d.items() if k in names}
    kwargs.setdefault("seed", seed)
    if isinstance(kwargs.get("spec_augment_config"), dict):
        kwargs["spec_augment_config"] = SpecAugmentConfig(**kwargs["spec_augment_config"])
    dm = AsrDataModule(AsrDataConfig(**kwargs), tokenizer=tokenizer)

    def subsampled(T: int) -> int:
        return int(encoder.subsampled_lengths(torch.tensor([T]))[0])

    cut_filter = CutFilter(
        min_duration=d.get("min_duration", 0.5),
        max_duration=d.get("max_cut_duration", 30.0),
        tokenizer=tokenizer,
        subsampled_frames=subsampled,
        name="train filters",
        on_error=dm.config.on_error,  # bad transcripts: raise, or drop + count + log (data.on_error)
    )
    train_cuts = cuts_of(d.get("train_split", "train")).filter(cut_filter)
    train_dl = dm.train_dataloader(train_cuts)
    valid_dl = None
    if d.get("valid_split", "dev"):
        valid_cuts = cuts_of(d.get("valid_split", "dev"))
        n = int(d.get("max_valid_cuts", 0) or 0)
        valid_cuts = CutSet.from_cuts(islice(valid_cuts, n) if n > 0 else valid_cuts)
        valid_dl = dm.valid_dataloader(valid_cuts)
    return train_dl, valid_dl, cut_filter


def build_valid_decoder(method: str | None, model: torch.nn.Module, tokenizer: Any, data_cfg: dict):
    """The ``training.valid_decode`` decoder (None when unset); an unknown method or one the model's heads
    cannot run is a :class:`~asr_kd.training.config.ConfigError` naming the key."""
    if method is None:
        return None
    from asr_kd.decoding.search import list_decoding_methods
    from asr_kd.decoding.validation import ValidationDecoder
    from asr_kd.training.config import ConfigError

    if method not in list_decoding_methods():
        known = list_decoding_methods()
        raise ConfigError(f"training.valid_decode={method!r} is not a decoding method; known: {known}")
    decoder = ValidationDecoder(method, tokenizer, lang_dir=data_cfg.get("lang_dir", "data/lang_bpe_500"))
    try:
        decoder.check(model)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"training.valid_decode={method!r}: {e}") from None
    return decoder


def check_offline_targets(data_cfg: dict, tokenizer: Any, methods: Any = ()) -> None:
    """Offline KD targets are token ids of the teacher that dumped them: check the recorded teacher
    vocabulary (``kd_vocab`` of the first cuts) of the train and valid manifests against the student's
    lang dir (:func:`asr_kd.kd.offline.check_offline_vocab`; VocabMismatchError names both), and let each
    KD method with a ``check_offline_cuts(cuts, manifest)`` check the targets it reads."""
    from lhotse import CutSet

    from asr_kd.kd.offline import check_offline_vocab

    manifest_dir = Path(data_cfg.get("manifest_dir", "data/manifests"))
    prefix = data_cfg.get("prefix", "synth")
    for split in (data_cfg.get("train_split", "train"), data_cfg.get("valid_split", "dev")):
        path = manifest_dir / f"{prefix}_cuts_{split}.jsonl.gz"
        if split and path.is_file():
            check_offline_vocab(
                CutSet.from_jsonl_lazy(path), tokenizer, manifest=path, lang_dir=data_cfg.get("lang_dir")
            )
            for method in methods:
                if hasattr(method, "check_offline_cuts"):
                    method.check_offline_cuts(CutSet.from_jsonl_lazy(path), manifest=path)


def main(argv: list[str] | None = None) -> int:
    t_start = time.monotonic()  # --max-minutes counts from here (set-up included)
    args = get_parser().parse_args(argv)
    info = ddp.setup_distributed(device=None if args.device == "auto" else args.device)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    exp_dir: Path = args.exp_dir
    cfg = load_config(args.config, args.overrides)
    tcfg = dict(cfg.get("training") or {})
    for key, val in (("max_steps", args.max_steps), ("max_minutes", args.max_minutes), ("max_epochs", args.max_epochs)):
        if val is not None:
            tcfg[key] = val
    cfg["training"] = tcfg
    validate_config(cfg, config_schema())  # a typo or a wrong type fails here, naming the key
    seed = int(tcfg.get("seed", 42))

    if info.is_main:
        check_writable(exp_dir)  # now, not at the first checkpoint after the training steps
    ddp.barrier()
    setup_logging(exp_dir, info.rank, bar_on=progress.progress_enabled(tcfg.get("progress_bar")))
    for section in ("optim", "scheduler"):
        unused = unused_options(section, cfg.get(section) or {})
        if unused:
            log.warning("%s keys %s are not used by %s %r: ignored", section, unused, section, cfg[section].get("name"))
    if info.is_main:
        clean_stale_temp_files(exp_dir)  # left by a kill during a save

    if args.no_resume and (args.resume_from or find_latest(exp_dir)) is not None:
        found = args.resume_from or find_latest(exp_dir)
        raise SystemExit(f"{exp_dir} already has checkpoints ({found.name}) and --no-resume was given")
    if args.resume_from is not None:
        latest, latest_ckpt = args.resume_from, read_checkpoint(args.resume_from)
    else:  # the newest checkpoint that reads: a truncated / corrupt newer one is named and skipped
        latest, latest_ckpt = find_loadable_latest(exp_dir) or (None, None)

    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.models.asr_model import build_asr_model

    data_cfg = dict(cfg.get("data") or {})
    tokenizer = Tokenizer.from_dir(data_cfg.get("lang_dir", "data/lang_bpe_500"))
    cfg["model"] = resolve_model_config(cfg.get("model") or {}, tokenizer, int(data_cfg.get("num_mel_bins", 80)))
    # a changed architecture fails before anything is written, naming the keys
    if latest_ckpt is not None:
        check_model_config((latest_ckpt.get("config") or {}).get("model"), cfg["model"], f"resume from {latest}")
    init_from = tcfg.get("init_from")
    init_ckpt = None
    if init_from and latest is None:  # fine-tuning: weights only (a resumed run has its own)
        init_ckpt = read_checkpoint(init_from)
        check_model_config(
            (init_ckpt.get("config") or {}).get("model"), cfg["model"], f"training.init_from={init_from}"
        )
    configs = " + ".join(str(c) for c in args.config)
    log.info("config %s, exp dir %s, device %s, world size %d", configs, exp_dir, info.device, info.world_size)

    seed_everything(seed)  # the same initial model on every rank
    model = build_asr_model(cfg["model"]).to(info.device)
    num_params = sum(p.numel() for p in model.parameters())
    log.info("model: %.2fM parameters, heads %s", num_params / 1e6, getattr(model, "enabled_heads", lambda: "?")())
    encoder = model.encoder
    if init_ckpt is not None:
        state = {
            k[len("module.") :] if k.startswith("module.") else k: v
            for k, v in init_ckpt["model"].items()
            if not k.startswith(("kd_aux.", "module.kd_aux."))
        }
        check_state_dict(state, model, f"training.init_from={init_from}")
        model.load_state_dict(state, strict=True)
        del init_ckpt, state
        log.info("initialised the model from %s (weights only)", init_from)
    valid_decoder = build_valid_decoder(tcfg.get("valid_decode"), model, tokenizer, data_cfg)
    lcfg = dict(cfg.get("loss") or {})
    asr_loss_kwargs = dict(
        weights=lcfg.get("weights"),
        normalize=lcfg.get("normalize", "utts"),
        warm_step=int(lcfg.get("warm_step", 0)),
        simple_loss_scale=float(lcfg.get("simple_loss_scale", 0.5)),
        mlm_normalize=lcfg.get("mlm_normalize", "sum"),
    )
    if tcfg.get("chunk") is not None:  # chunk / dynamic chunk training (fails here on unknown keys)
        asr_loss_kwargs["chunk"] = ChunkConfig.from_dict(tcfg["chunk"], seed=seed)
        log.info("chunk training: %s", asr_loss_kwargs["chunk"])
    if cfg.get("kd"):  # KD methods may add modules to model.kd_aux: before the optimiser and DDP
        from asr_kd.kd import build_kd_loss_fn

        loss_fn = build_kd_loss_fn(
            cfg["kd"],
            model,
            info.device,
            max_steps=tcfg.get("max_steps"),
            tokenizer=tokenizer,  # an 'asr' teacher must have the student's vocabulary
            lang_dir=data_cfg.get("lang_dir", "data/lang_bpe_500"),
            **asr_loss_kwargs,
        )
        extra_fields = list(getattr(loss_fn.teacher, "required_custom_fields", []) or [])
        if extra_fields:
            data_cfg["custom_fields"] = sorted(set(data_cfg.get("custom_fields") or []) | set(extra_fields))
            methods = [e.method for e in loss_fn.entries]
            check_offline_targets(data_cfg, tokenizer, methods)  # dumped by a teacher of another vocabulary?
    else:
        loss_fn = AsrLossFn(**asr_loss_kwargs)
        loss_fn.check_model(model)  # a chunk size the encoder cannot use fails here, naming training.chunk
    model = ddp.wrap_model(model, info, find_unused_parameters=bool(tcfg.get("find_unused_parameters", False)))
    seed_everything(seed + 1000 * info.rank)  # different augmentation/dropout streams per rank

    optim_cfg = dict(cfg.get("optim") or {})
    optimizer = build_optimizer(model.named_parameters(), optim_cfg)
    scheduler = build_scheduler(optimizer, dict(cfg.get("scheduler") or {}))
    if "grad_clip" in optim_cfg and "grad_clip" not in tcfg:
        tcfg["grad_clip"] = optim_cfg["grad_clip"]
    elif isinstance(optimizer, ScaledAdam) and optimizer.clipping_scale is not None and "grad_clip" not in tcfg:
        tcfg["grad_clip"] = None  # ScaledAdam clips against its median grad norm; a second clip would fight it
        log.info("scaled_adam with clipping_scale=%g: training.grad_clip defaults to null", optimizer.clipping_scale)

    train_dl, valid_dl, cut_filter = build_data(data_cfg, tokenizer, encoder, seed)
    changes = []
    if latest_ckpt is not None:  # refuse what resume cannot honour, before anything is written
        changes = resume_changes(latest_ckpt.get("config") or {}, cfg, f"resume from {latest}")
        check_state_dict(latest_ckpt["model"], model, f"resume from {latest}")
    if info.is_main:  # config.yaml = this run's config; config-history/ keeps every run's
        start_step = int(latest_ckpt["step"]) if latest_ckpt is not None else 0
        record_config(exp_dir, cfg, start_step=start_step, resumed_from=latest, changes=changes)
        for key, old, new in changes:
            log.info("resume: %s changed %r -> %r (applies from step %d)", key, old, new, start_step)
    trainer = Trainer(
        model,
        optimizer,
        loss_fn,
        train_dl,
        scheduler=scheduler,
        valid_dl=valid_dl,
        exp_dir=exp_dir,
        cfg=TrainerConfig.from_dict(tcfg),
        config=cfg,
        device=info.device,
        drop_stats=[cut_filter.stats],
        meta={"tokens": tokenizer.tokens()},  # decode / export / KD check a lang dir against these
        valid_decoder=valid_decoder,
    )
    if latest is not None:
        trainer.resume(latest, ckpt=latest_ckpt)
        for line in apply_optim_changes(optimizer, scheduler, latest_ckpt.get("config") or {}, cfg):
            log.info("resume: %s", line)
        del latest_ckpt

    def on_signal(signum, frame):  # checkpoint and stop cleanly on SIGTERM / Ctrl-C
        log.warning("signal %d: stopping after this step", signum)
        trainer.request_stop(f"signal {signum}")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = trainer.fit(start_time=t_start)
    finally:
        trainer.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    cut_filter.stats.log()
    log.info("done: %s", result)
    if info.is_main:
        dropped = result["dropped_cuts"]
        print(
            f"train: stopped ({result['stopped_because']}) at step {result['step']}, epoch {result['epoch']}; "
            f"valid {result['last_valid']}; {result['num_dropped_cuts']} cuts dropped"
            + (f" ({format_dropped(dropped)})" if dropped else "")
            + f"; checkpoints in {exp_dir}"
        )
    ddp.cleanup()
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "train"))
