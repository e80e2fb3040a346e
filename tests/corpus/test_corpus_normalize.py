"""Tests for asr_kd.corpus.normalize."""

from __future__ import annotations

import pytest

from asr_kd.corpus.normalize import ALPHABET, expand_numbers, normalize, to_ascii


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("She struck her head on the low ceiling.", "SHE STRUCK HER HEAD ON THE LOW CEILING"),
        ("Don't panic!", "DON'T PANIC"),
        ("'Hello,' she said.", "HELLO SHE SAID"),
        ("the dogs' bowls", "THE DOGS BOWLS"),
        ("o'clock", "O'CLOCK"),
        ("I have 3 cats", "I HAVE THREE CATS"),
        ("He came 1st, she 22nd", "HE CAME FIRST SHE TWENTY SECOND"),
        ("Born in 1951 in Ohio", "BORN IN NINETEEN FIFTY ONE IN OHIO"),
        ("in the 1960s", "IN THE NINETEEN SIXTIES"),
        ("pi is 3.14", "PI IS THREE POINT ONE FOUR"),
        ("1,000 ships", "ONE THOUSAND SHIPS"),
        ("it costs $5", "IT COSTS FIVE DOLLARS"),
        ("a 5% raise", "A FIVE PERCENT RAISE"),
        ("Mr. Smith & Dr. Who", "MISTER SMITH AND DOCTOR WHO"),
        ("well-known   café \u2014 “nice”", "WELL KNOWN CAFE NICE"),
        ("It\u2019s fine", "IT'S FINE"),
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "   ", "...", "mail me@home.org", "a * b = c", "#include <stdio.h>", "50\u00b0 north", "\u65e5\u672c"]
)
def test_unnormalisable_text_is_rejected(raw):
    assert normalize(raw) is None


def test_output_alphabet_and_spacing():
    out = normalize("  Hello,\tworld!!  It's   42 -- isn't it?  ")
    assert out == "HELLO WORLD IT'S FORTY TWO ISN'T IT"
    assert set(out) <= ALPHABET and "  " not in out


def test_expand_numbers_and_ascii():
    assert "twenty-first" in expand_numbers("21st")
    assert "nineteen oh-five" in expand_numbers("1905")
    assert to_ascii("na\u00efve \u2018x\u2019") == "naive 'x'"
