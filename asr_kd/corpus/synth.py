"""Synthesise the corpus with espeak-ng and write Lhotse manifests.

Every utterance is planned before anything is synthesised. Utterance ``i`` of a split gets the id
``synth-<split>-<i:06d>``, the sentence ``sentences[i % len(sentences)]`` of that split's text list
and a voice, speed (``-s``, words per minute) and pitch (``-p``, 0-99) drawn from a
``random.Random`` seeded with ``"<seed>:<id>"``. A plan therefore depends only on the seed, the
text lists and the utterance index: it is the same in every process and every run, and the plan of
a smaller size is a prefix of the plan of a larger one (so ``--size default`` reuses the wavs of
``--size tiny``).

Audio: ``audio/<split>/<id>-<digest>.wav`` (see :func:`wav_path_of`), made by ``espeak-ng --stdout``
(22.05 kHz) piped into ``sox``, which resamples to 16 kHz mono 16-bit, trims leading/trailing
silence below -50 dB and pads 0.1 s / 0.15 s. Files are written atomically (temp file + rename);
a wav that already exists and reads as 16 kHz mono is skipped, so an interrupted run resumes where
it stopped. ``--nj`` synthesis jobs run in parallel.

Command line (stages 2 and 3 of ``egs/synth/ASR/prepare.sh``)::

    python -m asr_kd.corpus.synth synthesize --text-dir data/text --out-dir data/synth \\
        --size tiny --seed 42 --nj 2
    python -m asr_kd.corpus.synth manifests --synth-dir data/synth --out-dir data/manifests

The second writes ``synth_{recordings,supervisions,cuts}_{train,dev,test}.jsonl.gz`` (icefall
naming). Recording paths are absolute, so the manifests work from any directory; rerun the
``manifests`` step after moving the data.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import soundfile as sf

from asr_kd.corpus import voices as V
from asr_kd.corpus.text import read_lines

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
SAMPLE_RATE = 16000
# utterances per split; "default" gives > 10 h of training audio (about 2.5 s per utterance)
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"train": 300, "dev": 50, "test": 50},
    "small": {"train": 3000, "dev": 300, "test": 300},
    "default": {"train": 18000, "dev": 600, "test": 600},
}
#: disk bytes per utterance, measured on the default corpus (19,200 utterances: 1.51 GB of wav, 436 MB of
#: lilcom fbank), rounded up: the free-space check before synthesis (:func:`check_disk_space`)
WAV_BYTES_PER_UTT = 85_000
FBANK_BYTES_PER_UTT = 25_000
#: environment variable that replaces the measured free bytes (tests; a quota the file system does not show)
FREE_BYTES_ENV = "ASR_KD_FREE_BYTES"
SPEED_RANGE = (130, 200)  # espeak-ng -s, words per minute
PITCH_RANGE = (30, 70)  # espeak-ng -p, 0..99
SOX_EFFECTS = "silence 1 0.02 -50d reverse silence 1 0.02 -50d reverse pad 0.1 0.15".split()


@dataclass(frozen=True)
class Utterance:
    """One planned utterance."""

    id: str
    split: str
    voice: str
    speed: int
    pitch: int
    text: str

    @property
    def accent(self) -> str:
        return V.parse_voice(self.voice)[0]

    @property
    def variant(self) -> str:
        return V.parse_voice(self.voice)[1]


# ---------------------------------------------------------------------- planning
def plan_split(
    sentences: Sequence[str], split: str, num: int, seed: int, voices: Sequence[str] | None = None
) -> list[Utterance]:
    """Plan ``num`` utterances of ``split`` (see the module docstring for the rule)."""
    if not sentences:
        raise ValueError(f"no sentences for split {split!r}")
    if split != "train" and num > len(sentences):
        raise ValueError(f"{split}: {num} utterances requested but only {len(sentences)} sentences")
    voices = list(voices if voices is not None else V.voices_for_split(split))
    plan = []
    for i in range(num):
        utt_id = f"synth-{split}-{i:06d}"
        rng = random.Random(f"{seed}:{utt_id}")
        plan.append(
            Utterance(
                id=utt_id,
                split=split,
                voice=rng.choice(voices),
                speed=rng.randint(*SPEED_RANGE),
                pitch=rng.randint(*PITCH_RANGE),
                text=sentences[i % len(sentences)],
            )
        )
    return plan


_FIELDS = [f.name for f in fields(Utterance)]


def write_plan(path: str | Path, plan: Iterable[Utterance]) -> None:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_FIELDS, delimiter="\t")
        w.writeheader()
        for u in plan:
            w.writerow(asdict(u))
    os.replace(tmp, path)


def read_plan(path: str | Path) -> list[Utterance]:
    with open(path, encoding="utf-8", newline="") as f:
        return [
            Utterance(
                id=r["id"],
                split=r["split"],
                voice=r["voice"],
                speed=int(r["speed"]),
                pitch=int(r["pitch"]),
                text=r["text"],
            )
            for r in csv.DictReader(f, delimiter="\t")
        ]


# ---------------------------------------------------------------------- audio
def wav_is_valid(path: str | Path) -> bool:
    """True for an existing, non-empty 16 kHz mono file."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, sf.LibsndfileError):
        return False
    return info.samplerate == SAMPLE_RATE and info.channels == 1 and info.frames > 0


def synthesize_one(utt: Utterance, wav_path: str | Path) -> bool:
    """Write ``wav_path`` for ``utt``; returns False when a valid file was already there."""
    wav_path = Path(wav_path)
    if wav_is_valid(wav_path):
        return False
    tmp = wav_path.with_name(wav_path.stem + ".tmp.wav")
    espeak = subprocess.Popen(
        ["espeak-ng", "-v", utt.voice, "-s", str(utt.speed), "-p", str(utt.pitch), "--stdout", utt.text.lower()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sox = subprocess.run(
        ["sox", "-q", "-G", "-t", "wav", "-", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(tmp), *SOX_EFFECTS],
        stdin=espeak.stdout,
        capture_output=True,
    )
    espeak.stdout.close()
    espeak_err = espeak.stderr.read().decode(errors="replace")
    espeak.stderr.close()
    if espeak.wait() != 0 or sox.returncode != 0 or not wav_is_valid(tmp):
        tmp.unlink(missing_ok=True)
        raise RuntimeError(
            f"{utt.id}: synthesis failed (voice {utt.voice}): {espeak_err.strip()} "
            f"{sox.stderr.decode(errors='replace').strip()}"
        )
    os.replace(tmp, wav_path)
    return True


def wav_path_of(audio_dir: str | Path, utt: Utterance) -> Path:
    """``<audio_dir>/<split>/<id>-<digest>.wav``; the digest covers voice, speed, pitch and text, so a
    changed plan (other text lists or seed) never reuses a wav made for different content."""
    key = f"{utt.voice}|{utt.speed}|{utt.pitch}|{utt.text}".encode()
    return Path(audio_dir) / utt.split / f"{utt.id}-{hashlib.sha1(key).hexdigest()[:8]}.wav"


def synthesize(plan: Sequence[Utterance], audio_dir: str | Path, nj: int = 2) -> int:
    """Synthesise every utterance of ``plan`` into ``audio_dir/<split>/``; returns how many were new.

    In a terminal a progress bar counts the utterances (:mod:`asr_kd.utils.progress`); otherwise a
    ``synth: done/total`` line is printed every 5 %."""
    from asr_kd.utils.progress import progress_bar, progress_enabled

    for split in {u.split for u in plan}:
        (Path(audio_dir) / split).mkdir(parents=True, exist_ok=True)
    t0, done, new = time.time(), 0, 0
    every = max(1, len(plan) // 20)
    bar_on = progress_enabled()

    def report() -> None:
        print(f"synth: {done}/{len(plan)} ({new} new, {time.time() - t0:.0f}s)", flush=True)

    with (
        ThreadPoolExecutor(max_workers=nj) as pool,
        progress_bar(total=len(plan), desc="synth", unit="utt", enabled=bar_on) as bar,
    ):
        for created in pool.map(lambda u: synthesize_one(u, wav_path_of(audio_dir, u)), plan):
            done += 1
            new += created
            bar.update(1)
            if not bar_on and (done % every == 0 or done == len(plan)):
                report()
    if bar_on:
        report()
    return new


class DiskSpaceError(OSError):
    """Not enough free disk for the planned corpus; the message gives both numbers and the directory."""


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system of ``path`` (its nearest existing parent), or ``$ASR_KD_FREE_BYTES``."""
    override = os.environ.get(FREE_BYTES_ENV)
    if override:
        try:
            return int(override)
        except ValueError:
            raise ValueError(f"{FREE_BYTES_ENV}={override!r} is not a number of bytes") from None
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk_space(plan: Sequence[Utterance], audio_dir: str | Path, with_fbank: bool = False) -> int:
    """Refuse to start a synthesis that cannot fit: returns the estimated bytes still to be written.

    The estimate counts the utterances of ``plan`` whose wav is not yet in ``audio_dir`` (a resumed or
    larger run reuses the others) times :data:`WAV_BYTES_PER_UTT`, plus :data:`FBANK_BYTES_PER_UTT` per
    utterance of the plan when ``with_fbank`` (stage 5 stores features for all of them).

    Raises:
        DiskSpaceError: the estimate exceeds :func:`free_bytes` of ``audio_dir``.
    """
    missing = sum(1 for u in plan if not wav_path_of(audio_dir, u).is_file())
    need = missing * WAV_BYTES_PER_UTT + (len(plan) * FBANK_BYTES_PER_UTT if with_fbank else 0)
    free = free_bytes(audio_dir)
    if need > free:
        raise DiskSpaceError(
            f"not enough disk for the corpus in {Path(audio_dir).parent}: about {need / 1e6:.0f} MB needed "
            f"({missing} new wavs x {WAV_BYTES_PER_UTT / 1e3:.0f} kB"
            + (f" + fbank of {len(plan)} utterances x {FBANK_BYTES_PER_UTT / 1e3:.0f} kB" if with_fbank else "")
            + f"), {free / 1e6:.0f} MB free. Free some space, pick a smaller --size, or another --data-dir"
        )
    return need


# ---------------------------------------------------------------------- manifests
def build_manifests(plan: Sequence[Utterance], audio_dir: str | Path, documents: dict | None = None):
    """(RecordingSet, SupervisionSet, CutSet) of one split, validated. ``documents``
    (:func:`asr_kd.corpus.documents.read_documents`): add ``doc_id`` / ``doc_pos`` to the supervisions."""
    from lhotse import CutSet, MonoCut, Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.audio import AudioSource
    from lhotse.qa import validate, validate_recordings_and_supervisions

    def _doc(u: Utterance) -> dict:
        if documents is None:
            return {}
        doc, pos = documents.get(u.text, (f"utt:{u.id}", 0))
        return {"doc_id": doc, "doc_pos": int(pos)}

    recordings, supervisions, cuts = [], [], []
    for u in plan:
        path = wav_path_of(audio_dir, u).resolve()
        info = sf.info(str(path))
        duration = info.frames / info.samplerate
        recordings.append(
            Recording(
                id=u.id,
                sources=[AudioSource(type="file", channels=[0], source=str(path))],
                sampling_rate=info.samplerate,
                num_samples=info.frames,
                duration=duration,
            )
        )
        supervisions.append(
            SupervisionSegment(
                id=u.id,
                recording_id=u.id,
                start=0.0,
                duration=duration,
                channel=0,
                text=u.text,
                language="English",
                speaker=u.voice,
                custom={"accent": u.accent, "variant": u.variant, "speed": u.speed, "pitch": u.pitch, **_doc(u)},
            )
        )
        cuts.append(
            MonoCut(
                id=u.id,
                start=0.0,
                duration=duration,
                channel=0,
                recording=recordings[-1],
                supervisions=[supervisions[-1]],
            )
        )
    recs = RecordingSet.from_recordings(recordings)
    sups = SupervisionSet.from_segments(supervisions)
    validate_recordings_and_supervisions(recs, sups)
    cuts = CutSet.from_cuts(cuts)  # cut id == recording id == supervision id == utterance id
    validate(cuts)
    return recs, sups, cuts


def write_manifests(
    synth_dir: str | Path, out_dir: str | Path, prefix: str = "synth", documents: str | Path | None = None
) -> dict[str, int]:
    """Manifests for every ``plan_<split>.tsv`` in ``synth_dir``; returns utterances per split.
    ``documents``: a ``documents.tsv`` (:mod:`asr_kd.corpus.documents`) whose ids go to the supervisions."""
    from asr_kd.corpus.documents import read_documents

    docs = read_documents(documents) if documents is not None else None
    synth_dir, out_dir = Path(synth_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        plan_file = synth_dir / f"plan_{split}.tsv"
        if not plan_file.exists():
            continue
        plan = read_plan(plan_file)
        recs, sups, cuts = build_manifests(plan, synth_dir / "audio", docs)
        recs.to_file(out_dir / f"{prefix}_recordings_{split}.jsonl.gz")
        sups.to_file(out_dir / f"{prefix}_supervisions_{split}.jsonl.gz")
        cuts.to_file(out_dir / f"{prefix}_cuts_{split}.jsonl.gz")
        counts[split] = len(plan)
        print(f"manifests: {split}: {len(plan)} utterances, {sum(r.duration for r in recs) / 3600:.2f} h")
    return counts


# ---------------------------------------------------------------------- CLI
def plan_all(text_dir: str | Path, size: str, seed: int) -> dict[str, list[Utterance]]:
    counts = SIZES[size]
    return {
        split: plan_split(read_lines(Path(text_dir) / f"{split}.txt"), split, counts[split], seed) for split in SPLITS
    }


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synthesize", help="plan and synthesise the utterances")
    s.add_argument("--text-dir", type=Path, required=True, help="holds {train,dev,test}.txt")
    s.add_argument("--out-dir", type=Path, required=True, help="receives plan_<split>.tsv and audio/")
    s.add_argument("--size", choices=sorted(SIZES), default="tiny")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--nj", type=int, default=2, help="parallel synthesis jobs")
    s.add_argument(
        "--with-fbank", action="store_true", help="the disk check also counts the pre-computed fbank of stage 5"
    )
    m = sub.add_parser("manifests", help="write Lhotse manifests for the synthesised audio")
    m.add_argument("--synth-dir", type=Path, required=True)
    m.add_argument("--out-dir", type=Path, required=True)
    m.add_argument("--prefix", default="synth")
    m.add_argument("--documents", type=Path, default=None, help="documents.tsv (asr_kd.corpus.documents): doc ids")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "synthesize":
        V.check_voices()
        plans = plan_all(args.text_dir, args.size, args.seed)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for split, plan in plans.items():
            write_plan(args.out_dir / f"plan_{split}.tsv", plan)
        every = [u for split in SPLITS for u in plans[split]]
        print(f"synth: size {args.size}: " + ", ".join(f"{k} {len(v)}" for k, v in plans.items()))
        try:
            check_disk_space(every, args.out_dir / "audio", with_fbank=args.with_fbank)
        except DiskSpaceError as e:
            print(f"synth: error: {e}", file=sys.stderr)
            return 1
        synthesize(every, args.out_dir / "audio", nj=args.nj)
    else:
        write_manifests(args.synth_dir, args.out_dir, prefix=args.prefix, documents=args.documents)
    return 0


if __name__ == "__main__":
    sys.exit(main())
