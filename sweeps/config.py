"""The full sweep config: preset YAML (sweeps.config_yaml) -> `--set` overrides -> validated `SweepConfig`.

Validation happens before anything runs or is written; every failure is a ConfigError (exit 2) that
names the dotted key or the file. Torch-free: `status`, `report` and `presets` load configs without it.

The sections every trial kind shares (`dataset`, `generator`, `search`, ...) are fields of `SweepConfig`;
a trial kind's own section (`classifier`, `msr`, `synthetic`, ...) comes from its record in
sweeps.kinds, so adding a kind adds its section without touching this module. In YAML and in `--set`
both are top-level keys alike. The config reaches a trial typed (`trial_config`): a sampled value is
set on the typed config and validated where it lands, never through a plain dict again.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal, TypeVar

from gitlib.configs import choice_fields, coerce, flatten, from_dict, join, require, to_dict
from gitlib.data.spec import DatasetSpec
from gitlib.errors import ConfigError
from gitlib.probes import PROBES
from gitlib.registry import Registry
from gitlib.train.config import GeneratorConfig
from sweeps import config_yaml, env, paths
from sweeps.kinds import TRIAL_KINDS, TrialKind, kind_of, section_types
from sweeps.race import RacePlan

T = TypeVar("T")

# Factories (search config, seed) -> an Optuna sampler, in sweeps.search.
SAMPLERS: Registry = Registry("search.sampler", {
    "tpe": "sweeps.search:tpe_sampler",
    "random": "sweeps.search:random_sampler",
    "grid": "sweeps.search:grid_sampler",
    "nsga2": "sweeps.search:nsga2_sampler",
}, aliases={"TPESampler": "tpe", "RandomSampler": "random", "GridSampler": "grid", "NSGAIISampler": "nsga2",
            "nsga-ii": "nsga2", "nsgaii": "nsga2"})

# Factories (sweep config, sweep folder) -> a Tune scheduler (or None), in sweeps.search.
SCHEDULERS: Registry = Registry("search.scheduler", {
    "none": "sweeps.search:no_scheduler",
    "asha": "sweeps.search:asha_scheduler",
}, aliases={"fifo": "none", "ASHAScheduler": "asha", "async_hyperband": "asha"})


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
class RacingConfig:
    """`search.racing`: drop a configuration once a paired test shows it worse than the best (sweeps.race)."""

    min_repeats: int = 3  # repeats every configuration runs before it can be dropped
    test: Literal["t", "wilcoxon"] = "t"  # one-sided paired test against the incumbent
    alpha: float = 0.05  # one-sided level for dropping a configuration
    metric: str | None = None  # None: the first search.metric
    mode: Literal["max", "min"] | None = None  # None: the metric's search.mode


@dataclass(frozen=True)
class SearchConfig:
    num_samples: int = 8
    max_concurrent: int = 2
    metric: tuple[str, ...] = ("test/balanced_acc",)  # several = multi-objective
    mode: tuple[Literal["max", "min"], ...] = ("max",)
    sampler: Annotated[str, SAMPLERS] = "tpe"
    scheduler: Annotated[str, SCHEDULERS] = "none"
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
    racing: RacingConfig | None = None  # None: every configuration runs all its repeats
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
        if self.racing is not None:
            self._validate_racing(self.racing, k("racing"))
        if self.repeats > 1:
            require(self.repeat_over not in self.space, f"{k('space')}.{self.repeat_over}",
                    f"is the repeat key (search.repeat_over): each group runs it as base .. base+{self.repeats - 1}")
            require(self.scheduler != "asha", k("scheduler"),
                    "asha stops single trials; with search.repeats > 1 a group's repeats must all finish")

    def _validate_racing(self, r: RacingConfig, key: str) -> None:
        require(self.repeats > 1, key, "races the repeats of each configuration: set search.repeats > 1")
        require(self.scheduler != "asha", key, "cannot run with search.scheduler asha (ASHA stops single trials, "
                                               "the race stops whole configurations)")
        require(2 <= r.min_repeats <= self.repeats, join(key, "min_repeats"),
                f"must be in [2, search.repeats = {self.repeats}], got {r.min_repeats}")
        require(0 < r.alpha <= 0.5, join(key, "alpha"), f"must be in (0, 0.5], got {r.alpha}")

    def params(self) -> dict[str, ParamSpace]:
        return {key: from_dict(ParamSpace, spec, f"search.space.{key}") for key, spec in self.space.items()}

    @property
    def race_metric(self) -> tuple[str, str]:
        """(metric, mode) the race runs on: racing.metric, default the first search.metric with its mode."""
        r = self.racing or RacingConfig()
        metric = r.metric or self.metric[0]
        mode = r.mode or dict(zip(self.metric, self.mode, strict=True)).get(metric, self.mode[0])
        return metric, mode


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


COMMON_KEYS = ("name", "seed", "trial", "storage")  # what every run's params hold, whatever its kind


def _default_sections() -> dict[str, Any]:
    return {name: cls() for name, cls in section_types().items()}


@dataclass(frozen=True)
class SweepConfig:
    name: str = "sweep"
    seed: int = 0
    trial: Annotated[str, TRIAL_KINDS] = "classifier"  # what each trial trains (sweeps.kinds)
    probes: tuple[Annotated[str, PROBES], ...] = ("spectral", "critical_band", "corruptions")  # () = off
    storage: str | None = None  # None: GITSWEEP_HOME, else ./gitsweep-runs (sweeps.paths)
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    # the trial kinds' own sections (`classifier`, `msr`, ...): section name -> its config (sweeps.kinds)
    sections: Mapping[str, Any] = field(default_factory=_default_sections)

    def validate(self, prefix: str = "") -> None:
        require(bool(self.name) and "/" not in self.name, "name", "must be a non-empty name without '/'")
        kind = kind_of(self.trial)
        if kind.check is not None:
            kind.check(self)  # the kind's rules across sections
        self._validate_metrics(kind)
        params = self.search.params()
        require(self.dataset.zipf_alpha is None or "dataset.imbalance_ratio" not in params,
                "search.space.dataset.imbalance_ratio",
                "has no effect while dataset.zipf_alpha is set (set zipf_alpha: null to search the ratio)")
        point = replace(self, search=replace(self.search, space={}, points_to_evaluate=()))
        known = set(point.flat())
        for key, spec in params.items():
            # Tune reserves resources.* once for all trials: a sampled value would not change what a trial gets
            require(not key.startswith("resources."), f"search.space.{key}",
                    "resources are reserved once for all trials, not per trial: set resources.*, don't search it")
            require(key in known, f"search.space.{key}", "not a config key that can be searched")
            for v in spec.choices or (spec.low, spec.high):  # every value the search can propose must be valid
                try:
                    with_value(point, key, v)
                except ConfigError as exc:
                    raise ConfigError(f"search.space.{key}", f"proposes {v!r}, but {exc}") from None

    def _validate_metrics(self, kind: TrialKind) -> None:
        """search.metric and search.racing.metric are metrics a trial of this kind reports."""
        valid = f"not a metric a {self.trial} trial reports ({', '.join(m + '*' if m.endswith('/') else m for m in kind.metrics)})"
        for i, m in enumerate(self.search.metric):
            require(kind.reports(m), f"search.metric[{i}]" if len(self.search.metric) > 1 else "search.metric",
                    f"{m!r} is {valid}")
        r = self.search.racing
        if r is not None and r.metric is not None:
            require(kind.reports(r.metric), "search.racing.metric", f"{r.metric!r} is {valid}")
            require(r.mode is not None or r.metric in self.search.metric, "search.racing.mode",
                    f"needed: {r.metric} is not among search.metric, so its direction is unknown (max or min)")

    def section(self, cls: type[T]) -> T:
        """The trial kind section of type `cls` (e.g. `cfg.section(ClassifierConfig)`)."""
        for value in self.sections.values():
            if isinstance(value, cls):
                return value
        raise KeyError(f"no config section of type {cls.__name__}")

    def as_dict(self) -> dict[str, Any]:
        """The YAML shape: the kinds' sections as top-level keys (after `generator`)."""
        plain = to_dict(replace(self, sections={}))
        del plain["sections"]
        out: dict[str, Any] = {}
        for key, value in plain.items():
            out[key] = value
            if key == "generator":
                out.update({name: to_dict(sec) for name, sec in self.sections.items()})
        return out

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, as `--set`, `search.space` and MLflow params name them."""
        return flatten(self.as_dict())

    def value(self, key: str) -> Any:
        """The value of one dotted key."""
        return self.flat()[key]

    def read_by_trials(self) -> dict[str, Any]:
        """The flat config a trial of this kind reads: the common keys, the kind's sections and the
        resources it ran with (what a run's params record). A classifier trial's params hold no `msr.*`."""
        keep = (*COMMON_KEYS, *kind_of(self.trial).sections, "resources")
        return flatten({k: v for k, v in self.as_dict().items() if k in keep})

    def resolved(self) -> SweepConfig:
        """What runs: every section's own resolution (e.g. GIT with no generated share is plain training)."""
        secs = {n: s.resolved() if hasattr(s, "resolved") else s for n, s in self.sections.items()}
        return replace(self, sections=secs)

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name


def choices() -> dict[str, Registry]:
    """Dotted key -> registry of every real choice of the config, the trial kinds' sections included."""
    out = choice_fields(SweepConfig)
    for name, cls in section_types().items():
        out.update(choice_fields(cls, name))
    return out


def build(data: Mapping[str, Any]) -> SweepConfig:
    """A validated SweepConfig from its YAML shape (sections as top-level keys)."""
    if not isinstance(data, Mapping):
        raise ConfigError("config", f"expected a mapping of config keys, got {data!r}")
    kinds = section_types()
    fields = [f.name for f in dataclasses.fields(SweepConfig) if f.name != "sections"]
    for key in data:
        if key not in fields and key not in kinds:
            raise ConfigError(str(key), f"unknown key (known: {', '.join(sorted([*fields, *kinds]))})")
    sections: dict[str, Any] = {name: from_dict(cls, data.get(name) or {}, name) for name, cls in kinds.items()}
    return from_dict(SweepConfig, {**{k: v for k, v in data.items() if k not in kinds}, "sections": sections})


def _set(obj: Any, dotted: str, value: Any, prefix: str) -> Any:
    """A copy of dataclass `obj` with `dotted` set to `value` (coerced to its field's type), validated."""
    name, _, rest = dotted.partition(".")
    key = join(prefix, name)
    names = [f.name for f in dataclasses.fields(obj)]
    if name not in names or name == "sections":
        raise ConfigError(key, f"unknown key (known: {', '.join(sorted(n for n in names if n != 'sections'))})")
    if rest:
        child = getattr(obj, name)
        if not dataclasses.is_dataclass(child):
            raise ConfigError(key, "is not a section")
        new = _set(child, rest, value, key)
    else:
        new = coerce(value, typing.get_type_hints(type(obj), include_extras=True)[name], key)
    out = replace(obj, **{name: new})
    if hasattr(out, "validate") and not isinstance(out, SweepConfig):
        out.validate(prefix)
    return out


def with_value(cfg: SweepConfig, key: str, value: Any) -> SweepConfig:
    """A copy of `cfg` with dotted `key` set to `value`, validated where it lands and across sections
    (used for every searched sample)."""
    head, _, rest = key.partition(".")
    if head in cfg.sections:
        if not rest:
            raise ConfigError(key, "is a section: set one of its keys")
        out = replace(cfg, sections={**cfg.sections, head: _set(cfg.sections[head], rest, value, head)})
    else:
        out = _set(cfg, key, value, "")
    out.validate()
    return out


def trial_config(base: SweepConfig, sample: Mapping[str, Any]) -> SweepConfig:
    """The resolved config of one trial: `base` with every sampled dotted key applied (bookkeeping keys,
    which start with `_`, left out). The one place a trial's config is derived."""
    cfg = replace(base, search=replace(base.search, space={}, points_to_evaluate=()))  # a point: no space
    for key, value in sorted(sample.items()):
        if not key.startswith("_"):
            cfg = with_value(cfg, key, value)
    return cfg


def race_plan(cfg: SweepConfig) -> RacePlan:
    """What the searcher races on (or, without search.racing, the plan that runs every repeat)."""
    s, r = cfg.search, cfg.search.racing
    metric, mode = s.race_metric
    if r is None:
        return RacePlan(s.repeats, s.repeats, metric, mode, s.group_stat)
    return RacePlan(s.repeats, r.min_repeats, metric, mode, s.group_stat, r.test, r.alpha)


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
    data = config_yaml.read_yaml(config)
    pinned: list[str] = []
    dropped: list[str] = []
    space = (data.get("search") or {}).get("space") or {}
    for item in overrides or []:
        key, value = config_yaml.parse_set(item)
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
        config_yaml.set_dotted(data, key, value)
        if key == "search.space":  # the whole space replaced: later `search.space.<key>=` entries go into it
            space = value if isinstance(value, dict) else {}
    _refuse_set_on_repeat_key(data, [config_yaml.parse_set(item)[0] for item in overrides or []])
    points = (data.get("search") or {}).get("points_to_evaluate")
    gone = {*pinned, *dropped}
    if gone and isinstance(points, list):  # pinned or dropped keys leave the warm-start points too
        points = [{k: v for k, v in p.items() if k not in gone} if isinstance(p, dict) else p for p in points]
        data["search"]["points_to_evaluate"] = [p for p in points if p != {}]  # nothing left to warm-start
    return build(data), pinned


def resolve_config(config: str, overrides: list[str], name: str | None = None, storage: str | None = None,
                   tracking_uri: str | None = None) -> tuple[SweepConfig, list[str]]:
    """Load + override + CLI flags; storage made absolute so every worker sees the same path, and the
    tracking URI pinned where the storage is a URI."""
    cfg, pinned = load_config(config, overrides)
    if name:
        cfg = replace(cfg, name=name)
    given_as = "--storage" if storage else "config key 'storage'" if cfg.storage else \
        "GITSWEEP_HOME" if env.storage_home() else "the default storage"
    cfg = replace(cfg, storage=paths.absolute(storage or cfg.storage))
    if tracking_uri:
        cfg = replace(cfg, tracking=TrackingConfig(uri=tracking_uri, experiment=cfg.tracking.experiment))
    if paths.is_uri(cfg.storage):
        paths.fs_path(str(cfg.storage))  # an unusable URI (unknown scheme, ...) is a ConfigError naming `storage`
        if not (cfg.tracking.uri or env.tracking_uri()):
            raise ConfigError("tracking.uri", f"storage {cfg.storage} is a URI, and MLflow's default SQLite database "
                                              "cannot live there: pass --tracking-uri (an MLflow server, or "
                                              "sqlite:////local/path/mlflow.db), MLFLOW_TRACKING_URI or tracking.uri")
        # pinned, so trials and `resume` use the same one whatever their environment
        uri = paths.tracking_uri(cfg.tracking.uri, cfg.storage)
        cfg = replace(cfg, tracking=TrackingConfig(uri=uri, experiment=cfg.tracking.experiment))
    else:  # a file there would end the sweep in a traceback once Ray has started
        paths.check_local(str(cfg.storage), given_as)
    cfg.validate()
    return cfg, pinned
