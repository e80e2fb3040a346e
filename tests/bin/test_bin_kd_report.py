"""asr_kd.bin.kd_report.append_rows: rows go into the experiment log's table, after its last row, even when
something was written after the log (run_repr_kd.sh's cost table); the heading and header are made once."""

from __future__ import annotations

from asr_kd.bin.kd_report import HEADING, append_rows


def test_rows_land_in_the_log_table_before_what_follows_it(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nintro\n")
    append_rows(md, ["| 1 | a |"])
    text = md.read_text()
    assert text.startswith("# Results\n\nintro\n") and text.count(HEADING) == 1
    assert text.rstrip("\n").endswith("| 1 | a |")
    md.write_text(text + "\n### cost per row\n\n| row | s |\n|---|---|\n| a | 3 |\n")
    append_rows(md, ["| 2 | b |", "| 3 | c |"])
    lines = md.read_text().splitlines()
    assert lines.count(HEADING) == 1
    log = lines.index(HEADING)
    cost = lines.index("### cost per row")
    assert lines.index("| 1 | a |") < lines.index("| 2 | b |") < lines.index("| 3 | c |") < cost
    assert lines.index("| 2 | b |") == lines.index("| 1 | a |") + 1  # the same table: no line between
    assert all(line.startswith("|") for line in lines[lines.index("| 1 | a |") : cost - 1])
    assert log < lines.index("| 1 | a |")
    assert lines[-1] == "| a | 3 |"  # what followed the log is unchanged, at the end
