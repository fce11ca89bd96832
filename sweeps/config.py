"""The full sweep config: preset YAML (with `extends:`) -> `--set` overrides -> validated `SweepConfig`.

Validation happens before anything runs or is written; every failure is a ConfigError (exit 2) that
names the dotted key or the file. Torch-free: `status`, `report` and `presets` load configs without it.

A YAML file may start from another: `extends: NAME` takes a bundled preset (`gitsweep presets`, or one of
the shared bases under `base/`, e.g. `base/k49-lt`) or a path relative to the extending file, and
merges this file over it: mappings key by key (a `null` drops a base mapping entry), anything else
replaced. Bases may extend bases; a cycle or a missing base is an error naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from gitlib.configs import flatten, from_dict, join, require, to_dict
from gitlib.data.spec import DatasetSpec
from gitlib.errors import ConfigError, DataError
from gitlib.msr.config import MsrConfig
from gitlib.probes import PROBES
from gitlib.train.config import ClassifierConfig, GeneratorConfig
from sweeps import env
from sweeps.trials import TRIAL_KINDS

SPACE_TYPES = ("float", "int", "loguniform", "categorical")


@dataclass(frozen=True)
class ParamSpace:
    """One searched key: `search.space.<dotted.key>: {type, low, high, choices, step}`."""

    type: Literal["float", "int", "loguniform", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def validate(self, prefix: str = "") -> None:
        if self.type == "categorical":
            require(bool(self.choices), join(prefix, "choices"), "categorical needs a non-empty list")
            return
        require(self.low is not None and self.high is not None, join(prefix, "low"), f"{self.type} needs low and high")
        assert self.low is not None and self.high is not None
        require(self.low <= self.high, join(prefix, "high"), "must be >= low")
        require(self.type != "loguniform" or self.low > 0, join(prefix, "low"), "loguniform needs low > 0")


@dataclass(frozen=True)
class SearchConfig:
    num_samples: int = 8
    max_concurrent: int = 2
    metric: tuple[str, ...] = ("test/balanced_acc",)  # several = multi-objective
    mode: tuple[Literal["max", "min"], ...] = ("max",)
    sampler: Literal["tpe", "random", "grid", "nsga2"] = "tpe"
    scheduler: Literal["none", "asha"] = "none"
    asha_metric: str = "val/balanced_acc"  # per-epoch metric ASHA compares
    asha_mode: Literal["max", "min"] = "max"
    grace_period: int = 5  # epochs before ASHA may stop a trial
    reduction_factor: int = 3
    time_budget_s: float | None = None
    max_failures: int = 1  # retries of a raising trial from its last checkpoint
    seed: int = 0  # seeds the sampler
    space: dict[str, Any] = field(default_factory=dict)  # dotted key -> ParamSpace (validated below)
    points_to_evaluate: tuple[dict[str, Any], ...] = ()  # trials to run first (e.g. the gen_frac=0 baseline)
    repeats: int = 1  # trials per configuration (a group); the search sees one value per group
    repeat_over: Literal["seed", "dataset.instance"] = "seed"  # the one key that differs within a group
    group_stat: Literal["mean", "median", "lcb"] = "mean"  # what the searcher receives of a group
    storage: str | None = None  # the Optuna study's database URL; None: SQLite next to the sweep (optuna.db)

    def validate(self, prefix: str = "search") -> None:
        k = lambda name: join(prefix, name)  # noqa: E731
        require(self.num_samples >= 1, k("num_samples"), "must be >= 1")
        require(self.max_concurrent >= 1, k("max_concurrent"), "must be >= 1")
        require(len(self.metric) >= 1, k("metric"), "needs at least one metric")
        require(len(self.metric) == len(self.mode), k("mode"), "needs one mode per metric")
        require(self.grace_period >= 1, k("grace_period"), "must be >= 1")
        require(self.reduction_factor >= 2, k("reduction_factor"), "must be >= 2")
        require(self.time_budget_s is None or self.time_budget_s > 0, k("time_budget_s"), "must be > 0")
        require(self.max_failures >= 0, k("max_failures"), "must be >= 0")
        require(self.scheduler != "asha" or len(self.metric) == 1, k("scheduler"), "asha needs a single metric")
        for i, point in enumerate(self.points_to_evaluate):
            require(set(point) <= set(self.space), k(f"points_to_evaluate[{i}]"),
                    f"keys must be searched keys ({', '.join(self.space)})")
        require(self.repeats >= 1, k("repeats"), f"must be >= 1, got {self.repeats}")
        if self.repeats > 1:
            require(self.repeat_over not in self.space, f"{k('space')}.{self.repeat_over}",
                    f"is the repeat key (search.repeat_over): each group runs it as base .. base+{self.repeats - 1}")
            require(self.scheduler != "asha", k("scheduler"),
                    "asha stops single trials; with search.repeats > 1 a group's repeats must all finish")

    def params(self) -> dict[str, ParamSpace]:
        return {key: from_dict(ParamSpace, spec, f"search.space.{key}") for key, spec in self.space.items()}


@dataclass(frozen=True)
class ResourcesConfig:
    cpu: float = 1.0  # per trial; also the trial's torch thread count (rounded, >= 1)
    gpu: float = 0.0  # per trial; fractions share a GPU

    def validate(self, prefix: str = "resources") -> None:
        require(self.cpu > 0, join(prefix, "cpu"), f"must be > 0, got {self.cpu}")
        require(self.gpu >= 0, join(prefix, "gpu"), f"must be >= 0, got {self.gpu}")


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None = None  # None: MLFLOW_TRACKING_URI, else sqlite:///<storage>/mlflow.db
    experiment: str | None = None  # None: the sweep name


@dataclass(frozen=True)
class DebugConfig:
    """Failure injection for testing the sweep machinery (documented, not for experiments)."""

    fail_at_epoch: int | None = None  # raise after reporting each epoch >= this (1-based) but the last
    fail_mode: Literal["raise", "nan"] = "raise"  # nan: fail as a non-finite loss (never retried)
    fail_when: str | None = None  # only trials where every 'dotted.key=value' (comma-separated) holds

    def validate(self, prefix: str = "debug") -> None:
        require(self.fail_at_epoch is None or self.fail_at_epoch >= 1, join(prefix, "fail_at_epoch"), "must be >= 1")
        require(self.fail_when is None or "=" in self.fail_when, join(prefix, "fail_when"), "needs key=value")


@dataclass(frozen=True)
class SweepConfig:
    name: str = "sweep"
    seed: int = 0
    trial: Annotated[str, TRIAL_KINDS] = "classifier"  # what each trial trains
    probes: tuple[Annotated[str, PROBES], ...] = ("spectral", "critical_band", "corruptions")  # () = off
    storage: str | None = None  # None: GITSWEEP_HOME, else ./gitsweep-runs
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    msr: MsrConfig = field(default_factory=MsrConfig)  # with trial: msr
    search: SearchConfig = field(default_factory=SearchConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)

    def validate(self, prefix: str = "") -> None:
        require(bool(self.name) and "/" not in self.name, "name", "must be a non-empty name without '/'")
        params = self.search.params()
        known = set(flatten(to_dict(replace(self, search=SearchConfig()))))
        require(self.classifier.augment != "oracle" or self.dataset.nuisance != "none", "classifier.augment",
                "oracle applies the data set's true nuisance, and dataset.nuisance is none")
        require(
            self.dataset.zipf_alpha is None or "dataset.imbalance_ratio" not in params,
            "search.space.dataset.imbalance_ratio",
            "has no effect while dataset.zipf_alpha is set (set zipf_alpha: null to search the ratio)",
        )
        for key, spec in params.items():
            # Tune reserves resources.* once for all trials: a sampled value would not change what a trial gets
            require(not key.startswith("resources."), f"search.space.{key}",
                    "resources are reserved once for all trials, not per trial: set resources.*, don't search it")
            require(key in known, f"search.space.{key}", "not a config key that can be searched")
            values = spec.choices or (spec.low, spec.high)
            for v in values:  # every value the search can propose must itself be valid
                try:
                    with_value(self, key, v)
                except ConfigError as exc:
                    raise ConfigError(f"search.space.{key}", f"proposes {v!r}, but {exc}") from None

    @property
    def storage_uri(self) -> str | None:
        """The storage as a pyarrow file system URI (s3://, gs://, file://...), or None for a POSIX path."""
        from sweeps.stores.remote import is_uri, normalize

        raw = self.storage or env.storage_home()
        return normalize(raw) if raw is not None and is_uri(raw) else None

    @property
    def storage_path(self) -> Path:
        """The storage folder; for URI storage, the local cache folder that mirrors it (sweeps.storage)."""
        uri = self.storage_uri
        if uri is not None:
            from sweeps.stores.remote import cache_root

            return cache_root(uri)
        return Path(self.storage or env.storage_home() or "gitsweep-runs").resolve()

    @property
    def tracking_uri(self) -> str:
        return (
            self.tracking.uri
            or env.tracking_uri()
            or f"sqlite:///{self.storage_path / 'mlflow.db'}"
        )

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name


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


def with_value(cfg: SweepConfig, key: str, value: Any) -> SweepConfig:
    """A copy of `cfg` with dotted `key` set to `value`, validated (used for every searched sample)."""
    data = to_dict(cfg)
    data["search"]["space"] = {}  # the sample is a point: validate it, not the space again
    data["search"]["points_to_evaluate"] = []
    set_dotted(data, key, value)
    return from_dict(SweepConfig, data)


def _refuse_set_on_repeat_key(data: dict[str, Any], keys: list[str]) -> None:
    """With repeats, the repeat key's configured value is the base of every group: a --set must not move
    it away from what the sweep's own config says."""
    search = data.get("search") or {}
    repeat_key = search.get("repeat_over") or "seed"
    if isinstance(search.get("repeats"), int) and search["repeats"] > 1 and repeat_key in keys:
        raise ConfigError(repeat_key, "is the repeat key (search.repeat_over) of this sweep: each group runs it as "
                                      "base, base+1, ...; set its base in the config file")


def load_config(config: str, overrides: list[str] | None = None) -> tuple[SweepConfig, list[str]]:
    """Load, override and validate. Returns the config and the searched keys pinned by `--set`."""
    data = read_yaml(config)
    pinned: list[str] = []
    dropped: list[str] = []
    space = (data.get("search") or {}).get("space") or {}
    for item in overrides or []:
        key, value = parse_set(item)
        if key.startswith("search.space."):
            # searched keys are dotted themselves: `search.space.classifier.lr={...}` adds one entry, and
            # `=null` drops one, as a null does in a YAML that extends another
            if value is None:
                space.pop(key.removeprefix("search.space."), None)
                dropped.append(key.removeprefix("search.space."))
            else:
                space[key.removeprefix("search.space.")] = value
            data.setdefault("search", {})["space"] = space
            continue
        if key in space:
            space.pop(key)  # a --set on a searched key pins it: it leaves the space
            pinned.append(key)
        set_dotted(data, key, value)
    _refuse_set_on_repeat_key(data, [parse_set(item)[0] for item in overrides or []])
    points = (data.get("search") or {}).get("points_to_evaluate")
    gone = {*pinned, *dropped}
    if gone and isinstance(points, list):  # pinned or dropped keys leave the warm-start points too
        points = [{k: v for k, v in p.items() if k not in gone} if isinstance(p, dict) else p for p in points]
        data["search"]["points_to_evaluate"] = [p for p in points if p != {}]  # nothing left to warm-start
    return from_dict(SweepConfig, data), pinned


def resolve_config(config: str, overrides: list[str], name: str | None = None, storage: str | None = None,
                   tracking_uri: str | None = None) -> tuple[SweepConfig, list[str]]:
    """Load + override + CLI flags; storage made absolute so every worker sees the same path."""
    from sweeps.paths import default_storage, storage_uri

    cfg, pinned = load_config(config, overrides)
    if name:
        cfg = replace(cfg, name=name)
    uri = storage_uri(storage or cfg.storage)
    cfg = replace(cfg, storage=uri or str(default_storage(storage or cfg.storage)))
    if tracking_uri:
        cfg = replace(cfg, tracking=TrackingConfig(uri=tracking_uri, experiment=cfg.tracking.experiment))
    if uri is not None:
        from sweeps.stores import remote

        remote.fs_path(uri)  # an unusable URI (unknown scheme, ...) is a ConfigError naming `storage`
        if not (cfg.tracking.uri or env.tracking_uri()):
            raise ConfigError("tracking.uri", f"storage {uri} is a URI, and MLflow's default SQLite database "
                                              "cannot live there: pass --tracking-uri (an MLflow server, or "
                                              "sqlite:////local/path/mlflow.db), MLFLOW_TRACKING_URI or tracking.uri")
        # pinned, so trials and `resume` use the same one whatever their environment
        cfg = replace(cfg, tracking=TrackingConfig(uri=cfg.tracking_uri, experiment=cfg.tracking.experiment))
    cfg.validate()
    return cfg, pinned
