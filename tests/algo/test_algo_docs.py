"""docs/algorithms.md links each choice to the line of code that makes it; the links must not drift;
each algorithm's section is one numbered list and names the paper it follows.

A line link is written [`CODE`](../hpc_rlhf/PATH.py#LN): its label says what line N holds. A label that
is a bare name (`gae`, `AdaptiveKLController`) names a definition: line N must be its `def`/`class`.
Any other label is a fragment of code that line N must contain (`returns = (adv + v) * m`). So a line
inserted above a linked one, or a renamed function, fails here instead of leaving a link that points at
an unrelated line. Plain file links (no #L) must name an existing file.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from hpc_rlhf.config import AlgoConfig

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "algorithms.md"

LINK = re.compile(r"\[([^\]]*)\]\(\.\./(hpc_rlhf/[\w/]+\.py)(?:#L(\d+))?\)")
NAME = re.compile(r"[A-Za-z_]\w*")


def line_link_problem(label: str, path: str, n: int) -> str | None:
    """Why the link [label](../path#Ln) does not point at what its label names, or None when it does."""
    m = re.fullmatch(r"`([^`]+)`", label)
    if not m:
        return f"[{label}]({path}#L{n}): the label must be `code` that line {n} holds"
    code = m.group(1)
    lines = (ROOT / path).read_text().splitlines()
    if not 1 <= n <= len(lines):
        return f"{path}#L{n} is past the end ({len(lines)} lines)"
    line = lines[n - 1]
    if NAME.fullmatch(code):
        if not re.match(rf"\s*(?:async\s+)?(?:def|class)\s+{code}\b", line):
            return f"{path}#L{n} should define `{code}` but holds: {line.strip()!r}"
    elif code not in line:
        return f"{path}#L{n} should hold `{code}` but holds: {line.strip()!r}"
    return None


def test_ppo_details_line_links_point_at_what_they_name():
    text = DOC.read_text()
    links = LINK.findall(text)
    line_links = [(label, path, int(n)) for label, path, n in links if n]
    assert len(line_links) >= 24  # a floor: the pattern still finds the links
    problems = [p for p in (line_link_problem(*x) for x in line_links) if p]
    assert problems == [], "docs/algorithms.md links drifted:\n" + "\n".join(problems)
    missing = sorted({path for _, path, n in links if not n and not (ROOT / path).is_file()})
    assert missing == [], f"docs/algorithms.md links to missing files: {missing}"
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    numbered = {name: re.findall(r"^(\d+)\. \*\*", body, flags=re.M) for name, body in sections.items()}
    assert numbered.pop("PPO (`algo.name=ppo`, the default)") == [str(i) for i in range(1, 20)]  # all 19
    for name, items in numbered.items():  # every other section: one list numbered from 1
        assert len(items) >= 3 and items == [str(i) for i in range(1, len(items) + 1)], name


@pytest.mark.parametrize(
    "section, cites",
    [
        ("GRPO (`algo.name=grpo`)", ["arXiv:2402.03300", "arXiv:2503.20783", "TRL", "veRL"]),
        ("RLOO (`algo.name=rloo`)", ["arXiv:2402.14740", "TRL", "OpenRLHF"]),
        ("REINFORCE++ (`algo.name=reinforce_pp`)", ["arXiv:2501.03262", "OpenRLHF"]),
    ],
)
def test_each_critic_free_algorithm_cites_its_paper_and_implementations(section, cites):
    text = DOC.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    assert [c for c in cites if c not in body] == []
    for key in re.findall(r"`(algo\.\w+)=", body):  # every algo.* key the doc names is a config key
        assert key.split(".")[1] in {f.name for f in dataclasses.fields(AlgoConfig)}, key


def test_a_drifted_link_is_caught():
    """The checker itself: right links pass, a shifted line or a wrong name does not."""
    kl = "hpc_rlhf/algo/kl.py"
    n = next(i for i, x in enumerate((ROOT / kl).read_text().splitlines(), 1) if x.startswith("def token_rewards"))
    assert line_link_problem("`token_rewards`", kl, n) is None
    assert "should define `token_rewards`" in line_link_problem("`token_rewards`", kl, n + 1)
    assert "should define `kl_penalty`" in line_link_problem("`kl_penalty`", kl, n)
    assert "should hold" in line_link_problem("`-beta * kl`", kl, n)
    assert "the label must be `code`" in line_link_problem("kl.py#L1", kl, 1)
    assert "past the end" in line_link_problem("`x`", kl, 10**6)
