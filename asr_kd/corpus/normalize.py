"""Text normalisation for ASR transcripts: ``A-Z``, apostrophe and single spaces.

:func:`normalize` turns a written English sentence into the spoken form an ASR system is trained on:

- Unicode is folded to ASCII (accents dropped, curly quotes/dashes mapped), ``&`` becomes AND;
- numbers are spelt out with ``num2words``: ordinals (``1st`` -> FIRST, ``22nd`` -> TWENTY SECOND),
  years (a bare 4-digit number 1100-2099 -> NINETEEN FIFTY ONE), decimals (``3.14`` ->
  THREE POINT ONE FOUR), thousands separators (``1,000``), ``$5`` -> FIVE DOLLARS, ``5%`` -> FIVE PERCENT;
- a few unambiguous abbreviations are expanded (``Mr.`` -> MISTER, ``Dr.`` -> DOCTOR, ...);
- hyphens and ordinary punctuation become spaces; apostrophes survive only *inside* words
  (``don't``, ``o'clock``), so quoting apostrophes disappear;
- everything is upper-cased and spaces are collapsed.

Sentences that still contain anything outside the alphabet (``@``, ``#``, ``*``, ``=``, URLs,
digits that could not be read, ...) are rejected: :func:`normalize` returns ``None`` for them.
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")

# punctuation that carries no words and is simply replaced by a space
_STRIP = re.compile(r"[.,;:!?\"()\[\]{}\-/_…]")
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "`": "'",
        "\u00b4": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u00a0": " ",
        "\t": " ",
        "\n": " ",
    }
)
_ABBREVIATIONS = {
    r"\bmr\.": "mister",
    r"\bmrs\.": "missus",
    r"\bdr\.": "doctor",
    r"\bprof\.": "professor",
    r"\bvs\.": "versus",
    r"\betc\.": "et cetera",
    r"\bi\.e\.": "that is",
    r"\be\.g\.": "for example",
    r"\bjr\.": "junior",
    r"\bsr\.": "senior",
}
_ABBREV_RE = [(re.compile(k, re.IGNORECASE), v) for k, v in _ABBREVIATIONS.items()]

_MONEY = re.compile(r"\$(\d[\d,]*(?:\.\d+)?)")
_PERCENT = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_THOUSANDS = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_DECADE = re.compile(r"\b(1[1-9]|20)(\d)0'?s\b")  # 1960s -> NINETEEN SIXTIES
_YEAR = re.compile(r"\b(1[1-9]\d\d|20\d\d)\b")
_DECIMAL = re.compile(r"\b\d+\.\d+\b")
_NUMBER = re.compile(r"\b\d+\b")
_APOSTROPHE_EDGE = re.compile(r"(?<![A-Z])'|'(?![A-Z])")
_SPACES = re.compile(r" +")


def _words(n: str | int | float, **kw) -> str:
    return " " + num2words(n, **kw) + " "


def _plural(word: str) -> str:
    if word.endswith("y"):
        return word[:-1] + "ies"
    return word + "s"


def _decade(m: re.Match) -> str:
    year = int(m.group(1) + m.group(2) + "0")
    return " " + _plural(num2words(year, to="year")) + " "


def expand_numbers(text: str) -> str:
    """Spell out every number in ``text`` (lower-case words, hyphens kept)."""
    text = _MONEY.sub(lambda m: m.group(1) + " dollars", text)
    text = _PERCENT.sub(lambda m: m.group(1) + " percent", text)
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _ORDINAL.sub(lambda m: _words(int(m.group(1)), to="ordinal"), text)
    text = _DECADE.sub(_decade, text)
    text = _YEAR.sub(lambda m: _words(int(m.group(1)), to="year"), text)
    text = _DECIMAL.sub(lambda m: _words(float(m.group(0))), text)
    text = _NUMBER.sub(lambda m: _words(int(m.group(0))), text)
    return text


def to_ascii(text: str) -> str:
    """Map typographic characters to ASCII and drop accents (``café`` -> ``cafe``)."""
    text = text.translate(_TRANSLATE)
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def normalize(text: str) -> str | None:
    """Spoken-form upper-case transcript of ``text``, or ``None`` when it cannot be normalised."""
    text = to_ascii(text)
    text = text.replace("&", " and ")
    for pattern, repl in _ABBREV_RE:
        text = pattern.sub(" " + repl + " ", text)
    text = expand_numbers(text)
    text = _STRIP.sub(" ", text).upper()
    text = _SPACES.sub(" ", text).strip()
    text = _APOSTROPHE_EDGE.sub(" ", text)  # quoting apostrophes, not "DON'T"
    text = _SPACES.sub(" ", text).strip()
    if not text or not set(text) <= ALPHABET:
        return None
    return text
