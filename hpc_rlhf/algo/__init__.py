"""The pure RL math of RLHF: masked statistics, the KL penalty, GAE and the PPO losses, the
critic-free advantages (GRPO, RLOO, REINFORCE++) and loss aggregation; the registries that name the
advantage estimators, policy losses and KL terms the trainer picks from the config (`registry.py`).

Only torch; no config, no I/O. All token tensors are `(B, T)` with a right-padded response mask.
See docs/algorithms.md for every implementation choice and the public code it agrees with.
"""

from hpc_rlhf.algo.aggregate import LOSS_AGGS, aggregate
from hpc_rlhf.algo.critic_free import (
    grpo_advantages,
    reinforce_pp_advantages,
    reward_to_go,
    rloo_advantages,
    uniform_groups,
)
from hpc_rlhf.algo.estimators import grpo_estimator, ppo_estimator, reinforce_pp_estimator, rloo_estimator
from hpc_rlhf.algo.gae import gae
from hpc_rlhf.algo.kl import (
    KL_ESTIMATORS,
    KL_LOSS_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    KLController,
    kl_loss_terms,
    kl_penalty,
    make_kl_controller,
    token_rewards,
)
from hpc_rlhf.algo.losses import entropy_from_logits, explained_variance, policy_loss, value_loss
from hpc_rlhf.algo.masked import masked_mean, masked_sum, masked_var, masked_whiten
from hpc_rlhf.algo.registry import (
    ADVANTAGE_ESTIMATORS,
    KL_TERMS,
    POLICY_LOSSES,
    AdvantageEstimator,
    AdvantageInputs,
    Registry,
    UnknownName,
    register_advantage,
    register_kl,
    register_policy_loss,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_TERMS",
    "POLICY_LOSSES",
    "AdvantageEstimator",
    "AdvantageInputs",
    "Registry",
    "UnknownName",
    "grpo_estimator",
    "ppo_estimator",
    "register_advantage",
    "register_kl",
    "register_policy_loss",
    "reinforce_pp_estimator",
    "rloo_estimator",
    "KL_ESTIMATORS",
    "KL_LOSS_ESTIMATORS",
    "LOSS_AGGS",
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
    "aggregate",
    "entropy_from_logits",
    "explained_variance",
    "gae",
    "grpo_advantages",
    "kl_loss_terms",
    "kl_penalty",
    "make_kl_controller",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "policy_loss",
    "reinforce_pp_advantages",
    "reward_to_go",
    "rloo_advantages",
    "token_rewards",
    "uniform_groups",
    "value_loss",
]
