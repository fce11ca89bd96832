"""Trial kinds (`trial:` in the config): one record per kind declares everything the rest of sweeps/ needs
of it, so that nothing else asks which kind it holds. Torch-free and Ray-free: a config validates, and
`status` / `report` run, without loading any kind's training code.

Adding a kind is its body module (sweeps/trials/), one record here, a preset and its docs. A body is
`(cfg: SweepConfig, ctx: TrialContext) -> None` (sweeps.trials.entry wraps it into Tune's trainable): it
reports per-step metrics through `ctx`, resumes from `ctx.state` / `ctx.meta`, and ends by reporting its
final metrics with the result files of the contract (sweeps.results).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gitlib.configs import require
from gitlib.msr.config import MsrConfig
from gitlib.registry import Registry
from gitlib.train.config import ClassifierConfig
from sweeps import results as rs
from sweeps.synthetic import SyntheticConfig

# Result keys every kind reports per step (or may): bookkeeping, not the final model's metrics.
COMMON_SERIES = ("trial/", "time/")
STEP_KEYS = ("lr", "epoch", "iteration", "step")

Selector = dict[str, Any]


@dataclass(frozen=True)
class Contrast:
    """The report's default paired contrast: groups matching `a` against groups matching `b` that agree on
    every other searched key except `free` (keys that make a configuration A rather than B)."""

    a: Selector
    b: Selector
    free: tuple[str, ...] = ()
    label: str = "A - B"


@dataclass(frozen=True)
class TrialKind:
    """What one Tune trial trains, and what the machinery needs to know of it."""

    body: str | Callable[..., None]  # "module:function", or the function itself
    length: str | int  # the number of steps a trial runs (progress, ASHA's max_t): a dotted config key, or fixed
    step: str = "epoch"  # the result key that numbers the steps (MLflow's step of a series)
    section: str | None = None  # the kind's own config section (`classifier`, `msr`, ...), if any
    section_type: type | None = None  # its dataclass
    reads: tuple[str, ...] = ()  # config sections it reads besides its own (the params a run logs)
    series: tuple[str, ...] = ()  # prefixes of per-step result keys (MLflow series; the rest are final)
    result_files: tuple[str, ...] = (rs.FINAL,)  # what the driver keeps of a finished trial
    figures: tuple[str, ...] = ()  # PNG result files, also logged as MLflow images
    data: bool = False  # reads dataset.source / dataset.root (the pre-flight checks them)
    stoppable: bool = False  # checks ctx.stop_check() every step: ASHA and the time budget may stop it
    progress: tuple[str, ...] = ()  # per-step keys that `--verbose` progress lines show
    headline: tuple[str, ...] = ()  # final metrics the closing summary, `status` and `report` show
    contrast: Contrast | None = None  # the report's default paired contrast (with repeats)
    # the final metrics it reports, exact names or prefixes ending in "/" (search.metric and the race's
    # metric are checked against them; empty: not checked)
    metrics: tuple[str, ...] = ()

    def reports(self, metric: str) -> bool:
        return not self.metrics or metric in self.metrics or any(
            m.endswith("/") and metric.startswith(m) for m in self.metrics)
    report: str | None = None  # "module:function" (cfg, groups, out folder) -> text: an extra report part
    check: Callable[[Any], None] | None = None  # (cfg) -> None: its rules across config sections
    # modules its trials import, which a local Ray's prestarted workers import before the first trial
    preload: tuple[str, ...] = ()

    def is_series(self, key: str) -> bool:
        """Whether a result key is a per-step series; the rest describe the final model (MLflow step 0)."""
        return key.startswith((*COMMON_SERIES, *self.series)) or key in (*STEP_KEYS, self.step)

    @property
    def sections(self) -> tuple[str, ...]:
        """Every config section a trial of this kind reads."""
        return (*((self.section,) if self.section else ()), *self.reads)


def _classifier_check(cfg: Any) -> None:
    require(cfg.section(ClassifierConfig).augment != "oracle" or cfg.dataset.nuisance != "none",
            "classifier.augment", "oracle applies the data set's true nuisance, and dataset.nuisance is none")


CLASSIFIER = TrialKind(
    body="sweeps.trials.classifier:classifier_trial", length="classifier.epochs",
    section="classifier", section_type=ClassifierConfig, reads=("dataset", "generator", "probes"),
    series=("train/", "val/"), result_files=(rs.FINAL, rs.PER_CLASS, rs.CURVES, rs.EKLD_PNG),
    figures=(rs.EKLD_PNG,), data=True, stoppable=True,
    progress=("train/loss", "val/balanced_acc"), headline=("test/balanced_acc", "ekld/head", "ekld/tail"),
    # GIT against its baseline (no generated images) at every other setting
    contrast=Contrast({"classifier.augment": "git"}, {"classifier.augment": "none"},
                      ("classifier.augment", "classifier.gen_frac", "classifier.git_start_epoch",
                       "classifier.git_threshold", "generator."), "GIT - baseline"),
    metrics=("test/acc", "test/balanced_acc", "test/many_acc", "test/medium_acc", "test/few_acc", "ekld/mean",
             "ekld/head", "ekld/tail", "ekld/size_spearman", "consistency/mean", "probe/"), check=_classifier_check,
    # torch._dynamo: the first torch.optim optimizer imports it lazily, 1.4 s on 2 cores
    preload=("torch", "torch._dynamo", "sweeps.trials.classifier", "gitlib.data.builds", "gitlib.models.munit"))

GENERATOR = TrialKind(
    body="sweeps.trials.generator:generator_trial", length="generator.iterations", step="iteration",
    reads=("dataset", "generator"), series=("loss/",), result_files=(rs.FINAL, rs.SAMPLES_PNG),
    figures=(rs.SAMPLES_PNG,), data=True, progress=("loss/gen_total",),
    headline=("diversity/ratio", "preservation/small", "preservation/all"),
    metrics=("diversity/", "preservation/", "time/"),
    preload=("torch", "torch._dynamo", "sweeps.trials.generator", "gitlib.data.builds", "gitlib.models.munit"))

MSR = TrialKind(
    body="sweeps.trials.msr:msr_trial", length="msr.outer_steps", step="step", section="msr",
    section_type=MsrConfig, series=("meta_train/", "meta_test/"), result_files=(rs.FINAL, rs.SHARING_PNG),
    figures=(rs.SHARING_PNG,), progress=("meta_test/mse",), headline=("meta_test/mse", "msr/equivariance_error"),
    metrics=("meta_test/mse", "meta_test/mse_ci95", "msr/"), report="sweeps.report.msr:msr_table",
    preload=("torch", "torch._dynamo", "sweeps.trials.msr"))

SYNTHETIC = TrialKind(
    body="sweeps.trials.synthetic:synthetic_trial", length="synthetic.epochs", section="synthetic",
    section_type=SyntheticConfig, reads=("dataset",), series=("train/", "val/"),
    result_files=(rs.FINAL, rs.PER_CLASS, rs.EKLD_PNG), figures=(rs.EKLD_PNG,), stoppable=True,
    progress=("val/balanced_acc",), headline=("test/balanced_acc", "ekld/head", "ekld/tail"),
    metrics=("test/acc", "test/balanced_acc", "test/many_acc", "test/few_acc", "ekld/mean", "ekld/head",
             "ekld/tail", "val/balanced_acc"), preload=("sweeps.trials.synthetic",))

TRIAL_KINDS: Registry[TrialKind] = Registry("trial", {
    "classifier": CLASSIFIER,
    "generator": GENERATOR,
    "msr": MSR,
    "synthetic": SYNTHETIC,
})


def kind_of(name: str) -> TrialKind:
    return TRIAL_KINDS.get(name)


def steps_of(kind: TrialKind, cfg: Any) -> int:
    """The number of steps a trial of `kind` runs under config `cfg`."""
    return kind.length if isinstance(kind.length, int) else int(cfg.value(kind.length))


def section_types() -> dict[str, type]:
    """Config section -> its dataclass, for every registered kind that has one (in registration order)."""
    out: dict[str, type] = {}
    for name in TRIAL_KINDS.names():
        kind = TRIAL_KINDS.get(name)
        if kind.section and kind.section_type is not None:
            out[kind.section] = kind.section_type
    return out


def resolve(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """A "module:function" reference (or a function) as the function."""
    if callable(ref):
        return ref
    from importlib import import_module

    module, _, attr = ref.partition(":")
    return getattr(import_module(module), attr)
