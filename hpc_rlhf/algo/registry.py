"""The RL math by name: advantage estimators, policy losses and KL terms, each registered once.

    @register_advantage("my_adv")                       # critic=True: it reads a value model's old values
    def my_adv(x: AdvantageInputs) -> tuple[Tensor, Optional[Tensor]]:
        return x.rewards.sum(-1, keepdim=True) * x.mask, None       # (advantages, returns or None)

    est = ADVANTAGE_ESTIMATORS.get("grpo")    # an AdvantageEstimator: .fn, .critic, .groups
    loss = POLICY_LOSSES.get("ppo_clip")      # policy_loss's contract (algo/losses.py)
    kl = KL_TERMS.get("k3")                   # (logp, ref_logp) -> (B, T) per-token terms
    ADVANTAGE_ESTIMATORS.names()              # ['grpo', 'ppo', 'reinforce_pp', 'rloo']

A registry maps a name to what was registered under it; registering a name twice with a different
function is a ValueError (the same function again is a no-op: a module imported twice). An unknown
name is an `UnknownName` (a LookupError) of one line listing the registered names; the train room
turns it into a ConfigError naming the config key. The trainer picks the advantage estimator by
`algo.name`, the KL terms by `ppo.kl.estimator` (in the reward) and `algo.kl_loss` (as a loss), so
an estimator is added with one function, one registration and one test, without editing the
trainer: inside the package next to the others (algo/estimators.py), or in a user's module named
in the config as `algo.name: package.module:function` (every rank imports it; docs/algorithms.md).
Every built-in entry has a numbered item under "The registry" in docs/algorithms.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Optional, TypeVar

from torch import Tensor

T = TypeVar("T")


class UnknownName(LookupError):
    """A name no entry of the registry has; its message is one line listing the registered names."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Named entries of one kind (`kind` names it in messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, tuple[T, Callable]] = {}  # name -> (entry, its function)

    def add(self, name: str, entry: T, fn: Callable) -> T:
        """Register `entry` (whose function is `fn`) under `name`; returns it."""
        old = self._entries.get(name)
        if old is not None and old[1] is not fn:
            where = f"{getattr(old[1], '__module__', '?')}:{getattr(old[1], '__qualname__', old[1])}"
            raise ValueError(f"{self.kind} '{name}' is registered already ({where})")
        self._entries[name] = (entry, fn)
        return entry

    def get(self, name: str) -> T:
        """The entry registered under `name`; UnknownName listing the registered ones otherwise."""
        if name not in self._entries:
            raise UnknownName(f"unknown {self.kind} '{name}'; registered: {', '.join(self.names())}")
        return self._entries[name][0]

    def find(self, fn: Callable) -> Optional[T]:
        """The entry whose function is `fn` (registered under any name), or None."""
        return next((e for e, f in self._entries.values() if f is fn), None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


@dataclass(frozen=True)
class AdvantageInputs:
    """What an advantage estimator is given: the whole step batch (B samples, T response columns)."""

    rewards: Tensor
    """(B, T) per-token rewards: -beta * KL on every valid token (algo.kl_reward) + the score on the last."""
    mask: Tensor
    """(B, T) response mask (1 on real response tokens, right-padded)."""
    scores: Tensor
    """(B,) sequence scores, the scorer's reward before any KL."""
    groups: Tensor
    """(B,) integer group keys: the prompt index of each sample (a group = one prompt's samples of the step)."""
    values: Optional[Tensor] = None
    """(B, T) the value model's old values; set only for an estimator registered with critic=True."""
    gamma: float = 1.0
    """Discount (ppo.gamma)."""
    lam: float = 0.95
    """GAE lambda (ppo.lam)."""
    whiten: bool = True
    """Whiten the advantages over the batch (ppo.whiten_advantages; ppo only)."""
    group_std: bool = True
    """Divide by the group's std (algo.group_std; grpo only)."""


AdvantageFn = Callable[[AdvantageInputs], "tuple[Tensor, Optional[Tensor]]"]


@dataclass(frozen=True)
class AdvantageEstimator:
    """A registered advantage estimator: `fn(inputs) -> (advantages (B, T), returns (B, T) or None)`,
    both exactly 0 at masked-out positions; returns are the value targets when `critic`."""

    name: str
    fn: AdvantageFn
    critic: bool = False
    """It needs a value model: the trainer builds, trains, checkpoints one and passes its old values."""
    groups: bool = False
    """A baseline from the prompt's group: uniform groups are counted (algo/uniform_groups) and may be
    left out of the loss (algo.drop_uniform_groups)."""


ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("advantage estimator")
POLICY_LOSSES: Registry[Callable] = Registry("policy loss")
KL_TERMS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("KL estimator")


def register_advantage(name: str, critic: bool = False, groups: bool = False) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: register an advantage estimator under `name` (see AdvantageEstimator); returns the function."""

    def deco(fn: AdvantageFn) -> AdvantageFn:
        ADVANTAGE_ESTIMATORS.add(name, AdvantageEstimator(name, fn, critic, groups), fn)
        return fn

    return deco


def register_policy_loss(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register a policy loss (the contract of algo/losses.policy_loss) under `name`."""

    def deco(fn: Callable) -> Callable:
        POLICY_LOSSES.add(name, fn, fn)
        return fn

    return deco


def register_kl(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register a per-token KL estimator `(logp (B, T), ref_logp (B, T)) -> (B, T)` under `name`."""

    def deco(fn: Callable) -> Callable:
        KL_TERMS.add(name, fn, fn)
        return fn

    return deco
