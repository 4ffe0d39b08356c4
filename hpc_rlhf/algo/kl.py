"""The KL penalty against the reference model: per-token estimators, token rewards, beta controllers."""

from __future__ import annotations

from typing import Any, Union

import torch
from torch import Tensor

from hpc_rlhf.algo.registry import KL_TERMS, register_kl

KL_ESTIMATORS = ("k1", "k3")
KL_LOSS_ESTIMATORS = ("k1", "k2", "k3")


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs.

    Args:
        logp: `(B, T)` log-probs of the sampled tokens under the policy that sampled them.
        ref_logp: `(B, T)` log-probs of the same tokens under the reference model.
        estimator: `"k1"`: `logp - ref_logp` (unbiased, can be negative per token);
            `"k3"`: `exp(r) - r - 1` with `r = ref_logp - logp` (Schulman's estimator, unbiased, >= 0).

    Returns:
        `(B, T)` per-token KL estimate, no reduction, no masking (padding positions hold whatever
        the inputs give; `token_rewards` masks them).

    Raises:
        ValueError: on an unknown estimator name.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")
    return KL_TERMS.get(estimator)(logp, ref_logp)


def kl_loss_terms(logp: Tensor, ref_logp: Tensor, estimator: str) -> Tensor:
    """Per-token KL(policy || reference) as a loss term on the policy being trained (`algo.kl_loss`).

    Args:
        logp: `(B, T)` log-probs of the sampled tokens under the policy being trained (with grad).
        ref_logp: `(B, T)` reference log-probs of the same tokens.
        estimator: `"k1"`: `logp - ref_logp`; `"k2"`: `0.5 * (logp - ref_logp)^2`; `"k3"`:
            `exp(r) - r - 1`, `r = ref_logp - logp` (as `kl_penalty`). No clamping.

    Returns:
        `(B, T)` per-token terms (aggregate them like the policy loss), no masking.

    Raises:
        ValueError: on an unknown estimator name.
    """
    if estimator not in KL_LOSS_ESTIMATORS:
        raise ValueError(f"unknown KL loss estimator {estimator!r}; valid: {', '.join(KL_LOSS_ESTIMATORS)}")
    return KL_TERMS.get(estimator)(logp, ref_logp)


@register_kl("k1")
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """`logp - ref_logp` per token, `(B, T)`: unbiased, signed."""
    return logp - ref_logp


@register_kl("k2")
def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """`0.5 * (logp - ref_logp)^2` per token, `(B, T)`: a loss term only (its gradient is k1's)."""
    return 0.5 * (logp - ref_logp) ** 2


@register_kl("k3")
def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """`exp(r) - r - 1`, `r = ref_logp - logp`, per token, `(B, T)`: Schulman's, unbiased and >= 0."""
    r = ref_logp - logp
    return torch.expm1(r) - r  # exp(r) - 1 - r, accurate for small r


def token_rewards(score: Tensor, kl: Tensor, mask: Tensor, beta: float, reward_clip: float = 0.0) -> Tensor:
    """Per-token PPO rewards: the KL penalty on every response token, the score on the last one.

    `rewards[b, t] = -beta * kl[b, t] * mask[b, t]`, plus `score[b]` (clipped to
    `[-reward_clip, reward_clip]` when `reward_clip > 0`) added at the last valid token of row b,
    i.e. the largest t with `mask[b, t] == 1` (the EOS token when one was emitted).
    A row with no valid token gets no score and is all zeros.

    Args:
        score: `(B,)` reward-model scores of the full sequences.
        kl: `(B, T)` per-token KL estimates (see `kl_penalty`).
        mask: `(B, T)` response mask (1 on real response tokens, right-padded).
        beta: the KL coefficient (the controller's current `value`).
        reward_clip: clip the score to `[-reward_clip, reward_clip]`; 0 = no clipping.

    Returns:
        `(B, T)` rewards in `kl`'s dtype, exactly 0 at masked-out positions.
    """
    valid = mask != 0
    zero = torch.zeros((), dtype=kl.dtype, device=kl.device)
    rewards = torch.where(valid, -beta * kl, zero)
    score = score.to(kl.dtype)
    if reward_clip > 0:
        score = score.clamp(-reward_clip, reward_clip)
    if kl.shape[-1] == 0:
        return rewards
    t = torch.arange(kl.shape[-1], device=kl.device)
    last = torch.where(valid, t, -1).amax(dim=-1)  # (B,), -1 for an empty row
    has_token = last >= 0
    score = torch.where(has_token, score, zero)
    return rewards.scatter_add(-1, last.clamp(min=0).unsqueeze(-1), score.unsqueeze(-1))


class FixedKLController:
    """A constant KL coefficient: `value` never changes."""

    def __init__(self, init_coef: float) -> None:
        self.value: float = float(init_coef)

    def update(self, current_kl: float, n_samples: int) -> None:
        """No-op (kept so both controllers share one interface)."""

    def state_dict(self) -> dict[str, Any]:
        """`{"kind": "fixed", "value": value}`."""
        return {"kind": "fixed", "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `value` exactly."""
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human
    Preferences"), as TRL's `AdaptiveKLController`.

    After each step: `e = clip(current_kl / target - 1, -0.2, 0.2)`;
    `value *= 1 + e * n_samples / horizon`.
    """

    def __init__(self, init_coef: float, target: float, horizon: int) -> None:
        if target <= 0:
            raise ValueError(f"AdaptiveKLController: target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"AdaptiveKLController: horizon must be > 0, got {horizon}")
        self.value: float = float(init_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_samples: int) -> None:
        """Move `value` towards the target.

        Args:
            current_kl: the step's observed KL per sequence (nats), e.g. the batch mean over
                sequences of the summed per-token KL.
            n_samples: sequences in the step (global batch size).
        """
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_samples / self.horizon

    def state_dict(self) -> dict[str, Any]:
        """`{"kind": "adaptive", "value", "target", "horizon"}`."""
        return {"kind": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `value` exactly (target and horizon stay as constructed, from the config)."""
        self.value = float(state["value"])


KLController = Union[FixedKLController, AdaptiveKLController]


def make_kl_controller(adaptive: bool, init_coef: float, target: float, horizon: int) -> KLController:
    """`AdaptiveKLController(init_coef, target, horizon)` if `adaptive` else `FixedKLController(init_coef)`."""
    if adaptive:
        return AdaptiveKLController(init_coef, target, horizon)
    return FixedKLController(init_coef)
