"""Export a trained model as a standalone inference checkpoint or a pretrained-model bundle.

Usage::

    # the averaged model without training-only parts (KD modules, optimiser state)
    python -m asr_kd.bin.export --checkpoint exp/selfkd/averaged.pt --out exp/selfkd/exported.pt
    # self-KD's sub-model: encoder layers 1..4 + the inter-CTC head of layer 4, a CTC model of its own
    python -m asr_kd.bin.export --checkpoint exp/selfkd/averaged.pt --sub-model-layer 4 \\
        --out exp/selfkd/sub4.pt
    python -m asr_kd.bin.decode --checkpoint exp/selfkd/sub4.pt --method ctc-greedy ...

    # a pretrained-model bundle (cd egs/synth/ASR): fp16 weights, lang files, model card, test features
    python -m asr_kd.bin.export --checkpoint exp/conformer_ctc_s/averaged.pt \\
        --bundle pretrained/conformer_ctc_s --fp16 --num-test-features 4 --split test
    python -m asr_kd.bin.decode --exp-dir pretrained/conformer_ctc_s --res-dir "$PWD/exp/bundle_decode"

The ``--out`` file has the checkpoint format of :mod:`asr_kd.training.checkpoint` (``model`` state,
``config`` whose ``model`` section rebuilds exactly the exported architecture), so ``asr_kd.bin.decode``
and ``asr_kd.training.asr_task.load_asr_model`` load it like any other checkpoint. ``config["data"]``
(lang dir, features) is kept from the source so decoding uses the same front end.

A bundle (``--bundle DIR``) is a directory with

- ``model.pt``: that checkpoint (fp16 floating-point tensors with ``--fp16``; a tensor that would
  overflow fp16 stays fp32), ``step``/``epoch`` of the source, ``meta["train"]`` (training steps,
  seconds, audio, averaging), ``meta["results"]`` (the card's ``results.jsonl`` rows, kept when a
  bundle is exported again) and ``meta["bundle"]`` (the bundled lang files, their sha256, the test
  features' decoding method); ``config["data"]["lang_dir"]`` is ``"."``, the bundle itself;
- ``config.yaml``: the resolved training config of the source run (KD section included);
- the lang files: ``bpe.model``, ``tokens.txt`` and, when the source lang dir has them, ``words.txt``,
  ``lexicon.txt``, ``lexicon_char.txt`` (what ``ctc-hlg`` decoding needs);
- ``README.md``: the model card, filled with what the exporter measures (parameters, size, steps,
  training time, WER/CER of the source checkpoint found in ``results.jsonl`` files of its exp dir, the
  test transcripts); every other field reads ``[TO FILL: ...]``;
- ``test_features/``: the fbank features (``utt-<i>.pt``, float32 (T, F) tensors, front end as in
  ``asr_kd.bin.decode``) of the first ``--num-test-features`` cuts of ``--split``, and
  ``transcripts.txt`` with their references and the bundled model's greedy hypotheses (CTC greedy, or
  transducer greedy for a model with a transducer head), decoded one utterance at a time.

The bundle is written to a temporary directory beside ``DIR`` and renamed into place when complete;
an existing ``DIR`` is replaced only with ``--force``. The standard tools take a bundle directory
wherever they take a checkpoint: ``asr_kd.bin.decode --exp-dir DIR``, a KD config's
``teacher.checkpoint: DIR``, ``load_asr_model(DIR)`` and this exporter's ``--checkpoint DIR``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from asr_kd.training.asr_task import BUNDLE_MODEL, load_asr_model
from asr_kd.training.checkpoint import save_checkpoint

__all__ = [
    "export_model",
    "export_bundle",
    "greedy_method",
    "decode_features",
    "read_transcripts",
    "TO_FILL",
    "main",
]

log = logging.getLogger("asr_kd.bin.export")

#: the marker of the model-card fields the exporter cannot fill
TO_FILL = "[TO FILL"
#: lang files copied into a bundle: the first two are required, the others copied when present
BUNDLE_LANG_FILES = ("bpe.model", "tokens.txt", "words.txt", "lexicon.txt", "lexicon_char.txt")
TEST_FEATURES = "test_features"
TRANSCRIPTS = "transcripts.txt"
FEATURE_PRECISION = "float32"


# ----------------------------------------------------------------------------------------------- model
def _source_checkpoint(checkpoint: str | Path) -> Path:
    """The weights file of ``checkpoint`` (a bundle directory's ``model.pt``)."""
    checkpoint = Path(checkpoint)
    return checkpoint / BUNDLE_MODEL if checkpoint.is_dir() else checkpoint


def _to_fp16(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Floating-point tensors in fp16, except those that would overflow (kept, names returned)."""
    out, kept = {}, []
    for k, v in state.items():
        if v.is_floating_point() and v.dtype != torch.float16:
            h = v.to(torch.float16)
            if not bool(torch.isfinite(h).all()) and bool(torch.isfinite(v).all()):
                kept.append(k)
                out[k] = v
            else:
                out[k] = h
        else:
            out[k] = v
    return out, kept


def _standalone(checkpoint: str | Path, sub_model_layer: int | None, fp16: bool):
    """``(model, config for the file, state, meta, full source config)`` of the exported model."""
    model, config = load_asr_model(checkpoint)
    full_config = copy.deepcopy(config)
    config = copy.deepcopy(config)
    config.pop("kd", None)  # a standalone model: no teacher, no KD methods
    meta: dict[str, Any] = {"exported_from": str(checkpoint)}
    if getattr(model, "trained_tokens", None):
        meta["tokens"] = list(model.trained_tokens)  # the lang dir's pieces, checked at decode time
    if sub_model_layer is not None:
        model = model.submodel(sub_model_layer)
        meta["sub_model_layer"] = int(sub_model_layer)
    config["model"] = copy.deepcopy(model.config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("kd_aux.")}
    if fp16:
        state, kept = _to_fp16(state)
        meta["fp16"] = True
        if kept:
            log.warning("kept %d tensors in fp32 (fp16 would overflow): %s", len(kept), kept[:5])
            meta["fp32_tensors"] = kept
    return model, config, state, meta, full_config


def export_model(
    checkpoint: str | Path, out: str | Path, *, sub_model_layer: int | None = None, fp16: bool = False
) -> Path:
    """Write ``out`` from ``checkpoint``: the whole model, or its ``sub_model_layer`` sub-model
    (``fp16``: floating-point weights stored in half precision)."""
    _, config, state, meta, _ = _standalone(checkpoint, sub_model_layer, fp16)
    return save_checkpoint(out, model=state, step=0, epoch=0, config=config, rng=None, meta=meta)


# ----------------------------------------------------------------------------------------------- decoding
def greedy_method(model: Any) -> str:
    """The greedy decoding method of a bundle's test features: ``transducer-greedy`` for a model with a
    transducer head, else ``ctc-greedy``."""
    if getattr(model, "transducer", None) is not None:
        return "transducer-greedy"
    if getattr(model, "ctc", None) is not None:
        return "ctc-greedy"
    raise ValueError(
        f"the model has neither a CTC nor a transducer head (heads {model.enabled_heads()}): "
        "no greedy decoding for its test features"
    )


@torch.no_grad()
def decode_features(model: Any, features: Sequence[torch.Tensor], tokenizer: Any, method: str) -> list[str]:
    """Greedy hypotheses (space-joined words) of (T, F) fbank tensors, one utterance per forward."""
    from asr_kd.decoding.search import SearchOptions, prepare_decoding

    decoder = prepare_decoding(model, method, SearchOptions())
    device = next(model.parameters()).device
    hyps = []
    for feats in features:
        x = feats.to(device=device, dtype=torch.float32).unsqueeze(0)
        x_lens = torch.tensor([feats.size(0)], dtype=torch.int64, device=device)
        hyps.append(" ".join(decoder.words(decoder.decode(x, x_lens), tokenizer)[0]))
    return hyps


def read_transcripts(path: str | Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """``(header, rows)`` of a bundle's ``test_features/transcripts.txt``.

    ``header``: the ``# key: value`` comment lines (``method``, ``split``, ...); rows: one dict per
    utterance with ``file``, ``cut_id``, ``ref`` and ``hyp`` (tab-separated columns in the file).
    """
    header: dict[str, str] = {}
    rows: list[dict[str, str]] = []
    columns = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep:
                header[key.strip()] = value.strip()
            continue
        if not line.strip():
            continue
        fields = line.split("\t")
        if columns is None:
            columns = fields
            if columns != ["file", "cut_id", "ref", "hyp"]:
                raise ValueError(f"{path}: the header must be 'file<TAB>cut_id<TAB>ref<TAB>hyp', not {line!r}")
            continue
        if len(fields) != 4:
            raise ValueError(f"{path}: {len(fields)} tab-separated fields instead of 4 in {line!r}")
        rows.append(dict(zip(columns, fields)))
    if columns is None:
        raise ValueError(f"{path}: no header line")
    return header, rows


def _test_features(cuts_path: Path, n: int, data_cfg: Mapping[str, Any]) -> list[tuple[str, str, torch.Tensor]]:
    """``(cut_id, reference, fbank (T, F))`` of the first ``n`` cuts, with decode's front end."""
    from lhotse import CutSet

    from asr_kd.data import AsrDataConfig, AsrDataModule
    from asr_kd.data.dataset import AsrDataset

    if not cuts_path.is_file():
        raise FileNotFoundError(
            f"{cuts_path} not found (pass --manifest-dir/--prefix/--split, or "
            "--num-test-features 0 for a bundle without test features)"
        )
    dm = AsrDataModule(
        AsrDataConfig(
            num_workers=0,
            shuffle=False,
            num_mel_bins=int(data_cfg.get("num_mel_bins", 80)),
            fbank_backend=data_cfg.get("fbank_backend", "auto"),
        ),
        tokenizer=None,
    )
    dataset = AsrDataset(dm.input_strategy(), return_cuts=True, name="bundle")
    out = []
    for cut in CutSet.from_file(cuts_path):
        if len(out) >= n:
            break
        batch = dataset[CutSet.from_cuts([cut])]
        feats = batch["inputs"][0, : int(batch["feature_lens"][0])].to(torch.float32).contiguous().clone()
        out.append((cut.id, " ".join(batch["supervisions"]["text"][0].split()), feats))
    if len(out) < n:
        log.warning("%s has %d cuts only: bundling %d test features instead of %d", cuts_path, len(out), len(out), n)
    return out


# ----------------------------------------------------------------------------------------------- card
def _train_info(src: Path, ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """Training facts of the source checkpoint (a bundle's own ``meta["train"]`` when it is one)."""
    meta = dict(ckpt.get("meta") or {})
    if isinstance(meta.get("train"), Mapping):
        return dict(meta["train"])
    info: dict[str, Any] = {"step": int(ckpt.get("step", 0)), "epoch": int(ckpt.get("epoch", 0))}
    timing = meta
    if "train_seconds" not in meta and meta.get("averaged_paths"):
        last = Path(meta["averaged_paths"][-1])
        try:  # an averaged model: the timing of the last averaged checkpoint
            timing = dict(torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("meta") or {})
        except Exception:  # moved or deleted since: unknown
            timing = {}
    for key in ("train_seconds", "audio_seconds"):
        if isinstance(timing.get(key), (int, float)):
            info[key] = float(timing[key])
    if meta.get("averaged_from"):
        info["averaged_from"] = [str(p) for p in meta["averaged_from"]]
        info["use_averaged_model"] = bool(meta.get("use_averaged_model", False))
    info["source"] = str(src)
    return info


def _same_path(a: str | Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == b.resolve()


def _results(exp_dir: Path, checkpoint: Path) -> tuple[list[dict[str, Any]], int]:
    """Latest ``results.jsonl`` row per (split, method) of ``checkpoint`` under ``exp_dir``, and the
    number of rows of other checkpoints that were ignored."""
    files = sorted({*exp_dir.glob("results.jsonl"), *exp_dir.glob("*/results.jsonl")})
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    others = 0
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict) or "split" not in row or "method" not in row:
                continue
            if row.get("checkpoint") is None or not _same_path(row["checkpoint"], checkpoint):
                others += 1
                continue
            rows[(str(row["split"]), str(row["method"]))] = row
    return list(rows.values()), others


def _fmt_hours(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.2f} min"


def _model_summary(config: Mapping[str, Any], model: Any) -> str:
    enc = dict(config.get("encoder") or {})
    parts = [f"{enc.get('type', 'conformer')} encoder"]
    for key in ("preset", "num_layers", "d_model", "num_heads", "ffn_dim"):
        if key in enc:
            parts.append(f"{key} {enc[key]}")
    return ", ".join(parts) + f"; heads {', '.join(model.enabled_heads())}"


def _card(
    name: str,
    *,
    bundle: Path,
    model: Any,
    config: Mapping[str, Any],
    train: Mapping[str, Any],
    size_bytes: int,
    fp16: bool,
    vocab_size: int,
    lang_files: Sequence[str],
    results: list[dict[str, Any]],
    other_results: int,
    method: str | None,
    split: str,
    tests: list[dict[str, str]],
    sub_model_layer: int | None,
) -> str:
    def fill(what: str) -> str:
        return f"{TO_FILL}: {what}]"

    data = dict(config.get("data") or {})
    n_params = sum(p.numel() for p in model.parameters())
    seconds = train.get("train_seconds")
    averaged = train.get("averaged_from")
    running = bool(train.get("use_averaged_model"))
    averaging = (
        (", ".join(averaged) + (" (running averages)" if running else "")) if averaged else "none (a single checkpoint)"
    )
    lines = [
        f"# {name}",
        "",
        "Pretrained-model bundle of asr_kd (written by `asr_kd.bin.export --bundle`). Fields reading "
        f"`{TO_FILL}: ...]` are not measured by the exporter: fill them in by hand.",
        "",
        "| | |",
        "|---|---|",
        f"| model | {_model_summary(config['model'], model)}"
        + (
            f" (sub-model: encoder layers 1..{sub_model_layer} + the inter-CTC head of layer {sub_model_layer})"
            if sub_model_layer
            else ""
        )
        + " |",
        f"| parameters | {n_params / 1e6:.2f} M ({n_params:,}) |",
        f"| model.pt | {size_bytes / 1e6:.2f} MB, {'fp16' if fp16 else 'fp32'} weights (loaded into an fp32 model) |",
        f"| vocabulary | {vocab_size} BPE pieces ({', '.join(lang_files)}) |",
        f"| features | {data.get('num_mel_bins', 80)}-bin fbank ({data.get('fbank_backend', 'auto')} backend) |",
        f"| training steps | {train.get('step', 0)} (epoch {train.get('epoch', 0)}) |",
        f"| training time | {_fmt_hours(seconds) or fill('wall-clock training time')}"
        f"{' of training-loop wall clock; ' + fill('machine (CPU/GPU, threads)') if seconds is not None else ''} |",
        f"| audio seen | {_fmt_hours(train.get('audio_seconds')) or fill('hours of audio seen in training')} |",
        f"| averaging | {averaging} |",
        f"| exported from | `{train.get('source', '?')}` |",
        f"| torch | {torch.__version__} |",
        "",
        "## Data",
        "",
        fill("corpus, size and seed, e.g. `bash egs/synth/ASR/prepare.sh --size default --seed 42`; training hours"),
        "",
        f"Manifests: prefix `{data.get('prefix', '?')}` in `{data.get('manifest_dir', '?')}`; the training "
        "config is `config.yaml`.",
        "",
        "## Results",
        "",
    ]
    if results:
        lines += ["| split | method | WER % | CER % | utts | RTF |", "|---|---|---|---|---|---|"]
        for r in sorted(results, key=lambda r: (r["split"], r["method"])):
            lines.append(
                f"| {r['split']} | {r['method']} | {r.get('wer', '?')} | {r.get('cer', '?')} | "
                f"{r.get('num_utts', '?')} | {r.get('rtf', '?')} |"
            )
        lines += [
            "",
            f"`asr_kd.bin.decode` of `{results[0].get('checkpoint', '?')}` (its `results.jsonl`), "
            "the weights before any fp16 rounding.",
        ]
        if not {r["split"] for r in results} >= {"dev", "test"}:
            lines += ["", fill("dev and test WER/CER (`asr_kd.bin.decode --split dev --split test`)")]
    else:
        note = f" ({other_results} rows of `results.jsonl` are of other checkpoints)" if other_results else ""
        lines.append(fill(f"dev/test WER and CER: decode the exported checkpoint first{note}"))
    lines += [
        "",
        "## Reproduce",
        "",
        "From `egs/synth/ASR`:",
        "",
        "```bash",
        f"python -m asr_kd.bin.train --config {bundle}/config.yaml --exp-dir exp/{name}",
    ]
    if averaged:
        lines.append(
            f"python -m asr_kd.bin.average --checkpoints {' '.join(f'exp/{name}/{a}' for a in averaged)}"
            f"{' --use-averaged-model' if running else ''} --out exp/{name}/averaged.pt"
        )
    ckpt_name = "averaged.pt" if averaged else Path(str(train.get("source", "averaged.pt"))).name
    lines += [
        f"python -m asr_kd.bin.decode --exp-dir exp/{name} --checkpoint exp/{name}/{ckpt_name} "
        "--split dev --split test",
        f"python -m asr_kd.bin.export --checkpoint exp/{name}/{ckpt_name} --bundle {bundle}"
        + (" --fp16" if fp16 else "")
        + (f" --sub-model-layer {sub_model_layer}" if sub_model_layer else "")
        + f" --num-test-features {len(tests)} --split {split}",
        "```",
        "",
        fill("check the commands (data preparation, training limits such as --max-minutes, averaging)"),
        "",
        "## Test features",
        "",
    ]
    if tests:
        lines += [
            f"`{TEST_FEATURES}/`: fbank features of the first {len(tests)} `{split}` cuts; hypotheses by "
            f"`{method}` on the bundled weights (`asr_kd.testing.bundle.check_bundle` re-decodes them).",
            "",
            "| file | cut | reference | hypothesis |",
            "|---|---|---|---|",
        ]
        lines += [f"| {t['file']} | {t['cut_id']} | {t['ref']} | {t['hyp']} |" for t in tests]
    else:
        lines.append("none (exported with `--num-test-features 0`)")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        f"python -m asr_kd.bin.decode --exp-dir {bundle} --method {method or 'ctc-greedy'} "
        f'--res-dir "$PWD/exp/{name}_decode"',
        "```",
        "",
        f"As a KD teacher: `kd: {{teacher: {{type: asr, checkpoint: {bundle}}}}}`.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- bundle
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_bundle(
    checkpoint: str | Path,
    bundle: str | Path,
    *,
    sub_model_layer: int | None = None,
    fp16: bool = False,
    num_test_features: int = 4,
    split: str = "test",
    lang_dir: str | Path | None = None,
    manifest_dir: str | Path | None = None,
    prefix: str | None = None,
    force: bool = False,
    max_mb: float | None = 25.0,
) -> Path:
    """Write the bundle directory ``bundle`` from ``checkpoint`` (see the module docstring).

    ``lang_dir`` / ``manifest_dir`` / ``prefix`` override the source config's ``data`` section. Raises
    ``FileExistsError`` when ``bundle`` exists and ``force`` is False, ``ValueError`` when the lang dir's
    tokenizer does not fit the model or ``model.pt`` is larger than ``max_mb`` megabytes (None: no limit).
    """
    from asr_kd.data.tokenizer import Tokenizer, check_vocab

    bundle = Path(bundle)
    if bundle.exists() and not force:
        raise FileExistsError(f"{bundle} exists: pass --force to replace it")
    src = _source_checkpoint(checkpoint)
    src_is_bundle = Path(checkpoint).is_dir()
    model, config, state, meta, full_config = _standalone(checkpoint, sub_model_layer, fp16)
    ckpt = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
    train = _train_info(src, ckpt)
    data_cfg = dict(config.get("data") or {})
    lang = Path(lang_dir or data_cfg.get("lang_dir") or "")
    if not str(lang) or not (lang / "bpe.model").is_file():
        raise FileNotFoundError(
            f"{lang / 'bpe.model'} not found: the lang dir of the model (config data.lang_dir) "
            "is needed in the bundle; pass --lang-dir"
        )
    tok = Tokenizer.from_dir(lang)
    if tok.vocab_size != int(model.vocab_size):
        raise ValueError(
            f"{lang / 'bpe.model'}: {tok.vocab_size} pieces, but the model outputs {model.vocab_size}: "
            "not the lang dir the model was trained with (--lang-dir)"
        )
    check_vocab(  # the same size: the pieces, when the checkpoint stores them (VocabMismatchError)
        tok,
        int(model.vocab_size),
        getattr(model, "trained_tokens", None),
        lang_dir=lang,
        model=checkpoint,
        model_lang_dir=data_cfg.get("lang_dir"),
    )
    if not (lang / "tokens.txt").is_file():
        raise FileNotFoundError(f"{lang / 'tokens.txt'} not found")

    bundle.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.", suffix=".tmp", dir=bundle.parent))
    try:
        files = [f for f in BUNDLE_LANG_FILES if (lang / f).is_file()]
        for f in files:
            shutil.copyfile(lang / f, tmp / f)
        if src_is_bundle and (Path(checkpoint) / "config.yaml").is_file():
            shutil.copyfile(Path(checkpoint) / "config.yaml", tmp / "config.yaml")
        else:
            import yaml

            from asr_kd.training.checkpoint import _plain_config

            with open(tmp / "config.yaml", "w", encoding="utf-8") as fh:
                fh.write(f"# the resolved training config of {src}\n")
                yaml.safe_dump(_plain_config(full_config), fh, sort_keys=False)

        # test features first: their decoding method goes into model.pt's meta
        tests = (
            _test_features(
                Path(manifest_dir or data_cfg.get("manifest_dir", "data/manifests"))
                / f"{prefix or data_cfg.get('prefix', 'synth')}_cuts_{split}.jsonl.gz",
                num_test_features,
                data_cfg,
            )
            if num_test_features > 0
            else []
        )
        method = greedy_method(model) if tests else None
        config = copy.deepcopy(config)
        config["data"] = dict(data_cfg, lang_dir=".")  # "." = the bundle directory (load_asr_model)
        meta["source_lang_dir"] = str(lang)
        meta["train"] = train
        meta["bundle"] = {
            "format": 1,
            "files": [*files, "config.yaml"],
            "sha256": {f: _sha256(tmp / f) for f in files},
            "test_method": method,
            "test_split": split if tests else None,
            "num_test_features": len(tests),
        }
        exp_dir = Path(checkpoint) if src_is_bundle else src.parent
        results, others = _results(exp_dir, Path(checkpoint) if src_is_bundle else src)
        if not results and isinstance((ckpt.get("meta") or {}).get("results"), list):
            results = [dict(r) for r in ckpt["meta"]["results"]]  # a bundle's own card results
        if sub_model_layer is not None:  # the full model's rows do not describe the sub-model
            results = [r for r in results if f"layer-{sub_model_layer}" in str(r["method"]).split("_")]
        meta["results"] = results
        save_checkpoint(
            tmp / BUNDLE_MODEL,
            model=state,
            step=int(train.get("step", 0)),
            epoch=int(train.get("epoch", 0)),
            config=config,
            rng=None,
            meta=meta,
        )
        size = (tmp / BUNDLE_MODEL).stat().st_size
        if max_mb is not None and size > max_mb * 1e6:
            raise ValueError(
                f"{bundle / BUNDLE_MODEL} would be {size / 1e6:.1f} MB, over the {max_mb:g} MB limit of "
                f"a bundle{'' if fp16 else ' (use --fp16)'}; --max-mb 0 lifts the limit"
            )

        rows: list[dict[str, str]] = []
        if tests:
            bundled, _ = load_asr_model(tmp)  # the weights as stored (fp16-rounded with --fp16)
            hyps = decode_features(bundled, [f for _, _, f in tests], Tokenizer.from_dir(tmp), method)
            (tmp / TEST_FEATURES).mkdir()
            for i, ((cut_id, ref, feats), hyp) in enumerate(zip(tests, hyps)):
                name = f"utt-{i}.pt"
                torch.save(feats, tmp / TEST_FEATURES / name)
                rows.append({"file": name, "cut_id": cut_id, "ref": ref, "hyp": hyp})
            with open(tmp / TEST_FEATURES / TRANSCRIPTS, "w", encoding="utf-8") as fh:
                fh.write(
                    f"# method: {method}\n# split: {split}\n# features: {FEATURE_PRECISION} (T, F) fbank, "
                    f"torch.load(weights_only=True)\n"
                )
                fh.write("file\tcut_id\tref\thyp\n")
                for r in rows:
                    fh.write(f"{r['file']}\t{r['cut_id']}\t{r['ref']}\t{r['hyp']}\n")

        card = _card(
            bundle.name,
            bundle=bundle,
            model=model,
            config=config,
            train=train,
            size_bytes=size,
            fp16=fp16,
            vocab_size=tok.vocab_size,
            lang_files=files,
            results=results,
            other_results=others,
            method=method,
            split=split,
            tests=rows,
            sub_model_layer=sub_model_layer,
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
        for f in tmp.rglob("*"):  # mkdtemp / mkstemp make them private
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        os.chmod(tmp, 0o755)

        old = None
        if bundle.exists():
            if not force:
                raise FileExistsError(f"{bundle} appeared while exporting: pass --force to replace it")
            old = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.", suffix=".old", dir=bundle.parent))
            os.rename(bundle, old / "bundle")
        os.rename(tmp, bundle)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return bundle


# ----------------------------------------------------------------------------------------------- CLI
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--checkpoint", type=Path, required=True, help="training checkpoint, averaged model or bundle directory"
    )
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="output checkpoint")
    out.add_argument("--bundle", type=Path, help="output bundle directory (model.pt, lang files, card, test features)")
    p.add_argument(
        "--sub-model-layer",
        type=int,
        default=None,
        help="export encoder layers 1..K plus the inter-CTC head of layer K",
    )
    p.add_argument("--fp16", action="store_true", help="store the floating-point weights in half precision")
    p.add_argument("--num-test-features", type=int, default=4, help="--bundle: test utterances bundled [4]")
    p.add_argument("--split", default="test", help="--bundle: split of the test features [test]")
    p.add_argument("--lang-dir", type=Path, help="--bundle: override the config's data.lang_dir")
    p.add_argument("--manifest-dir", type=Path, help="--bundle: override data.manifest_dir")
    p.add_argument("--prefix", help="--bundle: override data.prefix")
    p.add_argument("--max-mb", type=float, default=25.0, help="--bundle: largest model.pt in MB, 0 = no limit [25]")
    p.add_argument("--force", action="store_true", help="--bundle: replace an existing bundle")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.bundle is None:
            out = export_model(args.checkpoint, args.out, sub_model_layer=args.sub_model_layer, fp16=args.fp16)
        else:
            try:
                out = export_bundle(
                    args.checkpoint,
                    args.bundle,
                    sub_model_layer=args.sub_model_layer,
                    fp16=args.fp16,
                    num_test_features=args.num_test_features,
                    split=args.split,
                    lang_dir=args.lang_dir,
                    manifest_dir=args.manifest_dir,
                    prefix=args.prefix,
                    force=args.force,
                    max_mb=args.max_mb or None,
                )
            except (FileExistsError, FileNotFoundError, ValueError) as e:
                raise SystemExit(f"export: {e}") from None
    except KeyError as e:  # no inter-CTC head at that layer
        raise SystemExit(f"export: {e.args[0] if e.args else e}") from None
    model, _ = load_asr_model(out)
    n = sum(p.numel() for p in model.parameters())
    what = f"sub-model (layers 1..{args.sub_model_layer})" if args.sub_model_layer else "model"
    kind = "bundle" if args.bundle is not None else "checkpoint"
    print(
        f"export: wrote {kind} {out}: {what}, {n / 1e6:.2f}M parameters, heads {model.enabled_heads()}"
        f"{', fp16 weights' if args.fp16 else ''}"
    )
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "export"))
