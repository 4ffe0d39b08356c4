"""The trainer's algorithm: the registered math (algo/registry.py) the config names, looked up once.

    alg = choose_algorithm(cfg)        # ConfigError (one line, the registered names) on an unknown name
    alg.estimator.fn(inputs)           # algo.name: advantages (and returns)
    alg.estimator.critic               # whether a value model is built, trained and checkpointed
    alg.kl_penalty(logp, ref_logp)     # ppo.kl.estimator: the KL in the reward
    alg.kl_loss                        # algo.kl_loss: the KL loss term, None when off

`algo.name` is a registered name (`ppo`, `grpo`, `rloo`, `reinforce_pp`, ...) or `package.module:function`,
a function of one's own registered with `@register_advantage` in that module (importing it registers
it; every rank imports it here). The policy loss is `ppo_clip` (POLICY_LOSS) until a config key names one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from hpc_rlhf.algo import KL_TERMS, POLICY_LOSSES, AdvantageEstimator, Registry, UnknownName
from hpc_rlhf.config import Config
from hpc_rlhf.errors import ConfigError
from hpc_rlhf.plugins import advantage_estimator

POLICY_LOSS = "ppo_clip"  # the one policy loss the config can pick today


@dataclass(frozen=True)
class Algorithm:
    """The registered functions of one run's algorithm."""

    estimator: AdvantageEstimator
    policy_loss: Callable
    kl_penalty: Callable
    kl_loss: Optional[Callable]


def choose_algorithm(cfg: Config) -> Algorithm:
    """Look up the config's algorithm: estimator (algo.name), policy loss, KL terms (ppo.kl.estimator,
    algo.kl_loss). Raises ConfigError naming the key and the registered names."""
    a = cfg.algo
    return Algorithm(
        estimator=advantage_estimator(a.name),
        policy_loss=_get(POLICY_LOSSES, POLICY_LOSS, "policy loss"),
        kl_penalty=_get(KL_TERMS, cfg.ppo.kl.estimator, "ppo.kl.estimator"),
        kl_loss=None if a.kl_loss == "off" else _get(KL_TERMS, a.kl_loss, "algo.kl_loss"),
    )


def _get(registry: Registry, name: str, key: str) -> Any:
    try:
        return registry.get(name)
    except UnknownName as e:
        raise ConfigError(f"config key '{key}': {e}") from None
