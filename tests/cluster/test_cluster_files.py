"""Static checks of everything in cluster/: the launcher YAMLs against Ray's own schema, the KubeRay
RayJob's shape, the pinned installs against pyproject.toml, the security defaults, the shell scripts'
syntax, and every `gitsweep ...` command (in cluster/ and docs/cluster.md) against the real CLI parser."""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import tomllib
import yaml

from sweeps.cli import build_parser
from sweeps.config import load_config
from sweeps.config_yaml import preset_names

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
DOCS = REPO / "docs" / "cluster.md"
AUTOSCALER_YAMLS = ["aws.yaml", "gcp.yaml"]
RAY_VERSION = metadata.version("ray")


def load(name: str) -> Any:
    return yaml.safe_load((CLUSTER / name).read_text())


def pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;]+)", dep.strip())
        if m:
            pins[m.group(1).lower()] = m.group(3)
    return pins


def strings(node: Any) -> list[str]:
    """Every string value in a parsed YAML document (comments are gone: only what runs)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


# ---- every file loads --------------------------------------------------------------------------


def test_cluster_folder_has_every_launch_path() -> None:
    names = {p.name for p in CLUSTER.iterdir()}
    # rule: AWS, GCP, KubeRay, SLURM and the MLflow server each have their file
    assert {"aws.yaml", "gcp.yaml", "kuberay-rayjob.yaml", "slurm-sweep.sh", "mlflow-server.sh"} <= names


@pytest.mark.parametrize("path", sorted(CLUSTER.glob("*.yaml")), ids=lambda p: p.name)
def test_yaml_loads(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", sorted(CLUSTER.glob("*.sh")), ids=lambda p: p.name)
def test_shell_scripts_parse_and_are_executable(path: Path) -> None:
    out = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr  # rule: valid bash
    assert path.stat().st_mode & 0o111, f"{path.name} is not executable"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")


# ---- Ray cluster launcher ------------------------------------------------------------------------


@pytest.mark.parametrize("name", AUTOSCALER_YAMLS)
def test_autoscaler_yaml_matches_rays_schema(name: str) -> None:
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(name)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # rule: Ray's own JSON schema accepts it
    validate_config(config)  # plus Ray's cross-field checks (head type exists, min <= max workers)
    validate_config(prepare_config(copy.deepcopy(config)))  # and after Ray fills in provider defaults


@pytest.mark.parametrize("name", AUTOSCALER_YAMLS)
def test_autoscaler_yaml_has_cpu_head_and_autoscaling_gpu_workers(name: str) -> None:
    config = load(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert head["resources"].get("GPU", 0) == 0 and "guestAccelerators" not in head["node_config"]
    assert not str(head["node_config"].get("InstanceType", "")).startswith(("g", "p"))  # no GPU instance
    assert workers
    for worker in workers.values():
        # rule: workers autoscale between min and max, bounded by the cluster's max_workers
        assert 0 <= worker["min_workers"] <= worker["max_workers"] <= config["max_workers"]
        assert worker["max_workers"] >= 1
        has_gpu = (worker["resources"].get("GPU", 0) >= 1 or "guestAccelerators" in worker["node_config"]
                   or str(worker["node_config"].get("InstanceType", "")).startswith(("g", "p")))
        assert has_gpu, "worker nodes need GPUs"


@pytest.mark.parametrize("name", AUTOSCALER_YAMLS)
def test_autoscaler_yaml_installs_the_pinned_project(name: str) -> None:
    config = load(name)
    setup = "\n".join(config["setup_commands"])
    assert "torch==2.14.1" in setup and "torchvision==0.29.1" in setup  # rule: the pinned stack
    remote = next(r for r, local in config["file_mounts"].items() if local == ".")  # the synced checkout
    assert re.search(rf"pip install\b.*-e {re.escape(remote)}\b", setup), "the project is installed from the checkout"
    assert ".venv" in config["rsync_exclude"]  # never ship the local virtualenv


@pytest.mark.parametrize("name", AUTOSCALER_YAMLS)
def test_autoscaler_yaml_security_defaults(name: str) -> None:
    config = load(name)
    head_cmds = " ".join(config["head_start_ray_commands"])
    worker_cmds = " ".join(config["worker_start_ray_commands"])
    assert "ray start --head" in head_cmds and "ray start --address=$RAY_HEAD_IP:6379" in worker_cmds
    for cmds in (head_cmds, worker_cmds):
        assert "RAY_AUTH_MODE=token" in cmds  # rule: token authentication on every node
    assert "--dashboard-host=127.0.0.1" in head_cmds  # rule: the dashboard is reached through SSH only
    assert "0.0.0.0" not in "\n".join(strings(config))  # rule: nothing bound or opened to everyone
    assert "~/.ray/auth_token" in config["file_mounts"]  # the token reaches every node
    assert "security_group" not in config["provider"]  # no extra inbound rules (GCS / dashboard ports)


# ---- KubeRay -------------------------------------------------------------------------------------


def _rayjob() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text()) if d]
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    assert len(jobs) == 1
    return jobs[0]


def test_rayjob_shape() -> None:
    job = _rayjob()
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("gitsweep run ")  # rule: the project's own entry point
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION  # rule: the cluster runs the Ray the project pins
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0"  # trials stay off the head
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"  # never a public LoadBalancer
    head_container = head["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container["resources"].get("limits", {})
    groups = cluster["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert container["image"] == head_container["image"]
    for params in [head["rayStartParams"], *[g["rayStartParams"] for g in groups]]:
        assert all(isinstance(v, str) for v in params.values())  # KubeRay's map[string]string


def test_rayjob_takes_credentials_from_secrets() -> None:
    job = _rayjob()
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"], *[g["template"] for g in cluster["workerGroupSpecs"]]]
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
    for pod in pods:
        for container in pod["spec"]["containers"]:
            for var in container.get("env", []):
                if secretish.search(var["name"]):
                    # rule: a credential is a secretKeyRef, never a literal in the manifest
                    assert "value" not in var and "secretKeyRef" in var["valueFrom"], var["name"]
    env_vars = yaml.safe_load(job["spec"]["runtimeEnvYAML"]).get("env_vars", {})
    assert not [k for k in env_vars if secretish.search(k)]  # job metadata is readable by job listers


# ---- pins, images, commands ----------------------------------------------------------------------


def test_pins_in_cluster_files_match_pyproject() -> None:
    pins = pyproject_pins()
    assert {"torch", "torchvision", "ray"} <= set(pins)
    pattern = re.compile(r"\b([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([0-9][0-9A-Za-z.+-]*)")
    seen = set()
    for path in sorted(CLUSTER.iterdir()):
        for name, version in pattern.findall(path.read_text()):
            if name.lower() in pins:
                seen.add(name.lower())
                # rule: one version of each pinned package everywhere
                assert version == pins[name.lower()], f"{path.name}: {name}=={version}, pyproject pins {pins[name.lower()]}"
    assert {"torch", "torchvision"} <= seen


def test_images_match_installed_ray() -> None:
    base = re.search(r"^FROM rayproject/ray:(\S+)", (CLUSTER / "Dockerfile").read_text(), re.M)
    assert base and base.group(1).startswith(f"{RAY_VERSION}-")  # rule: image Ray == pinned Ray
    assert "pip install" in (CLUSTER / "Dockerfile").read_text()


def command_texts() -> list[tuple[str, str]]:
    """(where, text) of everything that runs: YAML string values, shell without comments, Dockerfile
    RUN lines, fenced code in docs/cluster.md."""
    out: list[tuple[str, str]] = []
    for path in sorted(CLUSTER.iterdir()):
        text = path.read_text()
        if path.suffix == ".yaml":
            out += [(path.name, s) for d in yaml.safe_load_all(text) if d for s in strings(d)]
        elif path.suffix == ".sh":
            out.append((path.name, "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))))
        elif path.name == "Dockerfile":
            out.append((path.name, "\n".join(ln for ln in text.splitlines() if ln.startswith("RUN"))))
    if DOCS.exists():
        blocks = re.findall(r"^```[a-z]*\n(.*?)^```", DOCS.read_text(), re.M | re.S)
        out += [("docs/cluster.md", b) for b in blocks]
    return out


def gitsweep_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for where, text in command_texts():
        text = text.replace("\\\n", " ")
        # gitsweep in command position: line start, after ; & | ( or after `--` (ray job submit ... -- gitsweep)
        for m in re.finditer(r"(?:^|[;&|(]|\s--)[ \t]*(?:[\w.~/-]*/)?gitsweep[ \t]+(?=[a-z])([^\n;|&)`]*)",
                             text, re.M):
            args = shlex.split(m.group(1), comments=True)
            commands.append((where, [a for a in args if a not in ("$@", "...")]))
    return commands


def test_gitsweep_commands_parse() -> None:
    commands = gitsweep_commands()
    where = {w for w, _ in commands}
    assert {"kuberay-rayjob.yaml", "slurm-sweep.sh"} <= where  # the launch paths run gitsweep itself
    parser = build_parser()
    for place, args in commands:
        try:
            parsed = parser.parse_args(args)  # rule: a real subcommand with real options
        except SystemExit:
            pytest.fail(f"{place}: `gitsweep {' '.join(args)}` is not a valid gitsweep command")
        if getattr(parsed, "command", None) == "run" and parsed.config in preset_names():
            load_config(parsed.config, parsed.overrides)  # --set keys exist and values validate


def test_docs_walk_through_every_file() -> None:
    text = DOCS.read_text()
    for name in ("aws.yaml", "gcp.yaml", "kuberay-rayjob.yaml", "slurm-sweep.sh", "mlflow-server.sh"):
        assert f"cluster/{name}" in text  # rule: each launch file has its section
    assert "ray job submit --address http://127.0.0.1:8265 --working-dir . -- gitsweep run k49-bg-lt" in text
    assert "RAY_AUTH_MODE=token" in text and "--app-name basic-auth" in text
    assert "ssh -L" in text or "ray dashboard" in text  # port forwarding, not public ports
