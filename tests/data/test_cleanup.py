"""Clean-up of killed builds: the temporary folders of data set builds and the temporary files of
generator trainings a killed process left are removed by the next build of that digest, and never
while their owner may still be running (another process holding the lock, or a live local pid)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from gitlib.configs import to_dict
from gitlib.data.builds import dataset_dir, ensure_built, load_built
from gitlib.data.spec import DatasetSpec
from gitlib.train.config import GeneratorConfig
from sweeps.stores import generators as gs

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _spec(root: Path) -> DatasetSpec:
    return DatasetSpec(source="k49", root=str(root), nuisance="rotation", max_per_class=12)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _leftover(final: Path, pid: int) -> Path:
    """A killed build's temporary folder: half the files, no manifest."""
    tmp = final.parent / f".{final.name}.tmp-{pid}-0badc0de"
    tmp.mkdir(parents=True)
    (tmp / "train.parquet").write_bytes(b"half a parquet file")
    return tmp


@pytest.fixture
def sleeper() -> Any:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def test_dead_builders_leftovers_go_live_ones_stay(k49_root: Path, tmp_path: Path, sleeper: Any) -> None:
    spec, storage = _spec(k49_root), tmp_path / "storage"
    final = dataset_dir(spec, storage)
    dead, live = _leftover(final, _dead_pid()), _leftover(final, sleeper.pid)
    other = _leftover(final.with_name("0123456789abcdef"), _dead_pid())
    _, built = ensure_built(spec, storage)
    # the next build of the digest removes a dead process's leftover ...
    assert built and not dead.exists() and (final / "manifest.json").is_file()
    # ... keeps one whose pid is alive on this host (its owner may still be writing) ...
    assert live.exists()
    # ... and leaves other digests' leftovers to their own builds
    assert other.exists()
    sleeper.kill()
    sleeper.wait()
    again = _leftover(final, _dead_pid())
    data, built = ensure_built(spec, storage)
    # a reuse removes leftovers too, when the lock is free
    assert not built and not live.exists() and not again.exists() and data.digest == final.name


# The child is a running build: ensure_built with a pause after its first Parquet file, so its
# temporary folder is half written while the test tries to build the same spec.
_BUILDER = """
import json, sys, time, torch
from pathlib import Path
import gitlib.data.builds as builds
from gitlib.configs import from_dict
from gitlib.data.spec import DatasetSpec
torch.set_num_threads(1)
spec = from_dict(DatasetSpec, json.loads(sys.argv[1]))
storage, sync = Path(sys.argv[2]), Path(sys.argv[3])
write_split = builds.write_split
def paused(path, name, split):
    write_split(path, name, split)
    if name == "train":
        (sync / "paused").touch()
        while not (sync / "go").exists():
            time.sleep(0.02)
builds.write_split = paused
data, built = builds.ensure_built(spec, storage)
print(built, int(data.train_x.sum()))
"""


def test_running_build_keeps_its_folder_and_finishes(k49_root: Path, tmp_path: Path) -> None:
    spec, storage, sync = _spec(k49_root), tmp_path / "storage", tmp_path / "sync"
    sync.mkdir()
    final = dataset_dir(spec, storage)
    child = subprocess.Popen([sys.executable, "-c", _BUILDER, json.dumps(to_dict(spec)), str(storage), str(sync)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for(sync / "paused")
    (tmp,) = final.parent.glob(f".{final.name}.tmp-*")
    written = (tmp / "train.parquet").read_bytes()
    second: dict[str, Any] = {}

    def build_too() -> None:
        second["data"], second["built"] = ensure_built(spec, storage)

    waiter = threading.Thread(target=build_too)
    waiter.start()
    time.sleep(1.0)
    # the second builder waits for the lock; the running build's folder is untouched
    assert waiter.is_alive() and (tmp / "train.parquet").read_bytes() == written
    (sync / "go").touch()
    out, err = child.communicate(timeout=120)
    waiter.join(timeout=120)
    assert child.returncode == 0, err
    built, total = out.split()
    # the running build finished intact; the second one reused it
    assert built == "True" and second["built"] is False
    assert int(second["data"].train_x.sum()) == int(total) == int(load_built(final).train_x.sum())
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name, f"{final.name}.lock"]


# Holds a lock file until told to stop (a builder or trainer busy elsewhere).
_HOLDER = """
import sys, time
from pathlib import Path
from filelock import FileLock
with FileLock(sys.argv[1]):
    Path(sys.argv[2], "held").touch()
    while not Path(sys.argv[2], "go").exists():
        time.sleep(0.02)
"""


def _hold(lock: Path, sync: Path) -> subprocess.Popen:
    sync.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock), str(sync)], env=ENV)
    _wait_for(sync / "held")
    return proc


def test_reuse_leaves_leftovers_while_the_lock_is_held(k49_root: Path, tmp_path: Path) -> None:
    spec, storage = _spec(k49_root), tmp_path / "storage"
    final = ensure_built(spec, storage)[0].path
    assert final is not None
    tmp = _leftover(final, _dead_pid())
    holder = _hold(final.parent / f"{final.name}.lock", tmp_path / "sync")
    _, built = ensure_built(spec, storage)
    # a reuse does not wait for the lock and removes nothing while someone holds it
    assert not built and tmp.exists()
    (tmp_path / "sync" / "go").touch()
    holder.wait(timeout=60)
    ensure_built(spec, storage)
    assert not tmp.exists()


# ---- generators ---------------------------------------------------------------------------------------------


def _fake_train(entry: gs.StoredGenerator, cfg: Any, data: Any, device: Any, log: Any) -> None:
    gs._atomic_text("{}", entry.folder / gs.READY)


def test_dead_trainers_temp_files_go(tmp_path: Path, sleeper: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gs, "_train", _fake_train)  # the store's bookkeeping, not a real training
    cfg, data = GeneratorConfig(), SimpleNamespace(digest="d" * 16)
    folder = gs.locate(tmp_path, data.digest, cfg).folder
    folder.mkdir(parents=True)
    dead = _dead_pid()
    (folder / "checkpoint.pt").write_bytes(b"iteration 100")
    stale = [folder / f"checkpoint.pt.tmp{dead}", folder / f"READY.tmp{dead}", folder / f"metrics.json.tmp{dead}"]
    for path in stale:
        path.write_bytes(b"half written")
    live = folder / f"checkpoint.pt.tmp{sleeper.pid}"
    live.write_bytes(b"half written")
    entry = gs.get_generator(cfg, data, tmp_path, torch.device("cpu"), log=lambda _: None)
    # a dead trainer's temporary files go; a live pid's stay; the real files are untouched
    assert entry.ready and not any(p.exists() for p in stale) and live.exists()
    assert (folder / "checkpoint.pt").read_bytes() == b"iteration 100"
    sleeper.kill()
    sleeper.wait()
    gs.get_generator(cfg, data, tmp_path, torch.device("cpu"), log=lambda _: None)
    # next to a finished generator, removed by the next get_generator once the lock is free
    assert not live.exists()


# A trainer mid-checkpoint: holds train.lock with its temporary checkpoint written, then renames it.
_TRAINER = """
import os, sys, time
from pathlib import Path
from filelock import FileLock
folder, sync = Path(sys.argv[1]), Path(sys.argv[2])
with FileLock(str(folder / "train.lock")):
    tmp = folder / f"checkpoint.pt.tmp{os.getpid()}"
    tmp.write_bytes(b"iteration 200, part")
    (sync / "held").touch()
    while not (sync / "go").exists():
        time.sleep(0.02)
    with tmp.open("ab") as f:
        f.write(b" two")
    os.replace(tmp, folder / "checkpoint.pt")
    (folder / "READY").write_text("{}")
"""


def test_running_trainer_keeps_its_temp_file(tmp_path: Path) -> None:
    cfg, data = GeneratorConfig(), SimpleNamespace(digest="e" * 16)
    folder = gs.locate(tmp_path, data.digest, cfg).folder
    folder.mkdir(parents=True)
    sync = tmp_path / "sync"
    sync.mkdir()
    trainer = subprocess.Popen([sys.executable, "-c", _TRAINER, str(folder), str(sync)], env=ENV)
    _wait_for(sync / "held")
    logs: list[str] = []
    result: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: result.update(
        entry=gs.get_generator(cfg, data, tmp_path, torch.device("cpu"), log=logs.append, poll_s=0.1)))
    waiter.start()
    time.sleep(1.0)
    # the second caller waits for the trainer; the trainer's temporary file is untouched
    assert waiter.is_alive() and (folder / f"checkpoint.pt.tmp{trainer.pid}").read_bytes() == b"iteration 200, part"
    (sync / "go").touch()
    assert trainer.wait(timeout=60) == 0
    waiter.join(timeout=60)
    # the trainer finished intact; the waiter got the finished generator
    assert result["entry"].ready and (folder / "checkpoint.pt").read_bytes() == b"iteration 200, part two"
    assert logs and "waiting" in logs[0]
