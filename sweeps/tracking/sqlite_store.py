"""The default MLflow store, a SQLite file: created and migrated once, under a lock, before any gitsweep
client opens it.

MLflow migrates a fresh SQLite file in every process that opens it, and processes migrating one file at
once fail (`table experiments already exists`, alembic's `expected to match one row`, a
`CircularDependencyError`) and can leave it half-migrated for every later process. So gitsweep makes its
database itself, under a file lock next to it (`mlflow.db.lock`): it puts a complete one in a temporary
file in the same folder (a copy of an empty database that MLflow's own migrations made once, kept in the
user's cache), turns on WAL (readers such as `mlflow ui` then never block a sweep's writes, and
concurrent sweeps wait less on each other), and links it into place (`os.link`, which never replaces a
file someone else made meanwhile). The path never holds a
half-migrated file of gitsweep's making.

A file there that is not at MLflow's schema (another process, a `mlflow ui` or a script, making it right
now, or one that failed half-way) is waited for until it is complete or quiet; a quiet one that holds no
runs is moved aside (`mlflow.db.broken-<time>`) and made anew; one that holds runs is left alone, and the
error says how to upgrade it. Each process checks a database once.
"""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from gitlib.errors import DataError

WAIT_S = 120.0  # longest wait for a database another process is making
QUIET_S = 10.0  # a file unchanged this long, without a journal, is no longer being made
_checked: set[Path] = set()  # the databases this process has made sure of


def sqlite_file(uri: str) -> Path | None:
    """The file of a `sqlite:///path` URI (absolute with four slashes), None for other stores or memory."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path).resolve()


def ensure(uri: str) -> None:
    """Make sure the SQLite database of `uri` exists at MLflow's schema; nothing for other stores."""
    path = sqlite_file(uri)
    if path is None or path in _checked:
        return
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        if _state(path) != "ready":
            _make(path)
    _checked.add(path)


def _make(path: Path) -> None:
    """Under the lock: a database where there is none, or where a half-made one was left."""
    if not path.exists() and _create(path):
        return
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:  # another process is making it: let it finish, or go quiet
        state = _state(path)
        if state == "ready":
            return
        if state == "behind":
            raise DataError(str(path), f"MLflow database at schema {_revision(path)}, this MLflow needs "
                                       f"{head_revision()}: back it up, then run `mlflow db upgrade "
                                       f"sqlite:///{path}`")
        if _quiet(path):
            break
        time.sleep(0.5)
    aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-journal", "-wal", "-shm"):  # its journal goes with it, or it would roll back into ours
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    print(f"{path} was left half-made by another process (no runs in it): moved to {aside}, made anew",
          flush=True)
    if not _create(path):
        raise DataError(str(path), "another process made this MLflow database again while it was being made")


def _create(path: Path) -> bool:
    """Put a complete database beside `path` and link it into place; False if a file got there first."""
    tmp = path.with_name(f".{path.name}.new{os.getpid()}")
    shutil.copyfile(_template(), tmp)
    with sqlite3.connect(tmp) as con:
        con.execute("PRAGMA journal_mode=WAL")  # kept by the file: readers and one writer at a time
    con.close()
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _template() -> Path:
    """An empty database at MLflow's schema, migrated once per MLflow schema on this machine and copied for
    every new home: MLflow's migrations take seconds, a copy takes a millisecond."""
    from mlflow.store.db.utils import _initialize_tables, _verify_schema, create_sqlalchemy_engine

    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gitsweep"
    template = folder / f"mlflow-empty-{head_revision()}.db"
    if template.is_file() and _state(template) == "ready":
        return template
    folder.mkdir(parents=True, exist_ok=True)
    tmp = template.with_name(f".{template.name}.new{os.getpid()}")
    tmp.unlink(missing_ok=True)
    engine = create_sqlalchemy_engine(f"sqlite:///{tmp}")
    try:
        _initialize_tables(engine)  # MLflow's own first-open migration, in a file no one else sees
        _verify_schema(engine)
    finally:
        engine.dispose()  # no connection to the temporary name outlives it
    os.replace(tmp, template)  # whole or not at all: two processes making it at once both leave a good one
    return template


@functools.lru_cache(maxsize=1)
def head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return str(_get_latest_schema_revision())


@functools.lru_cache(maxsize=1)
def _tables() -> frozenset[str]:
    from mlflow.store.db.utils import Base

    return frozenset(Base.metadata.tables)


def _read(path: Path) -> dict[str, Any]:
    """Its tables, alembic revisions and whether it holds runs, read without changing it."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        revisions = [r[0] for r in con.execute("SELECT version_num FROM alembic_version")] \
            if "alembic_version" in tables else []
        runs = "runs" in tables and con.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is not None
    con.close()
    return {"tables": tables, "revisions": revisions, "runs": runs}


def _revision(path: Path) -> str:
    return ", ".join(_read(path)["revisions"]) or "none"


def _state(path: Path) -> str:
    """missing | ready (at MLflow's head, every table there) | behind (holds runs at another schema, an
    older MLflow's) | partial (being made, or left half-made)."""
    if not path.exists():
        return "missing"
    try:
        found = _read(path)
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            raise DataError(str(path), "not an SQLite database: move it away, or pass --tracking-uri") from None
        return "partial"  # locked by its maker, or a header still being written
    complete = _tables() <= found["tables"] and not any(t.startswith("_alembic_tmp") for t in found["tables"])
    if found["revisions"] == [head_revision()] and complete:
        return "ready"
    return "behind" if found["runs"] and len(found["revisions"]) == 1 else "partial"


def _quiet(path: Path) -> bool:
    """No journal beside it (a rollback journal, or a WAL with frames in it) and unchanged for QUIET_S:
    nobody is making it now."""
    journal, wal = Path(f"{path}-journal"), Path(f"{path}-wal")
    if journal.exists() or (wal.exists() and wal.stat().st_size > 0):
        return False
    return time.time() - path.stat().st_mtime >= QUIET_S
