"""The registries of algo/registry.py: every entry is documented (docstring + a numbered item of
docs/algorithms.md), each built-in estimator computes what its plain function does, names are unique."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from algo_helpers import batch, rand

from hpc_rlhf.algo import (
    ADVANTAGE_ESTIMATORS,
    KL_TERMS,
    POLICY_LOSSES,
    AdvantageInputs,
    Registry,
    UnknownName,
    gae,
    grpo_advantages,
    kl_loss_terms,
    masked_whiten,
    reinforce_pp_advantages,
    rloo_advantages,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "algorithms.md"


def _registry_section() -> str:
    return DOC.read_text().split("\n## The registry", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("registry", [ADVANTAGE_ESTIMATORS, POLICY_LOSSES, KL_TERMS], ids=lambda r: r.kind)
def test_every_entry_has_a_docstring_and_a_numbered_item_in_the_docs(registry):
    items = re.findall(r"^\d+\. \*\*(.+?)\*\*", _registry_section(), flags=re.M)
    for name in registry.names():
        entry = registry.get(name)
        fn = getattr(entry, "fn", entry)
        if not fn.__module__.startswith("hpc_rlhf."):
            continue  # a user's registration (the tests register a toy estimator): its docs are the user's
        assert (fn.__doc__ or "").strip(), f"{registry.kind} '{name}' has no docstring"
        assert any(f"`{name}`" in item for item in items), f"{registry.kind} '{name}' has no item in docs/algorithms.md"


def test_built_in_estimators_are_the_plain_functions():
    gen, mask = batch(5, 7, seed=1)
    rewards, values = rand(gen, 5, 7), rand(gen, 5, 7)
    groups = torch.tensor([3, 3, 1, 1, 1])
    scores = rewards.sum(-1)
    x = AdvantageInputs(rewards, mask, scores, groups, values, 0.9, 0.8, True, False)

    def est(name):
        return ADVANTAGE_ESTIMATORS.get(name).fn(x)

    adv, ret = gae(rewards, values, mask, 0.9, 0.8)
    assert all(torch.equal(a, b) for a, b in zip(est("ppo"), (masked_whiten(adv, mask), ret)))
    assert all(torch.equal(a, b) for a, b in zip(est("reinforce_pp"), reinforce_pp_advantages(rewards, mask, 0.9)))
    assert torch.equal(est("grpo")[0], grpo_advantages(rewards.sum(-1), groups, mask, False)) and est("grpo")[1] is None
    assert torch.equal(est("rloo")[0], rloo_advantages(rewards.sum(-1), groups, mask)) and est("rloo")[1] is None
    package = [
        n for n in ADVANTAGE_ESTIMATORS.names() if ADVANTAGE_ESTIMATORS.get(n).fn.__module__.startswith("hpc_rlhf.")
    ]
    assert [n for n in package if ADVANTAGE_ESTIMATORS.get(n).critic] == ["ppo"]  # of the package's own
    for k in ("k1", "k2", "k3"):
        assert torch.equal(KL_TERMS.get(k)(rewards, values), kl_loss_terms(rewards, values, k))


def test_unknown_names_list_the_registered_in_one_line_and_names_are_unique():
    reg: Registry = Registry("widget")
    f = reg.add("a", "entry a", len)
    assert f == "entry a" and reg.add("a", "again", len) == "again"  # the same function: a re-import
    with pytest.raises(ValueError, match="widget 'a' is registered already"):
        reg.add("a", "other", abs)
    reg.add("b", "entry b", abs)
    with pytest.raises(UnknownName) as e:
        reg.get("c")
    assert str(e.value) == "unknown widget 'c'; registered: a, b"
    assert reg.find(abs) == "entry b" and reg.find(print) is None and "a" in reg
