"""Typed configs from plain dicts: unknown keys and wrong types fail with the dotted key named.

Every component keeps a frozen dataclass next to what it configures (DatasetSpec, ClassifierConfig,
GeneratorConfig); this module turns YAML-shaped dicts into them and back, so that the same object is
validated once, saved inside checkpoints and logged as flat params.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from gitlib.errors import ConfigError
from gitlib.registry import Registry

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def choice_fields(cls: type, prefix: str = "") -> dict[str, Registry]:
    """Dotted key -> registry of every `Annotated[str, Registry]` field of dataclass `cls`, nested included
    (what the docs and the config error messages must list)."""
    out: dict[str, Registry] = {}
    for name, tp in typing.get_type_hints(cls, include_extras=True).items():
        key = f"{prefix}.{name}" if prefix else name
        for t in (tp, *typing.get_args(tp)):
            if typing.get_origin(t) is typing.Annotated:
                out.update((key, m) for m in t.__metadata__ if isinstance(m, Registry))
            elif dataclasses.is_dataclass(t):
                out.update(choice_fields(t, key))  # type: ignore[arg-type]
    return out


def _coerce_union(value: Any, args: tuple[Any, ...], key: str) -> Any:
    if value is None and type(None) in args:
        return None
    real = [a for a in args if a is not type(None)]
    if len(real) == 1:  # optional: the one type's own error names the key inside it
        return coerce(value, real[0], key)
    for arg in real:
        try:
            return coerce(value, arg, key)
        except ConfigError:
            continue
    raise ConfigError(key, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML / --set value to the annotated type, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:  # Annotated[str, registry]: a real choice, normalised to its canonical name
        value = coerce(value, args[0], key)
        registry = next((m for m in tp.__metadata__ if isinstance(m, Registry)), None)
        return value if registry is None or value is None else registry.canonical(value, key=key)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, key)
    if origin is typing.Literal:
        if value in args:
            return value
        # Enumerations accept any letter case ('MAX', 'Random') and come back in their canonical form.
        folded = [a for a in args if isinstance(a, str) and isinstance(value, str) and a.lower() == value.lower()]
        if not folded:
            raise ConfigError(key, f"must be one of {', '.join(map(str, args))}; got {value!r}")
        return folded[0]
    if origin in (tuple, list):
        if isinstance(value, str):  # 'a,b' is the list [a, b]: a searchable (categorical) form of a list
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        return tuple(coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)  # type: ignore[arg-type]
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass `cls` from `data`; unknown keys and bad types raise ConfigError."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(prefix or cls.__name__, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            raise ConfigError(key, f"unknown key (known: {', '.join(sorted(fields))})")
        kwargs[name] = coerce(value, hints[name], key)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(prefix)
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (tuples become lists so YAML / JSON round-trip)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: MLflow params and `--set` keys use these dotted paths."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def require(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless `ok`."""
    if not ok:
        raise ConfigError(key, message)


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
