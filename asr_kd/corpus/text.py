"""Sentences for the synthetic corpus: Debian's WordNet and fortunes, normalised, deduplicated, split.

Sources (fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``, no root needed):

- ``wordnet-base``: the quoted usage examples inside the glosses of ``/usr/share/wordnet/data.*``
  (``... | draw air into the lungs; "I can breathe better when the air is clean"``);
- ``fortunes``: strfile text files under ``/usr/share/games/fortunes/`` (entries separated by lines
  holding ``%``); attributions (``-- Author``) are dropped and entries are cut into sentences.

Every sentence goes through :func:`asr_kd.corpus.normalize.normalize`, a word-count filter and a light
profanity filter; the surviving set is deduplicated, sentences with rare words (found in fewer than
``min_word_count`` distinct sentences) are dropped, and the rest is sorted, shuffled with a seed and
cut into ``train`` / ``dev`` / ``test`` lists. Because the split is over *distinct normalised* sentences, no
dev or test sentence occurs in train.

Command line (stage 0 and 1 of ``egs/synth/ASR/prepare.sh``)::

    python -m asr_kd.corpus.text download --dir download
    python -m asr_kd.corpus.text prepare --download-dir download --out-dir data/text \\
        --num-dev 1500 --num-test 1500 --seed 42

writes ``data/text/{train,dev,test}.txt`` (one transcript per line) and ``data/text/sources.tsv``.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from asr_kd.corpus.normalize import normalize

log = logging.getLogger(__name__)

DEBIAN_PACKAGES = ("wordnet-base", "fortunes")
WORDNET_DIR = "usr/share/wordnet"
FORTUNES_DIR = "usr/share/games/fortunes"
# fortune files that are not prose (pictures, code, non-English) or are mostly jokes about groups
FORTUNE_SKIP = frozenset({"ascii-art", "art", "perl", "translate-me", "ethnic", "debian", "linuxcookie"})
# light filter for the fortunes: sentences with these words are dropped
PROFANITY = frozenset(
    "FUCK FUCKING FUCKED SHIT SHITTY BITCH BASTARD CUNT DICK COCK PUSSY ASSHOLE WHORE SLUT "
    "NIGGER FAG FAGGOT RETARD RAPE RAPED PENIS VAGINA".split()
)


# ---------------------------------------------------------------------- download
def download_debs(download_dir: str | Path, packages: Iterable[str] = DEBIAN_PACKAGES) -> Path:
    """Fetch and unpack ``packages`` into ``<download_dir>/root`` (skipped when already unpacked).

    Uses ``apt-get download`` (retried after ``apt-get update`` on failure) and ``dpkg-deb -x``.
    """
    download_dir = Path(download_dir).resolve()
    root = download_dir / "root"
    download_dir.mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        stamp = download_dir / f".{pkg}.unpacked"
        if stamp.exists():
            log.info("%s: already unpacked", pkg)
            continue
        debs = sorted(download_dir.glob(f"{pkg}_*.deb"))
        if not debs:
            cmd = ["apt-get", "download", pkg]
            if subprocess.run(cmd, cwd=download_dir).returncode != 0:
                log.warning("apt-get download %s failed; running apt-get update", pkg)
                subprocess.run(["apt-get", "update", "-qq"], check=False)
                subprocess.run(cmd, cwd=download_dir, check=True)
            debs = sorted(download_dir.glob(f"{pkg}_*.deb"))
        if not debs:
            raise RuntimeError(f"no .deb for {pkg} in {download_dir}")
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
        stamp.touch()
        log.info("%s: unpacked %s", pkg, debs[-1].name)
    return root


# ---------------------------------------------------------------------- raw sentences
_QUOTED = re.compile(r'"([^"]+)"')


def wordnet_examples(data_files: Iterable[str | Path]) -> Iterator[str]:
    """Quoted usage examples from WordNet ``data.*`` files (header lines are skipped)."""
    for path in data_files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue  # licence header
                gloss = line.split("|", 1)[1]
                for m in _QUOTED.finditer(gloss):
                    yield m.group(1).strip()


_ATTRIBUTION = re.compile(r"^\s*(--|-- |~~|\u2014)")
_ENUM = re.compile(r"^\s*(\(?\d+[.)]|[-*•]|[A-Za-z][.)])\s+")
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]*[A-Z])")
_SPEAKER = re.compile(r"^\s*[A-Za-z][\w .'-]{0,20}:\s")  # "Q: ...", "Calvin: ..."


def fortune_entries(path: str | Path) -> Iterator[str]:
    """Entries of one strfile text file, attributions removed, lines joined with spaces."""
    lines: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.rstrip("\n") == "%":
                if lines:
                    yield " ".join(lines)
                lines = []
            elif not _ATTRIBUTION.match(line):
                line = _SPEAKER.sub(" ", _ENUM.sub(" ", line)).strip()
                if line:
                    lines.append(line)
    if lines:
        yield " ".join(lines)


def split_sentences(text: str) -> list[str]:
    """Cut prose into sentences at ``.``/``!``/``?`` followed by a capitalised word."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def fortune_files(fortunes_dir: str | Path) -> list[Path]:
    """UTF-8 fortune text files (``*.u8``) minus :data:`FORTUNE_SKIP`, sorted by name."""
    files = []
    for p in sorted(glob.glob(os.path.join(fortunes_dir, "*.u8"))):
        name = os.path.basename(p)[: -len(".u8")]
        if name not in FORTUNE_SKIP:
            files.append(Path(p))
    return files


def fortune_sentences(files: Iterable[str | Path]) -> Iterator[str]:
    for path in files:
        for entry in fortune_entries(path):
            yield from split_sentences(entry)


# ---------------------------------------------------------------------- filtering and splitting
@dataclass(frozen=True)
class TextFilter:
    """Keeps normalised sentences of ``min_words``..``max_words`` words without profanity."""

    min_words: int = 3
    max_words: int = 20
    max_word_chars: int = 20
    profanity: frozenset[str] = PROFANITY

    def __call__(self, raw: str) -> str | None:
        text = normalize(raw)
        if text is None:
            return None
        words = text.split()
        if not self.min_words <= len(words) <= self.max_words:
            return None
        if any(len(w) > self.max_word_chars for w in words):
            return None
        if any(w.strip("'") in self.profanity or w.split("'")[0] in self.profanity for w in words):
            return None
        return text


def collect(sources: dict[str, Iterable[str]], text_filter: TextFilter) -> dict[str, str]:
    """Normalise and filter every source; ``{sentence: first source it came from}``."""
    out: dict[str, str] = {}
    for name, raws in sources.items():
        kept = total = 0
        for raw in raws:
            total += 1
            text = text_filter(raw)
            if text is not None and text not in out:
                out[text] = name
                kept += 1
        log.info("%s: %d raw sentences -> %d new distinct", name, total, kept)
    return out


def drop_rare_words(sentences: Iterable[str], min_count: int) -> list[str]:
    """Keep the sentences whose every word occurs in at least ``min_count`` distinct sentences.

    Counts are taken once over the given (distinct) sentences, before any split: a word seen in a
    single sentence can only ever be out-of-vocabulary for whichever split gets that sentence, so
    dropping such sentences makes the corpus vocabulary-controlled (dev/test OOV rate with
    ``min_count=3`` is about 2 % instead of 9 %). ``min_count <= 1`` keeps everything.
    """
    sentences = sorted(set(sentences))
    if min_count <= 1:
        return sentences
    df = Counter(w for s in sentences for w in set(s.split()))
    return [s for s in sentences if all(df[w] >= min_count for w in s.split())]


def split_sentences_train_dev_test(
    sentences: Iterable[str], num_dev: int, num_test: int, seed: int
) -> dict[str, list[str]]:
    """Deduplicate, sort, shuffle with ``seed`` and cut into dev, test and train (the rest).

    The result does not depend on the input order, and the three lists are disjoint.
    """
    pool = sorted(set(sentences))
    if num_dev + num_test >= len(pool):
        raise ValueError(f"{len(pool)} sentences cannot give {num_dev} dev + {num_test} test + train")
    random.Random(seed).shuffle(pool)
    return {
        "dev": pool[:num_dev],
        "test": pool[num_dev : num_dev + num_test],
        "train": pool[num_dev + num_test :],
    }


def read_lines(path: str | Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def write_lines(path: str | Path, lines: Iterable[str]) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)


def prepare_text(
    root: str | Path,
    out_dir: str | Path,
    num_dev: int = 1500,
    num_test: int = 1500,
    seed: int = 42,
    text_filter: TextFilter = TextFilter(),
    min_word_count: int = 3,
) -> dict[str, list[str]]:
    """Extract, normalise, filter (:func:`drop_rare_words`) and split the sentences under ``root``."""
    root, out_dir = Path(root), Path(out_dir)
    wordnet = sorted(glob.glob(str(root / WORDNET_DIR / "data.*")))
    fortunes = fortune_files(root / FORTUNES_DIR)
    if not wordnet and not fortunes:
        raise FileNotFoundError(f"neither WordNet nor fortunes found under {root}")
    origin = collect({"wordnet": wordnet_examples(wordnet), "fortunes": fortune_sentences(fortunes)}, text_filter)
    pool = drop_rare_words(origin, min_word_count)
    log.info("min_word_count %d: %d of %d sentences kept", min_word_count, len(pool), len(origin))
    splits = split_sentences_train_dev_test(pool, num_dev, num_test, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, lines in splits.items():
        write_lines(out_dir / f"{name}.txt", lines)
    write_lines(
        out_dir / "sources.tsv",
        (f"{s}\t{origin[s]}\t{name}" for name, lines in splits.items() for s in lines),
    )
    log.info("text: %s", {k: len(v) for k, v in splits.items()})
    return splits


# ---------------------------------------------------------------------- CLI
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="apt-get download + dpkg-deb -x the text packages")
    d.add_argument("--dir", type=Path, required=True)
    r = sub.add_parser("prepare", help="normalise, filter, deduplicate and split the sentences")
    r.add_argument("--download-dir", type=Path, required=True)
    r.add_argument("--out-dir", type=Path, required=True)
    r.add_argument("--num-dev", type=int, default=1500)
    r.add_argument("--num-test", type=int, default=1500)
    r.add_argument("--min-words", type=int, default=3)
    r.add_argument("--max-words", type=int, default=20)
    r.add_argument(
        "--min-word-count", type=int, default=3, help="drop sentences with a word found in fewer distinct sentences"
    )
    r.add_argument("--seed", type=int, default=42)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "download":
        root = download_debs(args.dir)
        print(f"text: sources unpacked under {root}")
    else:
        splits = prepare_text(
            args.download_dir / "root",
            args.out_dir,
            num_dev=args.num_dev,
            num_test=args.num_test,
            seed=args.seed,
            text_filter=TextFilter(min_words=args.min_words, max_words=args.max_words),
            min_word_count=args.min_word_count,
        )
        print("text: " + ", ".join(f"{k} {len(v)} sentences" for k, v in splits.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
