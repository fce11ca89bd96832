"""The code's shape, checked on the source: gitlib's layers import one way, gitlib never imports ray or
mlflow at module level, no `global` plumbing, no function over 60 lines, and the commands that only read
a sweep work without torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import run_cli

ROOT = Path(__file__).resolve().parents[1]
# gitlib's layers in import order: a module may import its own layer and the layers before it.
LAYERS = {"errors": 0, "configs": 0, "registry": 0, "device": 0, "augmenter": 0, "data": 1, "models": 2,
          "train": 3, "metrics": 4, "probes": 5, "msr": 5, "plots": 6, "runs": 7}
# sweeps' layers, bottom up: what every part stands on, then the result contract and the groups, the trial
# kinds' records, the config, what runs before Ray (pre-flight, connect, stores), the trial bodies, the
# search and the tracking, the report, the driver, the commands. docs/internals.md draws the same.
SWEEPS_LAYERS = {"__init__": 0, "env": 0, "paths": 0, "worker_procs": 0, "worker_ready": 0,
                 "results": 1, "groups": 1, "search_state": 1, "synthetic": 1, "config_yaml": 1,
                 "kinds": 2, "race": 2, "config": 3, "space": 3, "preflight": 4, "connect": 4, "stores": 4,
                 "trials": 5, "search": 6, "tracking": 6, "report": 7, "summary": 8, "driver": 8,
                 "commands": 9, "cli": 9, "__main__": 9}
HEAVY = ("ray", "mlflow")
MAX_FUNCTION_LINES = 60


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _module_level_imports(path: Path) -> list[str]:
    """Modules imported when `path` is imported: top-level statements, not function bodies or
    `if TYPE_CHECKING:` blocks."""
    found: list[str] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append(node.module)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody)

    visit(ast.parse(path.read_text()).body)
    return found


def _all_imports(path: Path) -> list[str]:
    """Modules `path` imports anywhere, deferred into functions included (the same dependency, paid later);
    `if TYPE_CHECKING:` blocks left out (they never run)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{a.name}" for a in node.names)  # `from sweeps import paths`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _sweeps_module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _sweeps_graph() -> dict[str, set[str]]:
    """sweeps module -> the sweeps modules it imports (anywhere in it)."""
    modules = {_sweeps_module(p) for p in _modules("sweeps")}
    graph: dict[str, set[str]] = {}
    for path in _modules("sweeps"):
        me = _sweeps_module(path)
        graph[me] = {m for m in _all_imports(path) if m in modules and m != me and not me.startswith(f"{m}.")}
    return graph


def test_sweeps_layers_import_one_way() -> None:
    graph = _sweeps_graph()
    layer = {m: SWEEPS_LAYERS[m.split(".")[1] if "." in m else "__init__"] for m in graph}
    wrong = [f"{m} (layer {layer[m]}) imports {d} (layer {layer[d]})" for m, deps in graph.items() for d in deps
             if layer[d] > layer[m]]
    assert not wrong, "sweeps imports against the layer order:\n" + "\n".join(wrong)
    parts = {p.stem if p.is_file() else p.name for p in (ROOT / "sweeps").iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert parts == set(SWEEPS_LAYERS)  # every module and subpackage of sweeps has its place


def test_no_import_cycles_among_sweeps_modules() -> None:
    graph = _sweeps_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def cycle_from(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return [*path, m, d]
            if d not in state and (found := cycle_from(d, [*path, m])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = cycle_from(m, [])
            assert found is None, " -> ".join(found)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if parts[0] == "gitlib" and len(parts) > 1 else None


def test_gitlib_layers_import_one_way() -> None:
    wrong = []
    for path in _modules("gitlib"):
        rel = path.relative_to(ROOT).with_suffix("")
        own = _layer(".".join(rel.parts))
        if own is None:
            continue
        for imported in _module_level_imports(path):
            theirs = _layer(imported)
            if theirs is not None and theirs > own:
                wrong.append(f"{rel} (layer {own}) imports {imported} (layer {theirs})")
    assert not wrong, "gitlib imports against the layer order:\n" + "\n".join(wrong)
    subpackages = {p.name for p in (ROOT / "gitlib").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    modules = {p.stem for p in (ROOT / "gitlib").glob("*.py") if p.stem != "__init__"}
    assert subpackages | modules == set(LAYERS)  # every part of gitlib has its place in the order


def test_gitlib_never_imports_ray_or_mlflow_at_module_level() -> None:
    bad = [f"{p.relative_to(ROOT)}: {m}" for p in _modules("gitlib") for m in _module_level_imports(p)
           if m.split(".")[0] in HEAVY]
    assert not bad, bad


def test_no_import_cycles_between_gitlib_subpackages() -> None:
    edges: dict[str, set[str]] = {}
    for path in _modules("gitlib"):
        src = path.relative_to(ROOT).parts[1].removesuffix(".py")
        for imported in _module_level_imports(path):
            parts = imported.split(".")
            if parts[0] == "gitlib" and len(parts) > 1 and parts[1] != src:
                edges.setdefault(src, set()).add(parts[1])

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(p for p in edges if reaches(p, p, {p}))
    assert not cycles, f"import cycles through {cycles}: {edges}"


def test_no_global_statements_and_short_functions() -> None:
    globals_, long_functions = [], []
    for path in [*_modules("gitlib"), *_modules("sweeps")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Global):
                globals_.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not globals_, f"module-level state set with `global`: {globals_}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def without_torch(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import torch` fails (a stub package that raises shadows the real one)."""
    stub = tmp_path / "no_torch" / "torch"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('torch is not installed on this machine')\n")
    path = [str(tmp_path / "no_torch"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


@pytest.mark.parametrize("args", [["--help"], ["presets"], ["run", "--help"], ["report", "--help"]])
def test_cli_without_torch(tmp_path: Path, args: list[str]) -> None:
    proc = run_cli(args, timeout=120, base=without_torch(tmp_path))
    assert proc.returncode == 0, proc.stderr  # help and presets never need torch
    assert "demo" in proc.stdout or "usage" in proc.stdout


def test_configs_validate_without_torch(tmp_path: Path) -> None:
    code = ("from sweeps.config import load_config\nfrom sweeps.config_yaml import preset_names\n"
            "for name in preset_names(): load_config(name)\n"
            "import sys; assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=without_torch(tmp_path),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr  # every preset resolves and validates with torch unimportable
