"""Trial kinds (`trial:` in the config): what one Ray Tune trial trains. Torch-free at import; each kind's
module loads when a trial of that kind runs.

Every kind is a body `(cfg: SweepConfig, ctx: TrialContext) -> None` wrapped by sweeps.trials.entry into
Tune's function trainable: it reports metrics (with checkpoint files) through `ctx`, resumes from
`ctx.state` and, when it ends, reports its final metrics with the files of the result contract
(sweeps.results).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gitlib.registry import Registry

if TYPE_CHECKING:
    from sweeps.config import SweepConfig

TRIAL_KINDS: Registry = Registry("trial", {
    "classifier": "sweeps.trials.classifier:classifier_trial",
    "generator": "sweeps.trials.generator:generator_trial",
    "msr": "sweeps.trials.msr:msr_trial",
})


def trainable_for(cfg: SweepConfig) -> Any:
    """The Tune trainable of `cfg.trial`, with the resolved config bound and its resources attached."""
    from ray import tune

    from gitlib.configs import to_dict
    from sweeps.trials.entry import tune_entry

    bound = tune.with_parameters(tune_entry(TRIAL_KINDS.get(cfg.trial)), base=to_dict(cfg))
    res: dict[str, float] = {"cpu": cfg.resources.cpu}
    if cfg.resources.gpu > 0:
        res["gpu"] = cfg.resources.gpu
    return tune.with_resources(bound, res)
