"""Write the transcripts of Lhotse supervision manifests, one per line (BPE training text).

Usage::

    python -m asr_kd.corpus.transcripts data/manifests/synth_supervisions_train.jsonl.gz \\
        --out data/lang_bpe_500/transcript_words.txt

Several manifests may be given (e.g. LibriSpeech's three training parts). The output file is only
rewritten when its content changes, so its modification time tells whether a BPE model trained on
it is stale (``[ transcript_words.txt -nt bpe.model ]``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Iterable
from pathlib import Path


def transcripts(manifests: Iterable[str | Path]) -> list[str]:
    """Texts of every supervision, in manifest order, whitespace-normalised, empty ones dropped.

    Reads Lhotse's JSON-lines supervision manifests (``.jsonl`` or ``.jsonl.gz``) directly, which is
    much faster than importing lhotse.
    """
    out = []
    for path in manifests:
        path = Path(path)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    text = " ".join((json.loads(line).get("text") or "").split())
                    if text:
                        out.append(text)
    return out


def write_if_changed(path: str | Path, lines: Iterable[str]) -> bool:
    """Write ``lines`` to ``path`` unless it already holds exactly them; True when written."""
    path = Path(path)
    content = "".join(line + "\n" for line in lines)
    if path.is_file() and path.read_text(encoding="utf-8") == content:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(path)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifests", nargs="+", type=Path, help="supervision manifests")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    lines = transcripts(args.manifests)
    changed = write_if_changed(args.out, lines)
    print(f"transcripts: {len(lines)} lines -> {args.out}{'' if changed else ' (unchanged)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
