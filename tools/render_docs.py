"""Re-render the parts of README.md and docs/ that are generated from code declarations, in place.

    python tools/render_docs.py          # rewrites the marked blocks; prints the files it changed

A block is marked `<!-- BEGIN name -->` ... `<!-- END name -->` (on lines of their own around a table, or
inline around a value), or `<!-- BEGIN name ARG -->` ... `<!-- END name ARG -->` for a generator that takes
an argument (`config.keys SECTION`). `name` is one of GENERATORS below. tests/test_docs.py fails when a
block is stale; this script fixes it.
"""

from __future__ import annotations

import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from hpc_rlhf import rundir  # noqa: E402
from hpc_rlhf.config import describe, resume  # noqa: E402
from hpc_rlhf.rollout import schema  # noqa: E402

GENERATORS = {
    "rundir.markdown_table": lambda: rundir.markdown_table(),
    "schema.markdown_table": lambda: schema.markdown_table(),
    "schema.version": lambda: str(schema.SCHEMA_VERSION),
    "config.keys": describe.markdown_table,  # ARG: the section, e.g. `config.keys slurm`
    "config.resume_safe_keys": lambda: resume.markdown_list(),
}
BLOCK = re.compile(r"(<!-- BEGIN ([\w.]+)(?: ([\w.]+))? -->)(\n?)(.*?)(\n?)(<!-- END \2(?: \3)? -->)", re.S)


def documents() -> list[str]:
    """README.md and every docs/*.md: the files whose marked blocks are generated."""
    docs = os.path.join(REPO, "docs")
    return [os.path.join(REPO, "README.md")] + [
        os.path.join(docs, n) for n in sorted(os.listdir(docs)) if n.endswith(".md")
    ]


def render(text: str) -> str:
    """`text` with every marked block regenerated; an unknown generator name raises KeyError."""

    def fill(m: re.Match) -> str:
        fn = GENERATORS[m.group(2)]
        body = fn(m.group(3)) if m.group(3) else fn()
        return m.group(1) + m.group(4) + body + m.group(6) + m.group(7)

    return BLOCK.sub(fill, text)


CODE_LINK = re.compile(r"\[`([^`]+)`\]\(([^)#\s]+\.py)#L(\d+)\)")


def relink(text: str, doc_path: str) -> str:
    """`text` with every [`code`](file.py#LN) pointing at the line of file.py that holds `code`: the same line
    when it still does, else the nearest one that does (a link whose code is gone is left for the test to name)."""

    def fix(m: re.Match) -> str:
        code, n = m.group(1), int(m.group(3))
        target = os.path.normpath(os.path.join(os.path.dirname(doc_path), m.group(2)))
        if not os.path.exists(target):
            return m.group(0)
        lines = open(target).read().splitlines()
        if n <= len(lines) and code in lines[n - 1]:
            return m.group(0)
        hits = [i + 1 for i, line in enumerate(lines) if code in line]
        if not hits:
            return m.group(0)
        best = min(hits, key=lambda i: abs(i - n))
        return f"[`{code}`]({m.group(2)}#L{best})"

    return CODE_LINK.sub(fix, text)


def main() -> int:
    for path in documents():
        with open(path) as f:
            old = f.read()
        new = relink(render(old), path)
        if new != old:
            with open(path, "w") as f:
                f.write(new)
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
