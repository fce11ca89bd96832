"""Ray for a sweep: connect to a cluster by address, or start a quiet local one tuned for short trials.

A cluster address is checked before Ray connects, token authentication is turned on when a token is there,
and a connection that cannot work ends in seconds as one line (ConnectError), before anything is written.
Settings handed to Ray and Tune through their own environment variables are written here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import logging.handlers
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gitlib.errors import ConfigError, UserError
from sweeps import env, worker_procs
from sweeps.config import SweepConfig

# What every trial imports, imported by the workers Ray prestarts with a local cluster while the driver
# sets the sweep up (ray.tune: unpickling the trial actor's class imports it, 1.2 s on 2 cores); then what
# the sweep's trial kind imports (its record's `preload`: torch for the classifier, 3 s a worker, nothing
# of it for the synthetic kind); sweeps.worker_ready last, to mark the worker as done.
WORKER_PRELOAD = ("ray.tune", "pyarrow.parquet", "sweeps.trials.entry",
                  "matplotlib.backends.backend_agg")  # the final figures
READY = "sweeps.worker_ready"

# Ray keeps at most as many idle workers as the node has CPUs *available*, and kills the rest once idle
# for idle_worker_killing_time_threshold_ms (default 1 s). Tune reserves a trial's CPUs in a placement
# group before it creates the trial's actor, so with every CPU reserved the prestarted workers, idle
# since their preload, could be killed in between and the trials then waited ~4 s for fresh ones (seen
# in about one sweep start in six). A minute covers that gap; unused workers still go after it.
IDLE_WORKER_KEEP_MS = 60_000


CHATTY = ("ray", "mlflow", "alembic", "optuna", "filelock", "urllib3")  # libraries' loggers


def quiet_logs() -> logging.handlers.MemoryHandler:
    """Progress is the sweep's own display: the libraries' log records (Ray's start-up and token notes,
    MLflow's table creation, ...) go to a buffer instead of the terminal, and from there into the sweep's
    log file once the sweep has a folder (`log_to`). Returns the buffer."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # no stderr handler of MLflow's own
    buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    buffer.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _attach(buffer)
    try:
        import optuna

        optuna.logging.disable_default_handler()  # optuna's own stderr handler; its records reach the buffer
    except ImportError:
        pass
    return buffer


def _attach(buffer: logging.Handler) -> None:
    for name in CHATTY:
        logger = logging.getLogger(name)
        logger.handlers = [buffer]
        logger.propagate = False
        logger.setLevel(logging.INFO)


@contextlib.contextmanager
def captured(buffer: logging.handlers.MemoryHandler) -> Iterator[None]:
    """Around ray.init: Ray re-configures its loggers while it starts (dropping our handler, so its start-up
    notes would fall through to stderr); what it writes then goes to the buffer, and the handler goes back."""
    text = io.StringIO()
    try:
        with contextlib.redirect_stderr(text):
            yield
    finally:
        _attach(buffer)
        if text.getvalue().strip():
            logging.getLogger("ray").info(text.getvalue().strip())


def log_to(buffer: logging.handlers.MemoryHandler, path: Path) -> None:
    """From now on the libraries' records go to `path` (the sweep's sweep.log), the buffered ones first."""
    handler = logging.FileHandler(path)
    handler.setFormatter(buffer.formatter)
    buffer.setTarget(handler)
    buffer.flush()


def tune_settings() -> None:
    """Tune settings every sweep needs.

    - Per-epoch results lack the test metrics the search optimises; Tune would reject them.
    - Tune then writes its own per-trial result.json / progress.csv but no TensorBoard event files: MLflow
      holds the same metrics, and writing them cost the driver ~4 ms of CPU per result, which on a small
      machine the trials pay for."""
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"


def connect_ray(address: str | None, preload: tuple[str, ...] = ()) -> bool:
    """Connect to `address` / RAY_ADDRESS, else start a quiet local Ray on loopback whose prestarted
    workers import WORKER_PRELOAD and `preload` (the trial kind's). True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    addr = address or env.ray_address()
    # Ray's records reach the "ray" logger, whose handler quiet_logs set: nothing on the terminal.
    quiet = dict(logging_level=logging.INFO, log_to_driver=False, configure_logging=False)
    if addr:
        _connect_cluster(addr, quiet)
    else:
        # Ray runs workers at nice 15 by default; on a shared workstation the trials (the actual work)
        # would then lose the CPU to everything else. A cluster keeps its own setting.
        os.environ.setdefault("RAY_worker_niceness", "0")
        os.environ[env.WORKERS_READY] = str(worker_procs.fresh_ready_dir())  # inherited by the local workers
        system = {"preload_python_modules": list(dict.fromkeys([*WORKER_PRELOAD, *preload, READY])),
                  "idle_worker_killing_time_threshold_ms": IDLE_WORKER_KEEP_MS}
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                 num_cpus=env.local_num_cpus(), _system_config=system, **quiet)  # type: ignore[arg-type]
        _trials_on_prestarted_workers()
    return True


# ---- a cluster by address ------------------------------------------------------------------------

GCS_DEFAULT_PORT = 6379  # `ray start --head` without --port
PROBE_TIMEOUT_S = 5.0  # a TCP connect to the GCS port: refused at once, else a host or firewall that drops it
GCS_ANSWER_TIMEOUT_S = 3.0  # a live GCS answers the HTTP/2 preface within milliseconds
# Ray's driver tries the GCS this many times, ~1 s apart, before ray.init fails (default 20, each of which
# can take 35 s when the far end is not a GCS). The probe has then shown a gRPC server on the port, so a
# refused token, a non-GCS gRPC port or a head still starting fail or connect within seconds.
GCS_CONNECT_ATTEMPTS = "5"
# HTTP/2 client preface and an empty SETTINGS frame. A gRPC server such as the GCS answers with a SETTINGS
# frame at once; a web server (the dashboard's port, MLflow) or a silent process does not, and Ray's own
# client would retry it for minutes.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
H2_SETTINGS = 4
TOKEN_FIX = ("give this machine the head's token (`ray get-auth-token` on the head prints it) as "
             "~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH")
AUTH_MARKS = ("InvalidAuthToken", "Unauthenticated", "AuthenticationError", "no authentication token")
RAY_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\s*[\w.]+:\d+:\s*")  # "[time W pid tid] file.cc:210: "


class ConnectError(UserError):
    """The Ray cluster at an address cannot be reached or turns this driver away: one line naming the
    address and the fix (exit 2), raised before anything of the sweep is written."""

    def __init__(self, address: str, reason: str, fix: str) -> None:
        self.address, self.reason, self.fix = address, reason, fix
        super().__init__(f"cannot connect to Ray at {address}: {reason}; {fix}")

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:  # picklable, as gitlib's errors are
        return (type(self), (self.address, self.reason, self.fix))


def _connect_cluster(addr: str, quiet: dict[str, Any]) -> None:
    """ray.init on an existing cluster, failing in seconds with a ConnectError instead of Ray's retries
    (minutes) and tracebacks."""
    import ray

    host_port = _host_port(addr)
    if host_port is not None:
        _check_gcs(addr, *host_port)
    source = _token_auth(addr)
    failure: Exception | None = None
    with _fd_stderr() as ray_lines, _env_default("RAY_gcs_server_port_wait_time_s", GCS_CONNECT_ATTEMPTS):
        try:
            ray.init(address=addr, **quiet)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, AuthenticationError, ValueError
            failure = exc
    if failure is not None:
        port = host_port[1] if host_port else GCS_DEFAULT_PORT
        raise _diagnose(addr, port, failure, ray_lines, source) from None
    for line in ray_lines:
        logging.getLogger("ray").info(line)


def _host_port(addr: str) -> tuple[str, int] | None:
    """HOST and PORT of a GCS address; None for the forms Ray resolves itself ("auto", "ray://...")."""
    if addr in ("auto", "local") or "://" in addr:
        return None
    host, sep, port = addr.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConnectError(addr, "not HOST:PORT", f"pass the head's GCS address, e.g. 10.0.0.5:{GCS_DEFAULT_PORT}")
    return host, int(port)


def _check_gcs(addr: str, host: str, port: int) -> None:
    """Something that speaks gRPC listens at HOST:PORT, within seconds, or a ConnectError that says what."""
    start = f"start the head with `ray start --head --port={port}`, or check the address"
    try:
        sock = socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S)
    except socket.gaierror:
        raise ConnectError(addr, f"unknown host {host}", "check the address") from None
    except ConnectionRefusedError:
        raise ConnectError(addr, "nothing listens there (connection refused)", start) from None
    except TimeoutError:
        raise ConnectError(addr, f"no answer within {PROBE_TIMEOUT_S:g} s (host down, or a firewall drops the "
                                 "port)", start) from None
    except OSError as exc:
        raise ConnectError(addr, f"cannot reach it ({exc.strerror or exc})", start) from None
    with sock:
        if env.ray_use_tls():
            return  # the GCS then expects a TLS handshake first; Ray's own client makes it
        try:
            sock.settimeout(GCS_ANSWER_TIMEOUT_S)
            sock.sendall(H2_PREFACE)
            head = sock.recv(9)
        except OSError:
            head = b""
    if len(head) < 4 or head[3] != H2_SETTINGS:
        raise ConnectError(addr, "something listens there, but it does not answer like Ray's GCS",
                           f"pass the port `ray start --head --port` was given ({GCS_DEFAULT_PORT} by default; "
                           "8265 is the dashboard's)")


def _token_auth(addr: str) -> str | None:
    """Ray turns token authentication on for an explicit address only if RAY_AUTH_MODE=token, although
    `ray start --head` turns it on by itself whenever a token is there. Do the same here: with the mode
    unset and a token available, token mode. Returns where the token comes from (None: none sent)."""
    mode = env.ray_auth_mode()
    if mode not in (None, "token"):
        return None  # the user's explicit choice
    source = _token_source(addr)
    if mode is None and source is not None:
        os.environ["RAY_AUTH_MODE"] = "token"
        _refresh_ray_config()
    return source


def _token_source(addr: str) -> str | None:
    """Where Ray reads the token, in Ray's order; None if nowhere. Like Ray, a RAY_AUTH_TOKEN_PATH that
    names no token is an error, not a reason to try ~/.ray/auth_token."""
    if env.ray_auth_token_given():
        return "RAY_AUTH_TOKEN"
    path = env.ray_auth_token_path()
    if path:
        if not _has_token(Path(path)):
            raise ConnectError(addr, f"RAY_AUTH_TOKEN_PATH names {path}, which is missing, unreadable or empty",
                               "point it at a copy of the head's token file, or set RAY_AUTH_TOKEN")
        return f"RAY_AUTH_TOKEN_PATH ({path})"
    default = env.ray_default_token_file()
    return str(default) if _has_token(default) else None


def _has_token(path: Path) -> bool:
    try:
        return bool(path.read_text().strip())
    except (OSError, UnicodeDecodeError):
        return False


def _refresh_ray_config() -> None:
    """Ray reads its RAY_* settings into a config cached when ray is imported; re-read it so this driver
    sees the token mode, as Ray itself does when it turns token auth on (Ray 2.60 internals: if they move,
    a token cluster refuses the driver and the error says so)."""
    try:
        from ray import _raylet
    except ImportError:
        return
    config = getattr(_raylet, "Config", None)
    if config is not None:
        config.initialize("")


@contextlib.contextmanager
def _env_default(name: str, value: str) -> Iterator[None]:
    """`name`=`value` while connecting, unless the user set it."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


@contextlib.contextmanager
def _fd_stderr() -> Iterator[list[str]]:
    """Ray's C++ core writes its connection retries straight to file descriptor 2, past Python's sys.stderr.
    Collected while connecting: they explain a failure, and after a success they go to the log."""
    lines: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon): nothing to collect
        yield lines
        return
    try:
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield lines
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                tmp.seek(0)
                text = tmp.read().decode(errors="replace")
                lines.extend(RAY_LOG_PREFIX.sub("", line).strip() for line in text.splitlines() if line.strip())
    finally:
        os.close(saved)


def _diagnose(addr: str, port: int, exc: Exception, ray_lines: list[str], source: str | None) -> ConnectError:
    """The one-line reason and fix for a failed ray.init, from Ray's exception chain and its C++ log."""
    chain: list[str] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or cur.__context__
    text = "\n".join([*chain, *ray_lines])
    if any(mark in text for mark in AUTH_MARKS):
        return _auth_error(addr, source)
    versions = re.findall(r"Ray: (\S+)\s+Python: (\S+)", text)
    if "Version mismatch" in text and len(versions) >= 2:
        (ray_there, py_there), (ray_here, py_here) = versions[:2]
        return ConnectError(addr, f"the cluster runs Ray {ray_there} on Python {py_there}, this machine Ray "
                                  f"{ray_here} on Python {py_here}", "run gitsweep with the cluster's versions")
    last = (ray_lines[-1] if ray_lines else chain[0].splitlines()[0])[:200]
    return ConnectError(addr, f"Ray could not connect ({last})",
                        f"check that the head runs (`ray start --head --port={port}`) and that this is its address")


def _auth_error(addr: str, source: str | None) -> ConnectError:
    mode = env.ray_auth_mode()
    if mode not in (None, "token"):
        return ConnectError(addr, f"the cluster requires token authentication, but RAY_AUTH_MODE={mode}",
                            f"unset RAY_AUTH_MODE and {TOKEN_FIX}")
    if source is None:
        return ConnectError(addr, "the cluster requires a token and none was found (RAY_AUTH_TOKEN, "
                                  "RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)", TOKEN_FIX)
    return ConnectError(addr, f"the cluster refused the token from {source}", TOKEN_FIX)


def _trials_on_prestarted_workers() -> None:
    """Let Tune's trial actors start on the local cluster's prestarted workers.

    Tune gives every trial actor runtime_env={"env_vars": {"PL_DISABLE_FORK": "1", ...}}; any non-empty
    runtime env makes Ray start a fresh worker for it (about 3 s of process start and imports per trial
    on 2 cores) instead of an idle prestarted one. Local workers inherit the driver's environment, so
    the default variable is set here and dropped from Tune's defaults (variables Tune propagates, e.g.
    AWS keys, still go through the runtime env). Ray 2.60 internals: if they move, trials simply start
    fresh workers as before."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return
    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    if isinstance(defaults, dict):
        for key, value in list(defaults.items()):
            os.environ.setdefault(key, value)
            del defaults[key]


def check_resources(cfg: SweepConfig) -> None:
    """Refuse a per-trial request no node of the cluster can ever satisfy (exit 2, before any trial)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
    max_gpu = max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0)
    if cfg.resources.gpu > 0 and max_gpu <= 0:
        raise ConfigError("resources.gpu", f"{cfg.resources.gpu:g} GPU per trial requested, but the Ray cluster has "
                                           "no GPU (set resources.gpu=0 or connect to a GPU cluster with --address)")
    if cfg.resources.gpu > max_gpu:
        raise ConfigError("resources.gpu", f"{cfg.resources.gpu:g} GPUs per trial, but no node has more than {max_gpu:g}")
    if cfg.resources.cpu > max_cpu:
        raise ConfigError("resources.cpu", f"{cfg.resources.cpu:g} CPUs per trial, but no node has more than {max_cpu:g}")


def shutdown() -> None:
    import ray

    ray.shutdown()
