"""Documents of the corpus sentences: which text each transcript came from, and where in it.

Context augmentation (:mod:`asr_kd.kd.repr`) gives a text teacher the previous and next utterances of the
same *document*. Every supervision gets two custom fields:

===========  ==================================================================================
``doc_id``   str: the document (``wn:<pos>:<synset offset>`` = the usage examples of one WordNet
             synset; ``fortune:<file>:<entry index>`` = the sentences of one fortune entry;
             LibriSpeech: ``<speaker>-<chapter>``, the chapter)
``doc_pos``  int: the position in it (the example's index in the gloss, the sentence's index in
             the entry, the utterance's index in the chapter)
===========  ==================================================================================

The synthetic corpus deduplicates its sentences and shuffles them before the split
(:mod:`asr_kd.corpus.text`), so the documents are recovered from the sources: a normalised sentence
belongs to the document of its *first* raw occurrence, WordNet before fortunes (the rule by which
:func:`asr_kd.corpus.text.collect` names a sentence's source). :class:`~asr_kd.corpus.text.TextFilter`
decides from the normalised text alone, so the map does not depend on the filter settings, and writing it
changes neither the text lists nor the plan nor the audio of any seed.

Command line (``egs/synth/ASR/prepare.sh`` stage 9, also for a corpus prepared before it existed)::

    python -m asr_kd.corpus.documents make --download-dir download --text-dir data/text
    python -m asr_kd.corpus.documents add --documents data/text/documents.tsv \\
        data/manifests/synth_supervisions_train.jsonl.gz data/fbank/synth_cuts_train.jsonl.gz ...

``make`` writes ``<text-dir>/documents.tsv`` (``sentence<TAB>doc_id<TAB>doc_pos`` for every sentence of
the train / dev / test lists); ``add`` rewrites supervision or cut manifests in place (atomically) with the
two fields (a transcript not in the map gets ``doc_id = "utt:<supervision id>"``, a one-sentence document,
and is counted).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from asr_kd.corpus.normalize import normalize

__all__ = [
    "DOC_ID",
    "DOC_POS",
    "wordnet_documents",
    "fortune_documents",
    "document_map",
    "write_documents",
    "read_documents",
    "librispeech_document",
    "add_documents",
]

log = logging.getLogger(__name__)

DOC_ID = "doc_id"
DOC_POS = "doc_pos"


def wordnet_documents(data_files: Iterable[str | Path]) -> Iterator[tuple[str, str, int]]:
    """``(raw sentence, doc_id, position)`` for the quoted examples of each synset line of WordNet
    ``data.<pos>`` files (the order of :func:`asr_kd.corpus.text.wordnet_examples`)."""
    from asr_kd.corpus.text import _QUOTED

    for path in data_files:
        pos_name = Path(path).name.split(".", 1)[-1]
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue
                offset = line.split(" ", 1)[0]
                gloss = line.split("|", 1)[1]
                for i, m in enumerate(_QUOTED.finditer(gloss)):
                    yield m.group(1).strip(), f"wn:{pos_name}:{offset}", i


def fortune_documents(files: Iterable[str | Path]) -> Iterator[tuple[str, str, int]]:
    """``(raw sentence, doc_id, position)``: the sentences of each fortune entry (the order of
    :func:`asr_kd.corpus.text.fortune_sentences`)."""
    from asr_kd.corpus.text import fortune_entries, split_sentences

    for path in files:
        name = Path(path).name
        name = name[: -len(".u8")] if name.endswith(".u8") else name
        for e, entry in enumerate(fortune_entries(path)):
            for i, s in enumerate(split_sentences(entry)):
                yield s, f"fortune:{name}:{e}", i


def document_map(root: str | Path) -> dict[str, tuple[str, int]]:
    """``{normalised sentence: (doc_id, position)}`` over the sources unpacked under ``root`` (the
    ``download/root`` of :func:`asr_kd.corpus.text.download_debs`); first occurrence wins."""
    from asr_kd.corpus.text import FORTUNES_DIR, WORDNET_DIR, fortune_files

    root = Path(root)
    wordnet = sorted(glob.glob(str(root / WORDNET_DIR / "data.*")))
    fortunes = fortune_files(root / FORTUNES_DIR)
    if not wordnet and not fortunes:
        raise FileNotFoundError(f"neither WordNet nor fortunes found under {root}")
    out: dict[str, tuple[str, int]] = {}
    for source in (wordnet_documents(wordnet), fortune_documents(fortunes)):
        for raw, doc, pos in source:
            text = normalize(raw)
            if text is not None and text not in out:
                out[text] = (doc, pos)
    return out


def write_documents(path: str | Path, mapping: Mapping[str, tuple[str, int]], sentences: Iterable[str]) -> int:
    """Write ``sentence<TAB>doc_id<TAB>doc_pos`` for ``sentences`` (atomically); a sentence missing from
    ``mapping`` is left out. Returns the lines written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for s in sentences:
            if s in mapping:
                doc, pos = mapping[s]
                f.write(f"{s}\t{doc}\t{pos}\n")
                n += 1
    os.replace(tmp, path)
    return n


def read_documents(path: str | Path) -> dict[str, tuple[str, int]]:
    """The map written by :func:`write_documents`."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise ValueError(f"{path}:{i}: expected 'sentence<TAB>doc_id<TAB>doc_pos', got {line!r}")
            out[parts[0]] = (parts[1], int(parts[2]))
    return out


def librispeech_document(utt_id: str) -> tuple[str, int]:
    """``"103-1240-0007"`` -> ``("103-1240", 7)``: the chapter is the document."""
    parts = utt_id.split("-")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{utt_id!r} is not a LibriSpeech utterance id (<speaker>-<chapter>-<index>)")
    return f"{parts[0]}-{parts[1]}", int(parts[2])


def _with_doc(sup: dict, mapping: Mapping[str, tuple[str, int]] | None, counts: dict[str, int]) -> dict:
    text = " ".join((sup.get("text") or "").split())
    if mapping is None:
        doc, pos = librispeech_document(sup["id"])
    elif text in mapping:
        doc, pos = mapping[text]
    else:
        doc, pos = f"utt:{sup['id']}", 0
        counts["unmapped"] += 1
    counts["supervisions"] += 1
    return {**sup, "custom": {**(sup.get("custom") or {}), DOC_ID: doc, DOC_POS: int(pos)}}


def add_documents(manifest: str | Path, mapping: Mapping[str, tuple[str, int]] | None) -> dict[str, int]:
    """Add ``doc_id`` / ``doc_pos`` to every supervision of a Lhotse supervision or cut manifest
    (``.jsonl`` / ``.jsonl.gz``), rewriting it in place atomically. ``mapping`` None: LibriSpeech ids
    (:func:`librispeech_document`). Returns ``{"supervisions": n, "unmapped": m}``."""
    manifest = Path(manifest)
    opener = gzip.open if manifest.suffix == ".gz" else open
    counts = {"supervisions": 0, "unmapped": 0}
    tmp = manifest.with_name(manifest.name + ".tmp")
    with opener(manifest, "rt", encoding="utf-8") as fin, opener(tmp, "wt", encoding="utf-8") as fout:
        for line in fin:
            if not line.strip():
                continue
            item = json.loads(line)
            if "supervisions" in item:  # a cut
                item["supervisions"] = [_with_doc(s, mapping, counts) for s in item["supervisions"]]
            else:
                item = _with_doc(item, mapping, counts)
            fout.write(json.dumps(item, ensure_ascii=False) + "\n")
    os.replace(tmp, manifest)
    return counts


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="write <text-dir>/documents.tsv from the unpacked sources")
    m.add_argument("--download-dir", type=Path, required=True, help="holds root/ (asr_kd.corpus.text download)")
    m.add_argument("--text-dir", type=Path, required=True, help="holds {train,dev,test}.txt")
    a = sub.add_parser("add", help="add doc_id / doc_pos to supervision or cut manifests, in place")
    a.add_argument("manifests", nargs="+", type=Path)
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--documents", type=Path, help="documents.tsv of the synthetic corpus")
    g.add_argument("--librispeech", action="store_true", help="LibriSpeech ids: the chapter is the document")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "make":
        from asr_kd.corpus.text import read_lines

        mapping = document_map(args.download_dir / "root")
        sentences = [s for split in ("train", "dev", "test") for s in read_lines(args.text_dir / f"{split}.txt")]
        n = write_documents(args.text_dir / "documents.tsv", mapping, sentences)
        docs = {mapping[s][0] for s in sentences if s in mapping}
        print(f"documents: {n} of {len(sentences)} sentences in {len(docs)} documents -> {args.text_dir}/documents.tsv")
        return 0
    mapping = None if args.librispeech else read_documents(args.documents)
    for path in args.manifests:
        c = add_documents(path, mapping)
        print(f"documents: {path}: {c['supervisions']} supervisions, {c['unmapped']} not in the map")
    return 0


if __name__ == "__main__":
    sys.exit(main())
