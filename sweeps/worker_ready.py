"""Imported last by a local cluster's prestarted workers (connect.WORKER_PRELOAD): leaves a file named
after this process in the folder the driver chose, so the driver knows the preload is over. A worker's
CPU use cannot tell that: with a cold file cache the imports wait on the disk for seconds at a time."""

from __future__ import annotations

import os

from sweeps import env

_folder = env.workers_ready_dir()
if _folder is not None:
    _folder.mkdir(parents=True, exist_ok=True)
    (_folder / str(os.getpid())).touch()
