"""README.md and docs/*.md speak to users about the project: no text about how it is developed, no stale
generated block (tools/render_docs.py), no code link to a line that moved, no command that does not exist."""

from __future__ import annotations

import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import render_docs  # noqa: E402

DOCS = render_docs.documents()

# Development-process text: each pattern names one kind, precise enough not to match the project's own words
# ("rank 1 (score #0, ...)", "a session of its own" for setsid, "the durable-write helpers").
PROCESS_TEXT = {
    "an issue or PR number": r"\b(?:issues?|PRs?|pull requests?|tickets?)\s*#?\d+\b",
    "a bare #number": r"(?<![\w/`&])(?<!generate )(?<!score )(?<!train )#\d+\b",
    "the issue as a source": r"\bthe issue's\b|\b(?:this|the) issue (?:asks|asked|says|said|expected|wanted|lists)\b",
    "development sessions": r"\b(?:this|same|other|another|earlier|later|previous|six|several|one)\s+sessions?\b",
    "helpers' work": r"\bhelpers?(?:'s|')?\s+(?:tests?|benchmarks?|runs?|work|measure\w*)\b|\ba helper\b",
    "who measured or built": r"\b(?:I|we)\s+(?:measured|built|ran|found|fixed|tried|implemented)\b",
    "the development tooling": r"\b(?:integrator|worktree|workplace|device tool|tool call)\b",
}


def _hits(text: str) -> list[tuple[str, int, str]]:
    """(kind, line, text) of every match; a phrase may break across lines."""
    out = []
    for kind, pat in PROCESS_TEXT.items():
        for m in re.finditer(pat, text, re.I if kind != "a bare #number" else 0):
            out.append((kind, text.count("\n", 0, m.start()) + 1, m.group(0)))
    return out


@pytest.mark.parametrize(
    "text, kind",
    [
        ("measured for issue 16 on this machine", "an issue or PR number"),
        ("(issue #14; 2026-11-30)", "an issue or PR number"),
        ("as asked in #17", "a bare #number"),
        ("The issue's 85M parameters", "the issue as a source"),
        ("while six other sessions ran their tests", "development sessions"),
        ("in the same session: 0.486", "development sessions"),
        ("an earlier full run this\nsession gave 1.48x", "development sessions"),
        ("a helper's tests still ran beside it", "helpers' work"),
        ("we measured 1.5x", "who measured or built"),
        ("with this workplace's device tool", "the development tooling"),
    ],
)
def test_process_text_is_caught(text: str, kind: str) -> None:
    assert kind in {k for k, _, _ in _hits(text)}


@pytest.mark.parametrize(
    "text",
    [
        "error: rank 1 (score #0, pid 1234 on node7) died",
        "hydra starts every rank in a session of its own",
        "every path of a run and the durable-write helpers",
        "see [the section](#failures) and `critic_free.py#L103`",
        "a known issue of Open MPI 4: set OMPI_MCA_rmaps_base_oversubscribe=1",
    ],
)
def test_project_text_is_not_caught(text: str) -> None:
    assert _hits(text) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: os.path.relpath(p, REPO))
def test_docs_carry_no_development_process_text(path: str) -> None:
    hits = _hits(open(path).read())
    assert not hits, "\n".join(f"{os.path.relpath(path, REPO)}:{n}: {kind}: {s!r}" for kind, n, s in hits)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: os.path.relpath(p, REPO))
def test_generated_blocks_are_fresh(path: str) -> None:
    text = open(path).read()
    assert render_docs.render(text) == text, f"{path} is stale: run python tools/render_docs.py"


def test_stale_block_is_found_and_rerendered() -> None:
    stale = "schema version <!-- BEGIN schema.version -->2<!-- END schema.version -->\n"
    stale += "<!-- BEGIN config.keys layout -->\n| old |\n<!-- END config.keys layout -->\n"
    fresh = render_docs.render(stale)
    assert fresh != stale
    assert "<!-- BEGIN schema.version -->3<!-- END schema.version -->" in fresh  # SCHEMA_VERSION
    assert "| `layout.train` | `1` | yes |" in fresh and "| old |" not in fresh


CODE_LINK = re.compile(r"\[`([^`]+)`\]\(([^)#\s]+\.py)#L(\d+)\)")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: os.path.relpath(p, REPO))
def test_code_links_point_at_their_code(path: str) -> None:
    """[`code`](file.py#LN): line N of the file holds `code` (or defines it)."""
    bad = []
    for m in CODE_LINK.finditer(open(path).read()):
        code, target, n = m.group(1), os.path.normpath(os.path.join(os.path.dirname(path), m.group(2))), int(m.group(3))
        lines = open(target).read().splitlines() if os.path.exists(target) else []
        if n > len(lines) or code not in lines[n - 1]:
            bad.append(f"{m.group(0)}: line {n} of {os.path.relpath(target, REPO)} does not hold it")
    assert not bad, "\n".join(bad)


def _command_uses(text: str) -> list[str]:
    """Every `hpc-rlhf ...` the text shows: in backticks, and as lines of code blocks."""
    uses = re.findall(r"`(hpc-rlhf [^`]*)`", text)
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M):
        uses += [ln.strip() for ln in block.splitlines() if ln.strip().startswith("hpc-rlhf ")]
    return uses


def _bad_command(use: str, parser) -> str | None:
    """Why `use` names a command or flag hpc-rlhf does not have (None when it exists)."""
    import argparse

    words = use.split()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if len(words) < 2 or words[1].startswith("-"):
        flags = [w.split("=")[0] for w in words[1:] if w.startswith("--")]
        return next((f"no option {f}" for f in flags if f not in parser._option_string_actions), None)
    if words[1].isupper():  # a placeholder: `hpc-rlhf COMMAND --help`
        return None
    names = re.split(r"[|/]", words[1])
    unknown = [n for n in names if n not in sub.choices]
    if unknown:
        return f"no command {unknown[0]}"
    for name in names:
        options = sub.choices[name]._option_string_actions
        for w in words[2:]:
            if w.startswith("--") and w.split("=")[0].rstrip(",.;:)") not in options:
                return f"`{name}` has no option {w.split('=')[0]}"
    return None


@pytest.mark.parametrize("path", DOCS, ids=lambda p: os.path.relpath(p, REPO))
def test_docs_name_only_commands_and_flags_that_exist(path: str) -> None:
    from hpc_rlhf.launch.cli import build_parser

    parser = build_parser()
    bad = [f"{use!r}: {why}" for use in _command_uses(open(path).read()) if (why := _bad_command(use, parser))]
    assert not bad, "\n".join(bad)


def test_a_command_that_does_not_exist_is_found() -> None:
    from hpc_rlhf.launch.cli import build_parser

    text = "or `hpc-rlhf submit`'s `resume`, `hpc-rlhf submit --resumes RUN_DIR`, `hpc-rlhf restart R`"
    found = [_bad_command(u, build_parser()) for u in _command_uses(text)]
    assert found == [None, "`submit` has no option --resumes", "no command restart"]
