"""Connecting to a cluster without ceremony (sweeps.connect), against real Ray on loopback.

A head started as Ray's docs say, `ray start --head --port=P` with a token in ~/.ray/auth_token and no
RAY_AUTH_MODE (Ray 2.60 then turns token authentication on by itself), takes `gitsweep run --address`
without RAY_AUTH_MODE, with the token in the default file, in the file RAY_AUTH_TOKEN_PATH names or in
RAY_AUTH_TOKEN. An
address that cannot be used (nothing listening, not a Ray GCS, a wrong token) exits 2 within seconds with
one line naming the address, and nothing is written.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import (
    RayNode,
    base_env,
    free_port,
    node_ports,
    processes_mentioning,
    remove_tree,
    run_gitsweep,
    short_tmpdir,
    tiny_sweep,
    wait_for_nodes,
    write_yaml,
)
from support import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
FAIL_WITHIN_S = 30  # the promise: a connection that cannot work ends the command this fast


def plain_env(home: Path, **extra: str) -> dict[str, str]:
    """base_env with no RAY_AUTH_* setting but `extra`, and HOME (where Ray finds ~/.ray/auth_token)."""
    env = base_env(HOME=str(home))
    for key in AUTH_VARS:
        env.pop(key, None)
    fonts = Path.home() / ".cache" / "matplotlib"
    if fonts.is_dir():  # matplotlib would rebuild its font cache in the empty HOME (seconds of CPU)
        env.setdefault("MPLCONFIGDIR", str(fonts))
    env.update(extra)
    return env


def write_token(path: Path, token: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def token_head() -> Iterator[dict[str, Any]]:
    """`ray start --head --port=P` on 127.0.0.1 (2 CPUs) whose HOME holds ~/.ray/auth_token, no RAY_AUTH_MODE."""
    folder = short_tmpdir("gsc")
    home = folder / "home"
    token = secrets.token_hex(32)
    write_token(home / ".ray" / "auth_token", token)
    env = plain_env(home)
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp = folder / "r"
    head = RayNode(["--head", f"--port={port}", "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
                    "--num-gpus", "0", "--temp-dir", str(temp), "--include-dashboard", "false",
                    "--dashboard-port", str(free_port()), "--disable-usage-stats", *node_ports()],
                   env, folder / "head.log")
    try:
        wait_for_nodes(address, {**env, "RAY_AUTH_MODE": "token"}, 1)  # Ray's own client needs the mode
        head.check_running()
        # the precondition: Ray turned token auth on by itself (test_wrong_token... shows it is enforced)
        assert "Token authentication is enabled" in head.log.read_text(), head.log.read_text()[-3000:]
        yield {"address": address, "folder": folder, "home": home, "token": token}
    finally:
        head.stop()
        for pid in processes_mentioning(str(temp)):  # anything that escaped `ray start`'s own clean-up
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        remove_tree(folder)


def run_failing(args: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """The real CLI, stdout and stderr apart; returns it and its wall time (killed past 3x the promise)."""
    start = time.monotonic()
    res = run_cli(args, timeout=3 * FAIL_WITHIN_S, base=env, cwd=cwd)
    return res, time.monotonic() - start


def assert_connect_error(res: subprocess.CompletedProcess[str], took: float, address: str) -> str:
    """Exit 2 within the promise, with exactly one stderr line that names the address; returns that line."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert took < FAIL_WITHIN_S, f"took {took:.1f}s"  # rule: no hang on a connection that cannot work
    assert "Traceback" not in res.stderr + res.stdout
    assert len(lines) == 1, res.stderr  # rule: one line, no library chatter
    assert lines[0].startswith(f"gitsweep: error: cannot connect to Ray at {address}: "), lines[0]
    return lines[0]


def test_token_head_takes_run_without_auth_mode(token_head: dict[str, Any]) -> None:
    folder, address = token_head["folder"], token_head["address"]
    storage = folder / "runs"
    config = write_yaml(folder / "tiny.yaml", tiny_sweep("connect"))

    env = plain_env(token_head["home"])  # the token only in ~/.ray/auth_token, no RAY_AUTH_MODE
    out = run_gitsweep(["run", str(config), "--address", address, "--storage", str(storage)], env, folder)
    assert out.returncode == 0, out.stdout[-4000:]
    assert "2 terminated" in out.stdout  # rule: every trial of the sweep ran on the token-auth head

    # The token in a file of its own, named by RAY_AUTH_TOKEN_PATH; no ~/.ray/auth_token in this HOME.
    elsewhere = write_token(folder / "elsewhere" / "head-token", token_head["token"])
    env = plain_env(folder / "other-home", RAY_AUTH_TOKEN_PATH=str(elsewhere))
    out = run_gitsweep(["resume", "connect", "--address", address, "--storage", str(storage)], env, folder)
    assert out.returncode == 0, out.stdout[-4000:]  # rule: connected with the token from RAY_AUTH_TOKEN_PATH
    assert "resuming sweep connect" in out.stdout

    # The token in RAY_AUTH_TOKEN itself.
    env = plain_env(folder / "other-home", RAY_AUTH_TOKEN=token_head["token"])
    out = run_gitsweep(["resume", "connect", "--address", address, "--storage", str(storage)], env, folder)
    assert out.returncode == 0, out.stdout[-4000:]  # rule: connected with the token from RAY_AUTH_TOKEN


def test_wrong_token_exits_2_at_once(token_head: dict[str, Any]) -> None:
    folder, address = token_head["folder"], token_head["address"]
    storage = folder / "wrong-token"
    config = write_yaml(folder / "wrong.yaml", tiny_sweep("wrong-token"))
    env = plain_env(token_head["home"], RAY_AUTH_TOKEN="wrong")
    res, took = run_failing(["run", str(config), "--address", address, "--storage", str(storage)], env, folder)
    line = assert_connect_error(res, took, address)
    assert "refused the token from RAY_AUTH_TOKEN" in line and "RAY_AUTH_TOKEN_PATH" in line  # and the fix
    assert not storage.exists()  # rule: nothing written when connecting fails


def test_closed_port_exits_2_at_once(workdir: Path) -> None:
    port = free_port()  # bound and released: nothing listens there
    address = f"127.0.0.1:{port}"
    config = write_yaml(workdir / "tiny.yaml", tiny_sweep("closed"))
    storage = workdir / "runs"
    res, took = run_failing(["run", str(config), "--address", address, "--storage", str(storage)],
                            plain_env(workdir / "home"), workdir)
    line = assert_connect_error(res, took, address)
    assert f"ray start --head --port={port}" in line  # the fix, with the port
    assert {p.name for p in workdir.iterdir()} <= {"tiny.yaml", "home"}  # rule: nothing written, no storage


def test_port_that_is_not_a_gcs_exits_2_at_once(workdir: Path) -> None:
    config = write_yaml(workdir / "tiny.yaml", tiny_sweep("not-gcs"))
    storage = workdir / "runs"
    with socket.socket() as listener:  # accepts connections (the kernel's backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        res, took = run_failing(["run", str(config), "--address", address, "--storage", str(storage)],
                                plain_env(workdir / "home"), workdir)
    line = assert_connect_error(res, took, address)
    assert "does not answer like Ray's GCS" in line
    assert {p.name for p in workdir.iterdir()} <= {"tiny.yaml", "home"}

