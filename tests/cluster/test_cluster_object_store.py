"""Sweep storage on an object store: `gitsweep run --storage s3://bucket/prefix` against a real S3 API
(moto's server on 127.0.0.1), and the URI checks that happen before anything starts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import (
    base_env,
    free_port,
    run_gitsweep,
    tiny_classifier_sweep,
    write_yaml,
)

BUCKET = "gitsweep-test"


@pytest.fixture
def s3() -> Iterator[dict[str, str]]:
    """moto's S3 server on a free loopback port with one bucket; yields the clients' environment."""
    moto_server = pytest.importorskip("moto.server")
    import pyarrow.fs as pafs

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        fs = _fs(env)
        fs.create_dir(BUCKET)
        assert fs.get_file_info(BUCKET).type == pafs.FileType.Directory
        yield env
    finally:
        server.stop()


def _fs(env: dict[str, str]) -> Any:
    import pyarrow.fs as pafs

    return pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"].removeprefix("http://"), scheme="http",
                             access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
                             region=env["AWS_DEFAULT_REGION"], allow_bucket_creation=True)


def _files(fs: Any, root: str) -> list[str]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(i.path[len(root) + 1:] for i in infos if i.type == pafs.FileType.File)


def _read(fs: Any, path: str) -> str:
    with fs.open_input_stream(path) as f:
        return bytes(f.read()).decode()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sweep_with_s3_storage_shares_dataset_and_generator(workdir: Path, s3: dict[str, str]) -> None:
    from mlflow import MlflowClient

    sweep = tiny_classifier_sweep("s3-sweep")
    sweep["classifier"].update({"augment": "git", "gen_frac": 0.5})  # both trials need the one generator
    sweep["generator"] = {"iterations": 10, "batch_size": 8, "checkpoint_every": 10, "eval_samples": 20,
                          "judge_iterations": 40}
    config = write_yaml(workdir / "tiny.yaml", sweep)
    db = workdir / "mlflow.db"
    env = base_env(**s3, GITSWEEP_CACHE=str(workdir / "cache"))

    out = run_gitsweep(["run", str(config), "--storage", f"s3://{BUCKET}/sweeps", "--tracking-uri",
                        f"sqlite:///{db}"], env, workdir)
    assert out.returncode == 0, out.stdout[-4000:]
    assert "2 terminated" in out.stdout  # rule: every trial finished
    assert not (workdir / "s3:").exists()  # the URI is not a local folder name any more

    fs = _fs(s3)
    root = f"{BUCKET}/sweeps"
    files = _files(fs, root)
    datasets = {f.split("/")[1] for f in files if f.startswith("datasets/")}
    assert len(datasets) == 1, files  # rule: one data set, built once and shared
    assert f"datasets/{next(iter(datasets))}/manifest.json" in files
    generators = {f.split("/")[1] for f in files if f.startswith("generators/")}
    assert len(generators) == 1, files  # rule: exactly one generator for the two trials
    gen = f"{root}/generators/{next(iter(generators))}"
    assert {"READY", "generator.pt", "events.jsonl", "metrics.json"} <= set(_files(fs, gen))
    events = [json.loads(line) for line in _read(fs, f"{gen}/events.jsonl").splitlines() if line.strip()]
    assert [e["event"] for e in events] == ["started", "finished"], events  # trained once, never twice
    assert "sweeps/s3-sweep/sweep.json" in files and "sweeps/s3-sweep/config.yaml" in files
    assert any(f.startswith("sweeps/s3-sweep/tune/s3-sweep-") and "/experiment_state" in f for f in files), files
    meta = json.loads(_read(fs, f"{root}/sweeps/s3-sweep/sweep.json"))
    assert meta["tune_path"] == f"s3://{BUCKET}/sweeps/sweeps/s3-sweep/tune/{meta['tune_name']}"
    assert meta["tune_name"].startswith("s3-sweep-")  # the experiment's own folder under tune/

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("s3-sweep")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`gitsweep.role` = 'classifier'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)  # rule: one finished run per trial
    assert all("test/balanced_acc" in r.data.metrics for r in runs)

    # `status NAME --storage URI` finds the sweep from the bucket alone (a fresh cache)
    env2 = {**env, "GITSWEEP_CACHE": str(workdir / "cache2")}
    status = run_gitsweep(["status", "s3-sweep", "--storage", f"s3://{BUCKET}/sweeps"], env2, workdir, timeout_s=120)
    assert status.returncode == 0, status.stdout[-3000:]
    assert status.stdout.count("TERMINATED") == 2, status.stdout


def test_uri_storage_without_tracking_uri_is_refused(workdir: Path) -> None:
    config = write_yaml(workdir / "tiny.yaml", tiny_classifier_sweep("no-tracking"))
    out = run_gitsweep(["run", str(config), "--storage", f"file://{workdir}/store"], base_env(), workdir,
                       timeout_s=120)
    assert out.returncode == 2, out.stdout[-3000:]
    assert "tracking.uri" in out.stdout and "Traceback" not in out.stdout  # rule: one line naming the key
    assert not (workdir / "store").exists()  # nothing written


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_resume_by_name_from_uri_storage(workdir: Path) -> None:
    """`resume NAME --storage URI` finds the sweep from the store alone (a fresh cache) and continues the
    Tune experiment that lives there, with the tracking URI the sweep pinned."""
    from mlflow import MlflowClient

    sweep = tiny_classifier_sweep("file-sweep")
    sweep["search"]["num_samples"] = 1
    config = write_yaml(workdir / "tiny.yaml", sweep)
    uri = f"file://{workdir}/store"
    db = workdir / "mlflow.db"
    env = base_env(GITSWEEP_CACHE=str(workdir / "cache"))
    out = run_gitsweep(["run", str(config), "--storage", uri, "--tracking-uri", f"sqlite:///{db}"], env, workdir)
    assert out.returncode == 0, out.stdout[-4000:]
    assert (workdir / "store" / "sweeps" / "file-sweep" / "tune").is_dir()  # Tune wrote to the URI itself

    env2 = {**env, "GITSWEEP_CACHE": str(workdir / "cache2")}
    res = run_gitsweep(["resume", "file-sweep", "--storage", uri], env2, workdir)
    assert res.returncode == 0, res.stdout[-4000:]
    assert f"resuming sweep file-sweep from {uri}/sweeps/file-sweep/tune" in res.stdout
    assert "1 terminated" in res.stdout
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("file-sweep")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`gitsweep.role` = 'classifier'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the same run, no twin
