"""Fault injection for the failure tests: HPC_RLHF_FAULT="ROLE:N" makes the rank(s) of ROLE
(generate, score or train) raise at their N-th unit of work (shard or step, counted from 1)."""

from __future__ import annotations

import os

_counts: dict[str, int] = {}


def maybe_fail(role: str) -> None:
    spec = os.environ.get("HPC_RLHF_FAULT")
    if not spec:
        return
    want_role, _, n = spec.partition(":")
    if want_role != role:
        return
    _counts[role] = _counts.get(role, 0) + 1
    if _counts[role] == int(n or 1):
        raise RuntimeError(f"injected fault (HPC_RLHF_FAULT={spec})")
