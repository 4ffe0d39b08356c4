"""A toy advantage estimator of a user's own, registered through the registry alone: a run names it as
`algo.name=tests.roles.toy_estimator:toy_advantages` (tests/roles/test_custom_estimator.py)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from hpc_rlhf.algo import AdvantageInputs, register_advantage

TOY_ADVANTAGE = 0.25


@register_advantage("toy")
def toy_advantages(x: AdvantageInputs) -> tuple[Tensor, Optional[Tensor]]:
    """`TOY_ADVANTAGE` on every valid response token whatever the reward, `(B, T)`, 0 on padding; no returns."""
    return TOY_ADVANTAGE * x.mask.to(x.rewards.dtype), None


@register_advantage("toy_critic", critic=True)
def toy_critic_advantages(x: AdvantageInputs) -> tuple[Tensor, Optional[Tensor]]:
    """A user's estimator that reads a value model: advantages = rewards - old values, the rewards as returns."""
    return (x.rewards - x.values) * x.mask.to(x.rewards.dtype), x.rewards
