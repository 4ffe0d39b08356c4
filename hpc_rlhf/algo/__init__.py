"""The pure RL math of PPO-RLHF: masked statistics, the KL penalty, GAE and the PPO losses.

Only torch; no config, no I/O. All token tensors are `(B, T)` with a right-padded response mask.
See docs/ppo_details.md for every implementation choice and the public code it agrees with.
"""

from hpc_rlhf.algo.gae import gae
from hpc_rlhf.algo.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    KLController,
    kl_penalty,
    make_kl_controller,
    token_rewards,
)
from hpc_rlhf.algo.losses import entropy_from_logits, explained_variance, policy_loss, value_loss
from hpc_rlhf.algo.masked import masked_mean, masked_sum, masked_var, masked_whiten

__all__ = [
    "KL_ESTIMATORS",
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
    "entropy_from_logits",
    "explained_variance",
    "gae",
    "kl_penalty",
    "make_kl_controller",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "policy_loss",
    "token_rewards",
    "value_loss",
]
