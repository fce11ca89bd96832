"""MsrConfig: the paper's defaults validate, reference spellings normalise, bad `msr.*` values raise a
ConfigError naming the key, and validating a config imports no torch."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from gitlib.configs import from_dict
from gitlib.errors import ConfigError
from gitlib.msr.config import MsrConfig


def _load(data: dict[str, Any]) -> MsrConfig:
    return from_dict(MsrConfig, data, "msr")


def test_defaults_are_the_papers_recipe() -> None:
    cfg = _load({})
    recipe = (cfg.inner_steps, cfg.inner_lr, cfg.outer_lr, cfg.outer_steps)
    assert recipe == (1, 0.1, 1e-3, 1000)  # MAML recipe: 1 inner step, lr 0.1, Adam 1e-3, 1000 steps
    assert (cfg.tasks_per_step, cfg.k_support, cfg.k_query) == (32, 1, 19)  # 32 tasks, 1 support, 19 query
    assert (cfg.eval_every, cfg.eval_tasks, cfg.num_tasks) == (100, 300, 10000)  # evaluation protocol
    latent = {p: _load({"problem": p}).resolved_latent_size for p in ("rank1", "rank2", "rank5")}
    assert latent == {"rank1": 3, "rank2": 6, "rank5": 30}  # the paper's k per problem
    assert _load({"problem": "rank2", "latent_size": 9}).resolved_latent_size == 9  # explicit k wins


def test_reference_spellings_normalise() -> None:
    cfg = _load({"problem": "2d_rot8", "model": "SHARE_CONV"})
    assert (cfg.problem, cfg.model) == ("rot8", "msr_conv")  # reference names map to canonical names
    assert cfg.shape.out_size == 24  # C8 lift: 3 groups x 8 channels


@pytest.mark.parametrize("data,key", [
    ({"problem": "rank3"}, "msr.problem"),
    ({"model": "mlp"}, "msr.model"),
    ({"problem": "rank1", "model": "msr_conv"}, "msr.model"),
    ({"problem": "rot8", "model": "lc"}, "msr.model"),
    ({"problem": "rot8_flip", "model": "msr_fc"}, "msr.model"),
    ({"latent_size": 0}, "msr.latent_size"),
    ({"inner_steps": 0}, "msr.inner_steps"),
    ({"inner_lr": 0.0}, "msr.inner_lr"),
    ({"outer_lr": -1e-3}, "msr.outer_lr"),
    ({"outer_steps": "many"}, "msr.outer_steps"),
    ({"k_query": 0}, "msr.k_query"),
    ({"tasks_per_step": 9000}, "msr.tasks_per_step"),
    ({"eval_tasks": 2001}, "msr.eval_tasks"),
    ({"eval_tasks": 1}, "msr.eval_tasks"),
    ({"num_tasks": 5}, "msr.num_tasks"),
    ({"family_seed": -1}, "msr.family_seed"),
    ({"inner_step": 2}, "msr.inner_step"),
])
def test_bad_values_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(data)
    assert err.value.key == key  # the error names the offending msr.* key


def test_config_validation_imports_no_torch() -> None:
    code = ("import sys; from gitlib.configs import from_dict; from gitlib.msr import MsrConfig; "
            "from_dict(MsrConfig, {'problem': 'rot8', 'model': 'msr_conv'}, 'msr'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr  # configs validate without loading torch
