"""Sweep storage on an object store or any pyarrow file system URI (`s3://`, `gs://`, `file:///...`).

A POSIX storage path (the default) is used as it always was: this module is only involved when
`storage` is a URI. Then:

- Ray Tune writes its experiment to `<uri>/sweeps/<name>/tune` itself (pyarrow file systems).
- Built data sets and generators live under `<uri>/datasets/<digest>/` and `<uri>/generators/<digest>/`.
  Each process works in a local cache folder (`$GITSWEEP_CACHE/<hash of uri>`, default
  `~/.cache/gitsweep/<hash>`): it downloads a finished folder when the remote one has its completion
  marker (`manifest.json`, `READY`), otherwise builds or trains locally and uploads, marker last
  (a finished generator is uploaded without its training checkpoint).
- One builder / trainer per digest across the cluster: a lock held in a detached named Ray actor
  (`gitsweep-locks`, namespace `gitsweep`) when running under Ray, a file lock in the cache otherwise.
  A waiting trial polls the lock and then downloads what its holder uploaded.
- The sweep's `config.yaml` and `sweep.json` are kept in `<uri>/sweeps/<name>/` with a local copy in the
  cache, so `gitsweep resume|status|report NAME --storage URI` find them (sweeps.paths owns the URIs,
  the cache folder and the plain file reads and writes on them).

Credentials come from the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...), as pyarrow reads them.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sweeps.paths import cache_root, exists, fs_path, join

LOCK_ACTOR = "gitsweep-locks"
LOCK_NAMESPACE = "gitsweep"
LEASE_S = 60.0  # a lock whose holder stops renewing it (died) is free again after this
Log = Callable[[str], None]


def _files(fs: Any, root: str) -> list[str]:
    """Relative paths of the files below `root` (recursive)."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(i.path[len(root):].lstrip("/") for i in infos if i.type == pafs.FileType.File)


def upload_dir(local: Path, uri: str, marker: str, skip: tuple[str, ...] = ()) -> None:
    """Every file of `local` to `uri`, `marker` last (a reader that sees it sees the whole folder)."""
    fs, root = fs_path(uri)
    fs.create_dir(root, recursive=True)
    names = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    names = [n for n in names if n != marker and not n.endswith(skip) and ".tmp" not in n]
    for name in [*names, marker]:
        src = local / name
        dest = f"{root}/{name}"
        if "/" in name:
            fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        with src.open("rb") as fin, fs.open_output_stream(dest) as fout:
            while chunk := fin.read(1 << 22):
                fout.write(chunk)


def download_dir(uri: str, local: Path, marker: str) -> None:
    """A finished remote folder into `local`, each file atomically, `marker` last."""
    fs, root = fs_path(uri)
    names = _files(fs, root)
    local.mkdir(parents=True, exist_ok=True)
    for name in [*(n for n in names if n != marker), marker]:
        dest = local / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.dl-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        with fs.open_input_stream(f"{root}/{name}") as fin, tmp.open("wb") as fout:
            while chunk := fin.read(1 << 22):
                fout.write(chunk)
        os.replace(tmp, dest)


# ---- cluster-wide locks -----------------------------------------------------------------------------


class _LockTable:
    """Named leases: held by one owner, renewed while it works, free again when it stops renewing."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}

    def acquire(self, key: str, owner: str, lease_s: float) -> bool:
        now = time.time()
        cur = self._held.get(key)
        if cur is None or cur[0] == owner or cur[1] < now:
            self._held[key] = (owner, now + lease_s)
            return True
        return False

    def release(self, key: str, owner: str) -> None:
        if self._held.get(key, ("",))[0] == owner:
            del self._held[key]


def _lock_actor() -> Any:
    import ray

    cls = ray.remote(num_cpus=0)(_LockTable)
    return cls.options(name=LOCK_ACTOR, namespace=LOCK_NAMESPACE, get_if_exists=True,
                       lifetime="detached").remote()  # detached: outlives the trial that created it


@contextmanager
def cluster_lock(key: str, cache: Path, on_wait: Callable[[], None] | None = None,
                 poll_s: float = 2.0) -> Iterator[None]:
    """Exclusive across the Ray cluster (a lease in the lock actor); a file lock without Ray."""
    import ray

    if not ray.is_initialized():
        from filelock import FileLock

        cache.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache / (key.replace("/", "-") + ".lock"))):
            yield
        return
    actor = _lock_actor()
    owner = uuid.uuid4().hex
    waited = False
    while not ray.get(actor.acquire.remote(key, owner, LEASE_S)):
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        time.sleep(poll_s)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_S / 4):
            ray.get(actor.acquire.remote(key, owner, LEASE_S))

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        ray.get(actor.release.remote(key, owner))


# ---- shared data sets and generators on a URI -------------------------------------------------------


def get_dataset(spec: Any, uri: str) -> Any:
    """The built data set of `spec`, from `<uri>/datasets/<digest>/` via the local cache."""
    from gitlib.data.builds import MANIFEST, dataset_dir, ensure_built, load_built

    cache = cache_root(uri)
    local = dataset_dir(spec, cache)
    remote = join(uri, "datasets", local.name)
    if (local / MANIFEST).is_file() and exists(join(remote, MANIFEST)):
        return load_built(local)
    if exists(join(remote, MANIFEST)):
        download_dir(remote, local, MANIFEST)
        return load_built(local)
    with cluster_lock(f"dataset/{local.name}", cache):
        if exists(join(remote, MANIFEST)):
            if not (local / MANIFEST).is_file():
                download_dir(remote, local, MANIFEST)
            return load_built(local)
        data, _ = ensure_built(spec, cache)
        upload_dir(local, remote, MANIFEST)
        return data


def get_generator(cfg: Any, data: Any, uri: str, device: Any, log: Log = print) -> Any:
    """The finished generator for (data, cfg) from `<uri>/generators/<digest>/`: downloaded if the
    remote one is READY, else trained here (one trainer cluster-wide; the others wait) and uploaded."""
    from sweeps.stores import generators as gs

    cache = cache_root(uri)
    entry = gs.locate(cache, data.digest or "undigested", cfg)
    remote = join(uri, "generators", entry.digest)
    ready = join(remote, gs.READY)
    if exists(ready):
        if not entry.ready:
            download_dir(remote, entry.folder, gs.READY)
        return entry
    wait = lambda: log(f"waiting for generator {entry.digest} (being trained by another trial)")  # noqa: E731
    with cluster_lock(f"generator/{entry.digest}", cache, on_wait=wait):
        if exists(ready):
            if not entry.ready:
                download_dir(remote, entry.folder, gs.READY)
            return entry
        gs.get_generator(cfg, data, cache, device, log)  # trains here (or finds a local finished copy)
        upload_dir(entry.folder, remote, gs.READY, skip=(".lock", "checkpoint.pt"))  # finished: no resume state
    return entry
