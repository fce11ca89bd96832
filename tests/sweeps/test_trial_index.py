"""The trial index: a whole file at Tune's snapshots, one journal line per trial end in between."""

from __future__ import annotations

from pathlib import Path

from sweeps import results as rs


def _rec(tid: str, status: str, group: str = "g0000", repeat: int = 0, acc: float = 0.0) -> rs.TrialRecord:
    return rs.TrialRecord(tid, status, {rs.GROUP_KEY: group, rs.REPEAT_KEY: repeat}, {"acc": acc})


def test_journal_lines_are_laid_over_the_index_and_a_cut_line_is_ignored(tmp_path: Path) -> None:
    index = tmp_path / "trials.json"
    rs.write_index(index, [_rec("a", "RUNNING"), _rec("b", "RUNNING", repeat=1)])
    rs.append_record(index, _rec("a", "TERMINATED", acc=0.9))
    rs.append_record(index, _rec("c", "TERMINATED", group="g0001", acc=0.7))
    with rs.journal_of(index).open("a") as f:
        f.write('{"trial_id": "d", "sta')  # a kill in the middle of a line
    got = {r.trial_id: r for r in rs.read_index(index)}
    assert set(got) == {"a", "b", "c"}
    assert got["a"].status == "TERMINATED" and got["a"].last == {"acc": 0.9}
    assert got["c"].group_id == "g0001"


def test_rewriting_the_index_empties_the_journal(tmp_path: Path) -> None:
    index = tmp_path / "trials.json"
    rs.append_record(index, _rec("a", "TERMINATED"))
    records = rs.read_index(index)
    rs.write_index(index, records)
    assert not rs.journal_of(index).exists()
    assert [r.trial_id for r in rs.read_index(index)] == ["a"]


def test_a_repeat_run_again_under_a_new_id_replaces_the_lost_unfinished_one(tmp_path: Path) -> None:
    index = tmp_path / "trials.json"
    rs.write_index(index, [_rec("lost", "RUNNING", repeat=2), _rec("done", "TERMINATED", repeat=1)])
    rs.append_record(index, _rec("again", "TERMINATED", repeat=2))
    assert sorted(r.trial_id for r in rs.read_index(index)) == ["again", "done"]
