"""Sample filters of the archive API: policy versions, steps, prompts and reward ranges.

    Filters(versions=(10, 20), prompts={3, 7}, rewards=(0.5, None))   # ranges inclusive, None = open

A filter prunes whole shards from their metadata first (every sample of a shard shares its version and
step), then masks the samples of the shards it reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from hpc_rlhf.errors import UserError

VersionSel = Union[None, int, tuple[Optional[int], Optional[int]]]
PromptSel = Union[None, int, Iterable[int]]
RangeSel = Optional[tuple[Optional[float], Optional[float]]]


@dataclass
class Filters:
    """Sample filters. Ranges are inclusive; None leaves a side open."""

    versions: VersionSel = None
    prompts: PromptSel = None
    rewards: RangeSel = None
    steps: VersionSel = None

    def __post_init__(self) -> None:
        self.versions = _as_range(self.versions, "versions")
        self.steps = _as_range(self.steps, "steps")
        if self.prompts is not None:
            p = np.atleast_1d(np.asarray(list(self.prompts) if not np.isscalar(self.prompts) else self.prompts))
            self.prompts = np.unique(p.astype(np.int64))
        if self.rewards is not None:
            lo, hi = self.rewards
            self.rewards = (lo, hi)

    @property
    def active(self) -> bool:
        return any(x is not None for x in (self.versions, self.prompts, self.rewards, self.steps))

    def needed_fields(self) -> list[str]:
        out = []
        if self.versions is not None:
            out.append("policy_version")
        if self.steps is not None:
            out.append("step")
        if self.prompts is not None:
            out.append("prompt_index")
        if self.rewards is not None:
            out.append("reward")
        return out

    def shard_may_match(self, attrs: dict) -> bool:
        """Prune a whole shard from its attributes (every sample of a shard shares version and step)."""
        for sel, key in ((self.versions, "policy_version"), (self.steps, "step")):
            if sel is not None and key in attrs:
                lo, hi = sel
                v = int(attrs[key])
                if (lo is not None and v < lo) or (hi is not None and v > hi):
                    return False
        return True

    def mask(self, cols: dict[str, np.ndarray], n: int) -> Optional[np.ndarray]:
        if not self.active:
            return None
        m = np.ones(n, dtype=bool)
        for sel, key in ((self.versions, "policy_version"), (self.steps, "step")):
            if sel is not None:
                lo, hi = sel
                if lo is not None:
                    m &= cols[key] >= lo
                if hi is not None:
                    m &= cols[key] <= hi
        if self.prompts is not None:
            m &= np.isin(cols["prompt_index"], self.prompts)
        if self.rewards is not None:
            lo, hi = self.rewards
            r = cols["reward"]
            m &= ~np.isnan(r)
            if lo is not None:
                m &= r >= lo
            if hi is not None:
                m &= r <= hi
        return m


def _as_range(sel: VersionSel, what: str) -> Optional[tuple[Optional[int], Optional[int]]]:
    if sel is None:
        return None
    if isinstance(sel, (int, np.integer)):
        return (int(sel), int(sel))
    try:
        lo, hi = sel
    except (TypeError, ValueError):
        raise UserError(f"{what} filter must be an int or a (low, high) pair, got {sel!r}") from None
    return (None if lo is None else int(lo), None if hi is None else int(hi))
