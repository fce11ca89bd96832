"""Ray for a sweep: connect to a cluster by address, or start a quiet local one tuned for short trials.

Settings handed to Ray and Tune through their own environment variables are written here.
"""

from __future__ import annotations

import logging
import os

from gitlib.errors import ConfigError
from sweeps import env
from sweeps.config import SweepConfig

# What a trial imports, imported by the workers Ray prestarts with a local cluster while the driver sets
# the sweep up (torch._dynamo: the first torch.optim optimizer imports it lazily, 1.4 s on 2 cores; ray.tune:
# unpickling the trial actor's class imports it, 1.2 s).
WORKER_PRELOAD = ("torch", "torch._dynamo", "ray.tune", "pyarrow.parquet", "sweeps.trials.entry",
                  "sweeps.trials.classifier", "gitlib.data.builds", "gitlib.models.munit",
                  "matplotlib.backends.backend_agg")  # the final figures

# Ray keeps at most as many idle workers as the node has CPUs *available*, and kills the rest once idle
# for idle_worker_killing_time_threshold_ms (default 1 s). Tune reserves a trial's CPUs in a placement
# group before it creates the trial's actor, so with every CPU reserved the prestarted workers, idle
# since their preload, could be killed in between and the trials then waited ~4 s for fresh ones (seen
# in about one sweep start in six). A minute covers that gap; unused workers still go after it.
IDLE_WORKER_KEEP_MS = 60_000


def quiet_logs() -> None:
    """Progress comes from the sweep's callback; silence the libraries' chatter."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for name in ("mlflow", "optuna", "alembic", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass


def tune_settings() -> None:
    """Tune settings every sweep needs.

    - Per-epoch results lack the test metrics the search optimises; Tune would reject them.
    - Tune then writes its own per-trial result.json / progress.csv but no TensorBoard event files: MLflow
      holds the same metrics, and writing them cost the driver ~4 ms of CPU per result, which on a small
      machine the trials pay for."""
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"


def connect_ray(address: str | None) -> bool:
    """Connect to `address` / RAY_ADDRESS, else start a quiet local Ray on loopback. True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    quiet_logs()
    addr = address or env.ray_address()
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    if addr:
        ray.init(address=addr, **quiet)  # type: ignore[arg-type]
    else:
        # Ray runs workers at nice 15 by default; on a shared workstation the trials (the actual work)
        # would then lose the CPU to everything else. A cluster keeps its own setting.
        os.environ.setdefault("RAY_worker_niceness", "0")
        system = {"preload_python_modules": list(WORKER_PRELOAD),
                  "idle_worker_killing_time_threshold_ms": IDLE_WORKER_KEEP_MS}
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                 num_cpus=env.local_num_cpus(), _system_config=system, **quiet)  # type: ignore[arg-type]
        _trials_on_prestarted_workers()
    return True


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
