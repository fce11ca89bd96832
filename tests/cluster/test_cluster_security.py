"""Security rules that hold for the whole code base, checked on its source."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("gitlib", "sweeps", "benchmarks", "tests")


def _torch_load_calls(tree: ast.AST) -> list[ast.Call]:
    """Calls of torch.load / torch.serialization.load, however torch was imported."""
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        dotted = []
        while isinstance(func, ast.Attribute):
            dotted.append(func.attr)
            func = func.value
        if isinstance(func, ast.Name):
            dotted.append(func.id)
        name = ".".join(reversed(dotted))
        if name in ("torch.load", "torch.serialization.load", "serialization.load"):
            calls.append(node)
    return calls


def test_every_torch_load_passes_weights_only_true() -> None:
    offenders = []
    checked = 0
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for call in _torch_load_calls(tree):
                checked += 1
                flag = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
                # rule: checkpoints are untrusted input; unpickling arbitrary objects runs code
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert checked > 0  # the scan found the loads at all
    assert not offenders, "torch.load without weights_only=True: " + ", ".join(offenders)


def test_no_from_torch_import_load() -> None:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == "torch":
                    # a bare `load(...)` would slip past the check above
                    assert all(a.name != "load" for a in node.names), f"{path}: from torch import load"
