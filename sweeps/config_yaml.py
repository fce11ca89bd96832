"""Config files: bundled presets, `extends:`, and `--set` overrides, as plain YAML-shaped dicts.

A YAML file may start from another: `extends: NAME` takes a bundled preset (`gitsweep presets`, or one of
the shared bases under `base/`, e.g. `base/k49-lt`) or a path relative to the extending file, and
merges this file over it: mappings key by key (a `null` drops a base mapping entry), anything else
replaced. Bases may extend bases; a cycle or a missing base is an error naming the file. Torch-free.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from gitlib.configs import require
from gitlib.errors import ConfigError, DataError

PRESETS = "presets"


def _presets() -> Traversable:
    return resources.files("sweeps") / PRESETS


def preset_names() -> list[str]:
    """The bundled sweep presets (the shared bases under base/ are not listed: they are not sweeps)."""
    return sorted(p.name[: -len(".yaml")] for p in _presets().iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    """The YAML text of bundled preset `name` as written (its own comments, `extends:` unresolved)."""
    return _presets().joinpath(*f"{name}.yaml".split("/")).read_text()


def _locate(name: str, relative_to: Path | None) -> tuple[str, str, Path | None]:
    """(YAML text, source name for messages, folder for relative `extends`) of a preset name or path."""
    if not name.endswith((".yaml", ".yml")):
        bundled = _presets().joinpath(*f"{name}.yaml".split("/"))
        if bundled.is_file():
            return bundled.read_text(), f"preset '{name}'", None
    path = (relative_to / name) if relative_to is not None and not Path(name).is_absolute() else Path(name)
    if not path.is_file():
        hint = "" if path.suffix else f" (presets: {', '.join(preset_names())})"
        raise DataError(name, f"no such config file or preset{hint}")
    return path.read_text(), str(path), path.resolve().parent


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise DataError(source, f"YAML syntax error{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(source, "top level must be a mapping of config keys")
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into `base`: mappings key by key (None drops a base mapping), anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif value is None and isinstance(out.get(key), dict):
            out.pop(key)
        else:
            out[key] = value
    return out


def read_yaml(config: str, relative_to: Path | None = None, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset name or a YAML path -> dict, its `extends:` chain resolved; a missing file, bad YAML, a
    missing base or a cycle is a DataError naming the file."""
    text, source, folder = _locate(config, relative_to)
    if source in chain:
        raise DataError(chain[-1], f"extends cycle: {' -> '.join([*chain, source])}")
    data = _parse(text, source)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise DataError(source, "extends: needs a preset name or a YAML path")
    try:
        parent = read_yaml(base, folder, (*chain, source))
    except DataError as exc:
        if exc.path == base:  # the base itself is missing: say which file asked for it
            raise DataError(source, f"extends '{base}': {exc.message}") from None
        raise
    return merge(parent, data)


def parse_set(item: str) -> tuple[str, Any]:
    """'classifier.lr=0.05' -> ('classifier.lr', 0.05); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(item, "--set needs key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    require(bool(key), item, "--set needs key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(key, f"'{part}' is not a section")
        node = child
    node[parts[-1]] = value
