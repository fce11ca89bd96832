"""The one lookup mechanism for every real choice: architectures, losses, training rules, nuisances,
data sources, probes, trial kinds, MSR problems and models.

A `Registry` maps names to implementations. It is declared where the choice's config lives, without
importing the implementations (so config validation, `--help`, `status` and `report` never load torch):
an entry is either the object itself or a `"module:attribute"` path resolved on first use. Reference
spellings (`DRS`, `CE`, ...) are accepted as aliases, case-insensitively, and normalised to the canonical
name. An unknown name is always a `ConfigError` naming the config key and listing the valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import import_module
from typing import Any, Generic, TypeVar

from gitlib.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> implementations for the config key `key` (e.g. "classifier.loss")."""

    def __init__(self, key: str, entries: Mapping[str, T | str] | None = None,
                 aliases: Mapping[str, str] | None = None) -> None:
        self.key = key
        self._entries: dict[str, T | str] = dict(entries or {})
        self._aliases = {a.lower(): n for a, n in (aliases or {}).items()}  # may precede decorated entries

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: add the decorated object under `name`."""

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.key}: {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def remove(self, name: str) -> None:
        """Take `name` out again (a choice registered for a while, e.g. by a test or a plug-in)."""
        self._entries.pop(self.canonical(name) or name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name, strict=False) is not None

    def canonical(self, name: str, strict: bool = True, key: str | None = None) -> str | None:
        """The registered spelling of `name` (exact, alias or case-insensitive); with `strict`, an unknown
        name raises ConfigError naming `key` (default: the registry's key)."""
        if name in self._entries:
            return name
        folded = str(name).lower()
        found = self._aliases.get(folded) or next((n for n in self._entries if n.lower() == folded), None)
        if found is None and strict:
            raise ConfigError(key or self.key, f"unknown name {name!r} (valid: {', '.join(self.names())})")
        return found

    def check_all(self, names: Iterable[str], key: str | None = None) -> tuple[str, ...]:
        """Canonical spellings of several names (a list-valued key such as `probes`)."""
        out = []
        for i, n in enumerate(names):
            out.append(self.canonical(n, key=f"{key or self.key}[{i}]") or n)
        return tuple(out)

    def get(self, name: str) -> T:
        """The implementation of `name`, imported on first use."""
        canonical = self.canonical(name) or name
        entry = self._entries[canonical]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(import_module(module), attr)
            self._entries[canonical] = entry
        return entry

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """get(name)(*args, **kwargs): the common case of a registered factory."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def __repr__(self) -> str:
        return f"Registry({self.key!r}: {', '.join(self.names())})"
