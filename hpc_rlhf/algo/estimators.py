"""The built-in advantage estimators, registered by name (algo/registry.py): `algo.name` picks one.

    est = ADVANTAGE_ESTIMATORS.get("grpo")
    adv, returns = est.fn(AdvantageInputs(rewards, mask, scores, groups))   # (B, T), (B, T) or None

Each takes the whole step batch (`AdvantageInputs`: per-token rewards with the KL and the score in
them, the response mask, the prompt index of each sample as its group, the old values when
registered with critic=True) and returns the advantages and, where it has them, the returns (the
value targets of a critic; reward-to-go otherwise). docs/algorithms.md ("The registry") numbers them.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from hpc_rlhf.algo.critic_free import grpo_advantages, reinforce_pp_advantages, rloo_advantages
from hpc_rlhf.algo.gae import gae
from hpc_rlhf.algo.masked import masked_whiten
from hpc_rlhf.algo.registry import AdvantageInputs, register_advantage


@register_advantage("ppo", critic=True)
def ppo_estimator(x: AdvantageInputs) -> tuple[Tensor, Optional[Tensor]]:
    """GAE on the old values (gamma, lam), whitened over the batch when `whiten`; returns = GAE's
    un-whitened `adv + values` (the value targets)."""
    assert x.values is not None, "ppo needs the old values"
    adv, returns = gae(x.rewards, x.values, x.mask, x.gamma, x.lam)
    if x.whiten:
        adv = masked_whiten(adv, x.mask)
    return adv, returns


@register_advantage("reinforce_pp")
def reinforce_pp_estimator(x: AdvantageInputs) -> tuple[Tensor, Optional[Tensor]]:
    """REINFORCE++: the reward-to-go of the per-token rewards (returned as the returns), whitened."""
    return reinforce_pp_advantages(x.rewards, x.mask, x.gamma)


@register_advantage("grpo", groups=True)
def grpo_estimator(x: AdvantageInputs) -> tuple[Tensor, Optional[Tensor]]:
    """GRPO: the sequence reward (sum of the token rewards) against its group's mean, divided by the
    group's std when `group_std`; on every response token. No returns."""
    return grpo_advantages(x.rewards.sum(-1), x.groups, x.mask, x.group_std), None


@register_advantage("rloo", groups=True)
def rloo_estimator(x: AdvantageInputs) -> tuple[Tensor, Optional[Tensor]]:
    """RLOO: the sequence reward against the mean of the other samples of its group. No returns."""
    return rloo_advantages(x.rewards.sum(-1), x.groups, x.mask), None
