import math
import time

import pytest

from asr_kd.decoding.wer import (
    Timer,
    compute_wer,
    measure_rtf,
    result_path,
    write_errs,
    write_recogs,
    write_wer_summary,
)

RESULTS = [
    ("utt2", "A B C", ["A", "C"]),  # 1 deletion
    ("utt1", "A B C D", "A X C D E"),  # 1 substitution, 1 insertion
    ("utt3", "", ""),
]


def test_counts_hand_computed():
    r = compute_wer(RESULTS)
    assert (r.ins, r.dels, r.subs, r.num_ref_words, r.num_utts) == (1, 1, 1, 7, 3)
    assert r.errors == 3 and r.corr == 5
    assert r.wer == pytest.approx(300 / 7)
    # characters without spaces: ABCD/AXCDE (1 sub, 1 ins), ABC/AC (1 del) over 7
    assert (r.char_ins, r.char_dels, r.char_subs, r.num_ref_chars) == (1, 1, 1, 7)
    assert r.cer == pytest.approx(300 / 7)
    # with spaces: "A B C D"/"A X C D E" (1 sub, 2 ins), "A B C"/"A C" (2 del) over 12
    s = compute_wer(RESULTS, cer_keep_spaces=True)
    assert (s.char_ins, s.char_dels, s.char_subs, s.num_ref_chars) == (2, 2, 1, 12)
    assert s.cer == pytest.approx(500 / 12)


def test_cer_space_convention_and_empty_refs():
    r = compute_wer([("u", "AB CD", "ABCD")])
    assert r.wer == pytest.approx(100.0)  # 1 sub + 1 del over 2 words
    assert r.cer == 0.0
    assert compute_wer([("u", "AB CD", "ABCD")], cer_keep_spaces=True).cer == pytest.approx(20.0)
    assert compute_wer([("u", "", "")]).wer == 0.0
    assert math.isinf(compute_wer([("u", "", "X")]).wer)
    assert compute_wer([("u", "A", "A")], compute_cer=False).cer is None


def test_write_recogs(tmp_path):
    p = result_path(tmp_path, "recogs", "test-clean", "greedy_search")
    assert p.name == "recogs-test-clean-greedy_search.txt"
    write_recogs(p, RESULTS)
    assert p.read_text().splitlines() == [
        "utt1:\tref=['A', 'B', 'C', 'D']",
        "utt1:\thyp=['A', 'X', 'C', 'D', 'E']",
        "utt2:\tref=['A', 'B', 'C']",
        "utt2:\thyp=['A', 'C']",
        "utt3:\tref=[]",
        "utt3:\thyp=[]",
    ]


def test_write_errs(tmp_path):
    p = result_path(tmp_path, "errs", "dev", "beam_4")
    r = write_errs(p, RESULTS)
    assert r.wer == pytest.approx(300 / 7)
    lines = p.read_text().splitlines()
    assert lines[0] == "%WER = 42.86"
    assert lines[1] == ("Errors: 1 insertions, 1 deletions, 1 substitutions, over 7 reference words (5 correct)")
    assert lines[2].startswith("%CER = 42.86 (1 insertions, 1 deletions, 1 substitutions")
    i = lines.index("PER-UTT DETAILS: corr or (ref->hyp)")
    assert lines[i + 1 : i + 4] == [
        "utt1:\tA (B->X) C D (*->E)",
        "utt2:\tA (B->*) C",
        "utt3:\t",
    ]
    i = lines.index("SUBSTITUTIONS: count ref -> hyp")
    assert lines[i + 1] == "1   B -> X"
    i = lines.index("DELETIONS: count ref")
    assert lines[i + 1] == "1   B"
    i = lines.index("INSERTIONS: count hyp")
    assert lines[i + 1] == "1   E"
    i = lines.index("PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp")
    stats = {l.split()[0]: l.split()[1:] for l in lines[i + 1 :]}
    assert stats["B"] == ["0", "2", "2", "0"]
    assert stats["A"] == ["2", "0", "2", "2"]
    assert stats["X"] == ["0", "1", "0", "1"]
    assert stats["E"] == ["0", "1", "0", "1"]
    assert lines[i + 1].split()[0] == "B"  # most errors first


def test_wer_summary(tmp_path):
    p = result_path(tmp_path, "wer-summary", "dev", "x")
    write_wer_summary(p, {"beam_4": 5.0, "greedy": 6.25})
    assert p.read_text().splitlines() == ["settings\tWER", "beam_4\t5.00", "greedy\t6.25"]


def test_timer_and_rtf():
    t = Timer()
    with t:
        time.sleep(0.01)
    with t:
        time.sleep(0.01)
    assert t.elapsed >= 0.02
    assert t.rtf(2.0) == pytest.approx(t.elapsed / 2.0)
    assert measure_rtf(1.0, 4.0) == 0.25
    with pytest.raises(ValueError):
        measure_rtf(1.0, 0.0)
