"""An advantage estimator added through the registry alone (algo/registry.py): a module of one's own
registers it, the config names it, and a real run on 1+1+2 ranks (mpiexec) trains with it; no edit
to the trainer. Its constant advantage shows in every step's ppo/advantages_mean."""

from __future__ import annotations

import json
import os

import pytest

from hpc_rlhf.algo import ADVANTAGE_ESTIMATORS, register_advantage
from hpc_rlhf.config import load_config
from hpc_rlhf.errors import ConfigError
from hpc_rlhf.roles.trainer_algo import choose_algorithm
from tests.conftest import TINY, cli
from tests.roles.toy_estimator import TOY_ADVANTAGE, toy_advantages

SPEC = "tests.roles.toy_estimator:toy_advantages"


def test_the_config_names_a_registered_function_and_unknown_names_list_the_registered(tmp_path):
    alg = choose_algorithm(load_config(TINY, [f"algo.name={SPEC}"]))
    assert alg.estimator is ADVANTAGE_ESTIMATORS.get("toy") and alg.estimator.fn is toy_advantages
    assert not alg.estimator.critic and not alg.estimator.groups
    with pytest.raises(ConfigError) as e:
        choose_algorithm(load_config(TINY, ["algo.name=nope"]))
    assert str(e.value) == (
        "config key 'algo.name': unknown advantage estimator 'nope'; registered: "
        + ", ".join(ADVANTAGE_ESTIMATORS.names())
    )
    with pytest.raises(ConfigError, match=r"^config key 'algo.name': 'tests.conftest:cli' is not a registered"):
        choose_algorithm(load_config(TINY, ["algo.name=tests.conftest:cli"]))
    with pytest.raises(ValueError, match="'toy' is registered already"):
        register_advantage("toy")(lambda x: (x.mask, None))


@pytest.mark.mpi
def test_a_run_trains_with_an_estimator_registered_outside_the_package(tiny_rm, mpiexec, tmp_path):
    run = tmp_path / "run"
    cli("train", TINY, *tiny_rm["overrides"], f"run_dir={run}", f"algo.name={SPEC}", "layout.train=2", "total_steps=2")
    steps = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [s["step"] for s in steps] == [0, 1]
    for s in steps:  # the masked mean of the toy's advantages, exactly (grpo's would be ~0, never 0.25)
        assert s["ppo/advantages_mean"] == pytest.approx(TOY_ADVANTAGE, abs=1e-7)
        assert "ppo/value_loss" not in s and "ppo/returns_mean" not in s and "algo/uniform_groups" not in s
    ckpt = run / "checkpoints" / "step_000002"
    assert not os.path.exists(ckpt / "value.safetensors")  # registered critic-free: no value model
    assert steps[0]["ppo/policy_grad_norm"] > 0
