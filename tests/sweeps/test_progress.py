"""What `run` prints while a sweep runs: a live status line on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from sweeps.tracking.progress import Progress

CONFIG = {"classifier": {"gen_frac": 0.3}, "seed": 1, "__sampled": ["classifier.gen_frac", "seed"]}
OBJECTIVES = [("test/balanced_acc", "max"), ("ekld/tail", "min")]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(progress: Progress) -> None:
    progress.started("t1", CONFIG)
    for epoch in range(1, 4):
        progress.result("t1", CONFIG, {"epoch": epoch, "train/loss": 1.0 / epoch})
    progress.finished("t1", CONFIG, {"epoch": 3, "test/balanced_acc": 0.8, "ekld/tail": 0.05})
    progress.close()


def test_plain_output_is_a_line_per_start_and_end() -> None:
    out = io.StringIO()
    drive(Progress(4, OBJECTIVES, "classifier", stream=out))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "t1 started" in lines[0] and "t1 finished" in lines[1], lines
    assert "test/balanced_acc 0.8" in lines[1] and "ekld/tail 0.05" in lines[1]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()  # no terminal control codes in a log


def test_verbose_adds_the_epoch_lines() -> None:
    out = io.StringIO()
    drive(Progress(4, OBJECTIVES, "classifier", verbose=True, stream=out))
    assert sum(" epoch " in line for line in out.getvalue().splitlines()) == 3


def test_terminal_gets_a_live_status_line() -> None:
    out = Terminal()
    drive(Progress(4, OBJECTIVES, "classifier", stream=out))
    text = out.getvalue()
    assert "\r\x1b[2K" in text  # redrawn in place
    final = text.rsplit("\r\x1b[2K", 1)[1]
    assert final.startswith("trials: 1 done, 0 running, 3 pending, 0 failed")
    assert "best test/balanced_acc 0.8" in final and "best ekld/tail 0.05" in final and "left" in final


def _store_with_generator(root: Path, iteration: int, total: int, started_s_ago: float, pid: int,
                          digest: str = "1a2b3c4d5e6f7a8b9c0d") -> Path:
    """A generator store folder as sweeps.stores.generators leaves it while it trains: its start event,
    and one losses record per checkpoint (the last one `iteration`, written now)."""
    folder = root / "generators" / digest
    folder.mkdir(parents=True)
    start = {"event": "started", "from_iteration": 0, "iterations": total, "time": time.time() - started_s_ago,
             "host": socket.gethostname(), "pid": pid}
    (folder / "events.jsonl").write_text(json.dumps(start) + "\n")
    (folder / "losses.jsonl").write_text("".join(json.dumps({"iteration": i, "gen": 1.0}) + "\n"
                                                 for i in range(100, iteration + 1, 100)))
    return folder


def test_the_status_line_shows_the_generator_being_trained(tmp_path: Path) -> None:
    """The reported case: a baseline trial has finished and a GIT trial waits for the shared generator.
    The per-trial estimate would say the time left equals the time elapsed; the line shows the
    generator's iteration out of its total and its own time to go, and no sweep estimate meanwhile."""
    folder = _store_with_generator(tmp_path, iteration=400, total=2000, started_s_ago=100, pid=os.getpid())
    progress = Progress(2, OBJECTIVES, "classifier", storage=tmp_path, stream=io.StringIO())
    progress.started("base", CONFIG)
    progress.finished("base", CONFIG, {"test/balanced_acc": 0.8})
    progress.started("git", CONFIG)
    line = progress.status()
    assert "training generator 1a2b3c4d: iteration 400/2000" in line, line
    assert "~6m40s to go" in line  # 400 iterations in 100 s: 1600 more take 400 s
    assert " left" not in line  # no estimate for the sweep from a trial time the generator's wait is not

    (folder / "READY").write_text("{}")  # trained: the estimate from the trials' times comes back
    progress._training = (-math.inf, [])
    line = progress.status()
    assert "generator" not in line and "~" in line and " left" in line, line


def test_a_dead_trainer_or_an_idle_sweep_shows_no_generator(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs: the training it started was killed
    _store_with_generator(tmp_path, iteration=400, total=2000, started_s_ago=100, pid=dead.pid)
    progress = Progress(2, OBJECTIVES, "classifier", storage=tmp_path, stream=io.StringIO())
    progress.started("git", CONFIG)
    assert "generator" not in progress.status()
    _store_with_generator(tmp_path, iteration=0, total=2000, started_s_ago=5, pid=os.getpid(), digest="ffff0000aaaa")
    progress._training = (-math.inf, [])
    assert "training generator ffff0000: iteration 0/2000, time to go known after its first checkpoint" \
        in progress.status()
    progress.finished("git", CONFIG, {})  # nothing of this sweep runs: nothing waits for it
    assert "generator" not in progress.status()
