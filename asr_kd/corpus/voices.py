"""espeak-ng voices for the synthetic corpus: an *accent* (language) plus a *variant* (speaker).

A voice is written the way espeak-ng takes it, ``<accent>+<variant>`` (``en-gb-scotland+f3``).
The voices are split into two disjoint pools:

- **train voices**: :data:`TRAIN_ACCENTS` x (:data:`VARIANTS` minus :data:`HELDOUT_VARIANTS`);
- **held-out voices** (dev and test only): every voice whose accent is in :data:`HELDOUT_ACCENTS`
  *or* whose variant is in :data:`HELDOUT_VARIANTS`.

So every dev/test utterance is spoken by a voice never heard in training: either an unseen accent
(West Midlands), an unseen speaker variant, or both.

The lists are explicit (not read from ``espeak-ng --voices``) so that the corpus is the same on every
machine with espeak-ng 1.51; :func:`check_voices` verifies they are installed.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

TRAIN_ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-029",
    "en-us-nyc",
)
HELDOUT_ACCENTS = ("en-gb-x-gbcwmd",)

# espeak-ng 1.51 variant files (espeak-ng-data/voices/!v), minus "Mr serious" (space in the name)
VARIANTS = (
    "m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 klatt klatt2 klatt3 klatt4 klatt5 klatt6 "
    "Alex Alicia Andrea Andy Annie AnxiousAndy Demonic Denis Diogo Gene Gene2 Henrique Hugo Jacky "
    "Lee Marco Mario Michael Mike Nguyen RicishayMax RicishayMax2 RicishayMax3 Storm Tweaky "
    "UniRobot adam anika anikaRobot announcer antonio aunty belinda benjamin boris caleb croak "
    "david ed edward edward2 fast grandma grandpa gustave iven iven2 iven3 iven4 john kaukovalta "
    "linda marcelo max michel miguel norbert pablo paul pedro quincy rob robert robosoft robosoft2 "
    "robosoft3 robosoft4 robosoft5 robosoft6 robosoft7 robosoft8 sandro shelby steph steph2 "
    "steph3 travis victor whisper whisperf zac"
).split()
VARIANTS = tuple(VARIANTS)
HELDOUT_VARIANTS = (
    "m4",
    "f4",
    "klatt4",
    "Andy",
    "Alicia",
    "Gene2",
    "RicishayMax2",
    "edward2",
    "iven3",
    "robosoft4",
    "steph2",
    "grandma",
    "whisperf",
)


def voice_name(accent: str, variant: str) -> str:
    return f"{accent}+{variant}"


def parse_voice(voice: str) -> tuple[str, str]:
    accent, _, variant = voice.partition("+")
    return accent, variant


def train_voices() -> list[str]:
    """Voices used for the train split (sorted)."""
    return sorted(voice_name(a, v) for a in TRAIN_ACCENTS for v in VARIANTS if v not in HELDOUT_VARIANTS)


def heldout_voices() -> list[str]:
    """Voices used only for dev and test (sorted); disjoint from :func:`train_voices`."""
    voices = {voice_name(a, v) for a in HELDOUT_ACCENTS for v in VARIANTS}
    voices |= {voice_name(a, v) for a in TRAIN_ACCENTS + HELDOUT_ACCENTS for v in HELDOUT_VARIANTS}
    return sorted(voices)


def voices_for_split(split: str) -> list[str]:
    return train_voices() if split == "train" else heldout_voices()


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[set[str], set[str]]:
    def names(kind: str) -> set[str]:
        out = subprocess.run(["espeak-ng", f"--voices={kind}"], capture_output=True, text=True, check=True).stdout
        return {line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1}

    accents = names("en")
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    data_dir = Path(out.split("Data at:")[-1].strip())
    variants = {p.name for p in (data_dir / "voices" / "!v").iterdir()}
    return accents, variants


def check_voices() -> None:
    """Raise ``RuntimeError`` if an accent or variant of the lists is not installed."""
    accents, variants = _installed()
    missing = [a for a in TRAIN_ACCENTS + HELDOUT_ACCENTS if a not in accents]
    missing += [v for v in VARIANTS if v not in variants]
    if missing:
        raise RuntimeError(f"espeak-ng lacks voices {missing}; the corpus needs espeak-ng 1.51")
