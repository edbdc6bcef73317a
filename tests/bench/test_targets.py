"""The table of figures against their targets (bench/targets.py), as the bench's report prints it."""

from __future__ import annotations

from bench.targets import Targets, targets_table


def test_each_row_says_whether_its_target_was_met() -> None:
    targets = Targets()
    targets.add("1", "identify p99", 68.43, "<=", 50, "ms")
    targets.add("3", "batch / identify", 11.479, ">=", 10)
    targets.add("1", "bare Flask's own p99", 98.17, "", None, "ms")
    targets.add("6", "index in the plan", True, "is", True)
    targets.add("5", "sustained rate", None, ">=", 1500, "events/s")  # its phase did not run
    assert [row["met"] for row in targets.rows] == [False, True, None, True, None]
    lines = targets_table({"targets": targets.rows, "targets_met": "2 of 3"})
    assert lines[1].rstrip().endswith("NOT MET") and "68.43 ms" in lines[1] and "<= 50 ms" in lines[1]
    assert lines[2].rstrip().endswith("met") and ">= 10" in lines[2]
    assert "98.17 ms" in lines[3] and lines[3].rstrip().endswith("-")
    assert "yes" in lines[4] and "is yes" in lines[4]
    assert ">= 1500 events/s" in lines[5] and lines[5].split()[-1] == "-"
    assert lines[-1] == "  targets met: 2 of 3"
