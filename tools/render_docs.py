"""Re-render the tables that docs/ show from code declarations, in place.

    python tools/render_docs.py          # rewrites the marked blocks; prints the files it changed

A block is marked `<!-- BEGIN name -->` ... `<!-- END name -->`; `name` is one of TABLES below. The tests
(tests/test_rundir.py, tests/rollout/test_shard.py) fail when a doc is stale; this script fixes it.
"""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hpc_rlhf import rundir  # noqa: E402
from hpc_rlhf.config import resume  # noqa: E402
from hpc_rlhf.rollout import schema  # noqa: E402

TABLES = {
    "rundir.markdown_table": rundir.markdown_table,
    "schema.markdown_table": schema.markdown_table,
    "config.resume_safe_keys": resume.markdown_list,
}
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def render(text: str) -> str:
    for name, fn in TABLES.items():
        pat = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n).*?(\n<!-- END {re.escape(name)} -->)", re.S)
        text = pat.sub(lambda m, fn=fn: m.group(1) + fn() + m.group(2), text)
    return text


def main() -> int:
    for name in sorted(os.listdir(DOCS)):
        if name.endswith(".md"):
            path = os.path.join(DOCS, name)
            old = open(path).read()
            new = render(old)
            if new != old:
                with open(path, "w") as f:
                    f.write(new)
                print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
