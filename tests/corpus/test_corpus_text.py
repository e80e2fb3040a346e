"""Tests for asr_kd.corpus.text: extraction from WordNet / fortunes files, filtering, splitting."""

from __future__ import annotations

import pytest

from asr_kd.corpus import text as T

WORDNET_DATA = """\
  1 This software and database is being provided to you, the LICENSEE, by
  2 Princeton University "AS IS" and with the following licence
00001740 29 v 04 breathe 0 take_a_breath 0 002 @ 00001 v 0000 | draw air into, and expel out of, the lungs; "I can breathe better when the air is clean"; "The patient is respiring"
00002724 29 v 01 choke 0 001 @ 00001740 v 0000 | breathe with great difficulty; "She choked with emotion when she spoke about her deceased husband"
00003000 03 n 01 entity 0 000 | that which is perceived to have its own distinct existence
"""

FORTUNES = """\
A clash of doctrine is not a disaster -- it is an opportunity.
%
A dream will always triumph over reality, once it is given the chance.
		-- Stanislaw Lem
%
(1) Avoid fried meats which angry up the blood.
(2) Keep the juices flowing by jangling around gently as you move.
%
Q: How many engineers does it take?  A: Two, and a spare.
"""


@pytest.fixture
def debian_root(tmp_path):
    wn = tmp_path / T.WORDNET_DIR
    wn.mkdir(parents=True)
    (wn / "data.verb").write_text(WORDNET_DATA)
    fd = tmp_path / T.FORTUNES_DIR
    fd.mkdir(parents=True)
    (fd / "wisdom.u8").write_text(FORTUNES)
    (fd / "wisdom").write_text("latin-1 duplicate, must be ignored\n%\n")
    (fd / "ascii-art.u8").write_text("This picture is skipped entirely by name.\n%\n")
    return tmp_path


def test_wordnet_examples(debian_root):
    got = list(T.wordnet_examples([debian_root / T.WORDNET_DIR / "data.verb"]))
    assert got == [
        "I can breathe better when the air is clean",
        "The patient is respiring",
        "She choked with emotion when she spoke about her deceased husband",
    ]


def test_fortune_entries_drop_attribution_and_enumeration(debian_root):
    entries = list(T.fortune_entries(debian_root / T.FORTUNES_DIR / "wisdom.u8"))
    assert len(entries) == 4
    assert entries[1] == "A dream will always triumph over reality, once it is given the chance."
    assert "Stanislaw" not in " ".join(entries)
    assert entries[2].startswith("Avoid fried meats") and "(2)" not in entries[2]


def test_split_sentences():
    assert T.split_sentences("One here. Two there! Three? yes. Four") == [
        "One here.",
        "Two there!",
        "Three? yes.",
        "Four",
    ]
    assert T.split_sentences('He said "Go." Then left.') == ['He said "Go."', "Then left."]


def test_fortune_files_skip_list(debian_root):
    names = [p.name for p in T.fortune_files(debian_root / T.FORTUNES_DIR)]
    assert names == ["wisdom.u8"]


def test_text_filter():
    f = T.TextFilter(min_words=3, max_words=5)
    assert f("The patient is respiring") == "THE PATIENT IS RESPIRING"
    assert f("Too short") is None
    assert f("one two three four five six") is None
    assert f("what the fuck is that") is None
    assert f("a @ b c d") is None


def test_split_is_disjoint_deterministic_and_order_independent():
    sentences = [f"SENTENCE NUMBER {i}" for i in range(200)] + ["SENTENCE NUMBER 7"] * 5
    a = T.split_sentences_train_dev_test(sentences, num_dev=20, num_test=30, seed=1)
    b = T.split_sentences_train_dev_test(list(reversed(sentences)), num_dev=20, num_test=30, seed=1)
    assert a == b
    assert (len(a["dev"]), len(a["test"]), len(a["train"])) == (20, 30, 150)
    train = set(a["train"])
    assert not train & set(a["dev"]) and not train & set(a["test"]) and not set(a["dev"]) & set(a["test"])
    c = T.split_sentences_train_dev_test(sentences, num_dev=20, num_test=30, seed=2)
    assert c["dev"] != a["dev"]
    with pytest.raises(ValueError):
        T.split_sentences_train_dev_test(sentences[:10], num_dev=5, num_test=5, seed=1)


def test_prepare_text_end_to_end(debian_root, tmp_path):
    out = tmp_path / "text"
    splits = T.prepare_text(debian_root, out, num_dev=1, num_test=1, seed=3, min_word_count=1)
    every = splits["train"] + splits["dev"] + splits["test"]
    assert len(every) == len(set(every)) == 9
    assert "I CAN BREATHE BETTER WHEN THE AIR IS CLEAN" in every
    assert "HOW MANY ENGINEERS DOES IT TAKE" in every  # speaker label "Q:" removed
    assert all(set(s) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ") for s in every)
    for name, lines in splits.items():
        assert T.read_lines(out / f"{name}.txt") == lines
    sources = dict(line.split("\t")[:2] for line in T.read_lines(out / "sources.tsv"))
    assert sources["THE PATIENT IS RESPIRING"] == "wordnet"
    assert sources["A CLASH OF DOCTRINE IS NOT A DISASTER IT IS AN OPPORTUNITY"] == "fortunes"
    again = T.prepare_text(debian_root, tmp_path / "again", num_dev=1, num_test=1, seed=3, min_word_count=1)
    assert again == splits


def test_drop_rare_words():
    sentences = ["A B C", "A B D", "A C", "B C D", "X A B", "A B C"]
    # document frequencies: A 4, B 4, C 3, D 2, X 1 (the duplicate counts once)
    assert T.drop_rare_words(sentences, 1) == sorted(set(sentences))
    assert T.drop_rare_words(sentences, 2) == ["A B C", "A B D", "A C", "B C D"]
    assert T.drop_rare_words(sentences, 3) == ["A B C", "A C"]
    assert T.drop_rare_words(sentences, 5) == []


def test_prepare_text_without_sources(tmp_path):
    with pytest.raises(FileNotFoundError):
        T.prepare_text(tmp_path, tmp_path / "out")
