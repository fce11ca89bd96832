"""Storage URIs (sweeps.paths owns where things are; sweeps.stores.remote the shared stores on a URI):
resolution, the local cache, marker-last copies, the lock table.
The end-to-end sweep on S3 is tests/cluster/test_cluster_object_store.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitlib.errors import ConfigError
from sweeps import paths
from sweeps.config import resolve_config
from sweeps.paths import sweep_paths
from sweeps.stores import remote as st


def test_uri_detection_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITSWEEP_CACHE", str(tmp_path / "cache"))
    assert paths.is_uri("s3://b/p") and paths.is_uri("gs://b") and paths.is_uri("file:///tmp/x")
    assert not paths.is_uri("/mnt/gitsweep") and not paths.is_uri("runs") and not paths.is_uri(None)
    a, b = paths.cache_root("s3://b/p"), paths.cache_root("s3://b/q")
    assert a != b and a.parent == (tmp_path / "cache").resolve()
    assert paths.cache_root("s3://b/p/") == a  # a trailing slash names the same storage


def test_resolve_config_keeps_uri_and_pins_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("GITSWEEP_HOME", raising=False)
    uri = f"file://{tmp_path}/store/"
    with pytest.raises(ConfigError, match=r"tracking\.uri"):
        resolve_config("demo", [], None, uri, None)
    cfg, _ = resolve_config("demo", [], None, uri, f"sqlite:///{tmp_path}/m.db")
    assert cfg.storage == uri.rstrip("/") and paths.storage_uri(cfg.storage) == uri.rstrip("/")
    assert paths.local_root(cfg.storage) == paths.cache_root(uri)
    where = sweep_paths(cfg.name, cfg.storage)
    assert where.tune_target == f"{uri.rstrip('/')}/sweeps/{cfg.name}/tune/{where.tune_name}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    cfg, _ = resolve_config("demo", [], None, uri, None)
    assert cfg.tracking.uri == "http://127.0.0.1:5000"  # pinned, so resume and trials see the same
    # a POSIX path behaves as before
    posix, _ = resolve_config("demo", [], None, str(tmp_path / "runs"), None)
    assert posix.storage == str((tmp_path / "runs").resolve()) and paths.storage_uri(posix.storage) is None
    where = sweep_paths(posix.name, posix.storage)
    assert where.tune_target == str(tmp_path / "runs" / "sweeps" / posix.name / "tune" / where.tune_name)


def test_upload_download_marker_last(tmp_path: Path) -> None:
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "a.bin").write_bytes(b"a" * 10)
    (local / "sub" / "b.txt").write_text("b")
    (local / "train.lock").write_text("")
    (local / "READY").write_text("{}")
    uri = f"file://{tmp_path}/remote/gen"
    st.upload_dir(local, uri, "READY", skip=(".lock",))
    assert paths.exists(f"{uri}/READY") and not paths.exists(f"{uri}/train.lock")
    back = tmp_path / "back"
    st.download_dir(uri, back, "READY")
    assert sorted(str(p.relative_to(back)) for p in back.rglob("*") if p.is_file()) == ["READY", "a.bin", "sub/b.txt"]
    assert (back / "sub" / "b.txt").read_text() == "b"
    paths.write_text(f"{uri}/x/meta.json", "{}")
    assert paths.read_text(f"{uri}/x/meta.json") == "{}"


def test_lock_table_leases() -> None:
    table = st._LockTable()
    assert table.acquire("g", "one", 60)
    assert not table.acquire("g", "two", 60)  # held
    assert table.acquire("g", "one", 60)  # the holder renews
    table.release("g", "two")  # not the holder: no effect
    assert not table.acquire("g", "two", 60)
    table.release("g", "one")
    assert table.acquire("g", "two", 60)
    assert table.acquire("h", "three", -1)  # an expired lease (its holder stopped renewing) ...
    assert table.acquire("h", "four", 60)  # ... is free again


TWO_NODES = """
import json, os, sys
import ray, torch
from sweeps.config import build

cfg = build(json.loads(sys.argv[1]))
uri = sys.argv[2]
ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1)
def trial(cache):
    os.environ["GITSWEEP_CACHE"] = cache  # a cache of its own, as on another node
    from sweeps.stores import remote as storage
    data = storage.get_dataset(cfg.dataset, uri)
    entry = storage.get_generator(cfg.generator, data, uri, torch.device("cpu"), log=lambda m: None)
    return [str(entry.folder), entry.ready]

print(json.dumps(ray.get([trial.remote(sys.argv[3]), trial.remote(sys.argv[4])])))
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_caches_share_one_generator_through_the_cluster_lock(tmp_path: Path) -> None:
    """Two concurrent trials with separate local caches (two nodes, no shared POSIX lock) train the
    generator once: one trains and uploads, the other waits on the Ray lock actor and downloads."""
    import json
    import subprocess
    import sys

    from support import cli_env, tiny_config

    cfg = tiny_config("locks")
    cfg["generator"] = {**cfg["generator"], "iterations": 10, "checkpoint_every": 10}
    uri = f"file://{tmp_path}/store"
    caches = [str(tmp_path / "node1"), str(tmp_path / "node2")]
    out = subprocess.run([sys.executable, "-c", TWO_NODES, json.dumps(cfg), uri, *caches], env=cli_env(),
                         capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr[-3000:]
    (folder1, ready1), (folder2, ready2) = json.loads(out.stdout.strip().splitlines()[-1])
    assert ready1 and ready2 and folder1.startswith(caches[0]) and folder2.startswith(caches[1])
    gens = list((tmp_path / "store" / "generators").iterdir())
    assert len(gens) == 1  # rule: one generator in the store
    events = [json.loads(x) for x in (gens[0] / "events.jsonl").read_text().splitlines() if x.strip()]
    assert [e["event"] for e in events] == ["started", "finished"]  # rule: trained once, not twice
    trained_here = [f for f in (folder1, folder2) if (Path(f) / "checkpoint.pt").exists()]
    assert len(trained_here) == 1  # one node trained (has its checkpoint), the other downloaded
    assert len(list((tmp_path / "store" / "datasets").iterdir())) == 1
