"""The run-directory contract (hpc_rlhf/rundir.py): names and parsers agree, the docs show the table,
and no other module spells a run-directory name itself."""

from __future__ import annotations

import ast
import os

from hpc_rlhf import rundir
from hpc_rlhf.rundir import (
    RunDir,
    clean_temporaries,
    parse_behaviour_name,
    parse_shard_name,
    parse_step_name,
    parse_weights_name,
    write_atomic,
)
from hpc_rlhf.rundir import tmp_path as tmp_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "hpc_rlhf")

# Names that mean nothing but a run-directory path: flagged wherever they stand as a literal.
DISTINCT = {
    getattr(rundir, n)
    for n in dir(rundir)
    if n.isupper() and isinstance(getattr(rundir, n), str) and n not in ("TMP_MARK",)
}
# Common words that are run-directory names too (a CLI command is called `checkpoints`, a package `wandb`): flagged only
# where they build a path.
AMBIGUOUS = {
    "policy",
    "latest",
    "final",
    "weights",
    "tokenizer",
    "slurm",
    "code",
    "timing",
    "tb",
    "checkpoints",
    "wandb",
}
DISTINCT -= AMBIGUOUS
# Name prefixes of numbered entries (shards, steps, weights, ranks), flagged as a bare literal or as
# the start of an f-string.
PREFIXES = ("step_", "gen_", "scored_", "policy_v", "behaviour_v", "rank_", ".tmp-")


def test_paths_and_parsers_agree(tmp_path_factory):
    rd = RunDir("/r")
    assert rd.shard(3, 1, "scored") == "/r/rollouts/step_000003/scored_0001.h5"
    assert rd.shard(0, 12, "generated") == "/r/rollouts/step_000000/gen_0012.h5"
    for step, shard, kind in ((0, 0, "generated"), (123456, 9999, "scored"), (7, 10000, "generated")):
        p = rd.shard(step, shard, kind)
        assert parse_shard_name(os.path.basename(p)) == (kind, shard)
        assert parse_step_name(os.path.basename(os.path.dirname(p))) == step
    assert parse_weights_name(os.path.basename(rd.weights(42))) == 42
    assert parse_behaviour_name(rundir.behaviour_name(5)) == 5
    assert rundir.parse_rank_state_name(rundir.rank_state_name(3, 12)) == (3, 12)
    assert rundir.parse_rank_state_name("train_rank1_of_2.safetensors.tmp") is None
    assert parse_step_name(os.path.basename(rd.checkpoint(10))) == 10
    for bad in ("gen_x.h5", "scored_0001.h5.tmp", ".scored_0001.h5.tmp-12", "shard_0001.h5", "step_", "latest"):
        assert parse_shard_name(bad) is None and parse_step_name(bad) is None


def test_temporaries_are_swept_and_committed_names_kept(tmp_path):
    rd = RunDir(str(tmp_path))
    keep = rd.shard(0, 0, "scored")
    os.makedirs(os.path.dirname(keep))
    write_atomic(keep, b"x")
    stale = tmp_name(rd.shard(0, 1, "scored"))
    open(stale, "wb").close()
    os.makedirs(os.path.join(rd.checkpoints, ".tmp-step_000002-99"))
    removed = clean_temporaries(rd.root)
    assert sorted(removed) == sorted([stale, os.path.join(rd.checkpoints, ".tmp-step_000002-99")])
    assert os.listdir(os.path.dirname(keep)) == ["scored_0000.h5"]


def test_docs_show_the_run_directory_table():
    for doc in ("run_directory.md", "architecture.md"):
        text = open(os.path.join(REPO, "docs", doc)).read()
        assert rundir.markdown_table() in text, f"docs/{doc} is stale: run python tools/render_docs.py"


def _path_context(node: ast.AST, parents: dict) -> bool:
    parent = parents.get(node)
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div):
        return True
    if isinstance(parent, ast.Call):
        f = parent.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        return name in ("join", "Path", "open", "exists", "isdir", "isfile")
    return False


def literal_names(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every run-directory name spelled in `source`."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            head = str(node.values[0].value)
            if head.startswith(PREFIXES) or head.lstrip(".").startswith(PREFIXES):
                out.append((node.lineno, head))
            continue
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if isinstance(parents.get(node), ast.JoinedStr):
            continue
        v = node.value
        if v in DISTINCT or v in PREFIXES or (v in AMBIGUOUS and _path_context(node, parents)):
            out.append((node.lineno, v))
    return out


def test_the_scan_finds_what_it_must():
    src = 'import os\nos.path.join(d, "config.yaml")\nf"step_{s:06d}"\nPath(r) / "weights"\nx = "policy"\n'
    assert sorted(literal_names(src)) == [(2, "config.yaml"), (3, "step_"), (4, "weights")]


def test_no_run_directory_literal_outside_rundir():
    found = []
    for d, _dirs, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.join(d, name)
            if not name.endswith(".py") or path == rundir.__file__:
                continue
            with open(path) as f:
                source = f.read()
            for line, v in literal_names(source):
                found.append(f"{os.path.relpath(path, REPO)}:{line}: {v!r}")
    assert not found, "run-directory names spelled outside hpc_rlhf/rundir.py (take them from RunDir):\n" + "\n".join(
        found
    )
