"""What `run` prints while a sweep runs: a live status line on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

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
