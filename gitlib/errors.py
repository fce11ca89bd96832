"""User-facing errors: the CLI prints them as one line and exits 2, with no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a config value, a file, a request that cannot be met."""

    exit_code = 2


class ConfigError(UserError):
    """A config key is unknown, has the wrong type or is out of range."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"config key '{key}': {message}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # picklable across Ray workers
        return (type(self), (self.key, self.message))


class DataError(UserError):
    """A data file or folder is missing, unreadable or does not match its format."""

    def __init__(self, path: str, message: str) -> None:
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # picklable across Ray workers
        return (type(self), (self.path, self.message))
