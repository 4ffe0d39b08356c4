"""Find the rollout shards of an archive: a run directory, a bare folder of *.h5 shards, or one file.

    refs, files, temporary, root = discover("runs/demo")   # RUN_DIR/rollouts/step_*/{gen,scored}_*.h5

Shards named by the run-directory contract (hpc_rlhf/rundir.py) are identified by their names; any other
*.h5 file by its metadata. A generated and a scored shard of the same (folder, step, shard) pair up into
one ShardRef (the scored one is read; the generated one is what `verify` compares it with).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from hpc_rlhf.errors import ShardError, UserError
from hpc_rlhf.rollout.shard import NOT_A_SHARD, read_attrs
from hpc_rlhf.rundir import RunDir, is_temporary, parse_shard_name, parse_step_name


@dataclass(frozen=True)
class ShardRef:
    """One (step, shard) of the archive: its preferred file plus the generated twin, when there is one."""

    step: int
    shard: int
    path: str  # the scored shard when there is one, else the generated one
    kind: str  # kind of `path`: 'scored' or 'generated'
    generated_path: Optional[str] = None  # the generated twin of a scored shard (fallback when it is damaged)
    folder: str = ""

    @property
    def scored(self) -> bool:
        return self.kind == "scored"


def _scan(root: str) -> tuple[list[str], list[str]]:
    """All *.h5 files and left-over temporary files under root (sorted)."""
    h5, tmp = [], []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            if is_temporary(f):
                tmp.append(p)
            elif f.endswith(".h5"):
                h5.append(p)
    return h5, tmp


def _identify(path: str) -> tuple[tuple, str, int, int]:
    """(pairing key, kind, step, shard) of a shard file, from its name when it follows the contract."""
    folder, name = os.path.split(path)
    named = parse_shard_name(name)
    if named:
        kind, shard = named
        step = parse_step_name(os.path.basename(folder))
        if step is None:
            try:
                step = int(read_attrs(path).get("step", -1))
            except ShardError:
                step = -1
        return (folder, step, shard), kind, step, shard
    try:
        a = read_attrs(path)
    except ShardError as e:  # some other HDF5 file: not a shard (verify lists it as foreign)
        return (path,), "foreign" if e.reason == NOT_A_SHARD else "unknown", -1, -1
    kind = str(a.get("kind", "unknown"))
    step, shard = int(a.get("step", -1)), int(a.get("shard_index", -1))
    return (folder, step, shard), kind, step, shard


def discover(path: str) -> tuple[list[ShardRef], list[str], list[str], str]:
    """(shards, all .h5 files, left-over temporary files, root searched) for a run dir, folder or one file."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(path):
        key, kind, step, shard = _identify(path)
        refs = [ShardRef(step, shard, path, kind if kind != "unknown" else "scored", None, os.path.dirname(path))]
        return refs, [path], [], os.path.dirname(path)
    if not os.path.isdir(path):
        raise UserError(f"archive '{path}' does not exist; give a run directory or a folder of *.h5 shards")
    rd = RunDir(path)
    is_run = os.path.isdir(rd.rollouts) or os.path.isfile(rd.config)
    root = rd.rollouts if is_run else path
    files, tmp = _scan(root) if os.path.isdir(root) else ([], [])
    groups: dict[tuple, dict[str, tuple[str, int, int]]] = {}
    for p in files:
        key, kind, step, shard = _identify(p)
        groups.setdefault(key, {})[kind] = (p, step, shard)
    refs = []
    for key, by_kind in groups.items():
        folder = key[0] if len(key) == 3 else os.path.dirname(key[0])
        if "scored" in by_kind:
            p, step, shard = by_kind["scored"]
            gen = by_kind.get("generated", (None,))[0]
            refs.append(ShardRef(step, shard, p, "scored", gen, folder))
        elif "generated" in by_kind:
            p, step, shard = by_kind["generated"]
            refs.append(ShardRef(step, shard, p, "generated", None, folder))
        elif "foreign" in by_kind or "eval" in by_kind:  # eval shards: apart (eval_refs), verified as files
            continue
        else:  # unreadable and unnamed: kept so that reading it reports it
            p, step, shard = next(iter(by_kind.values()))
            refs.append(ShardRef(step, shard, p, "scored", None, folder))
    refs.sort(key=lambda r: (r.step, r.folder, r.shard, r.path))
    return refs, files, tmp, root


def eval_refs(files: list[str]) -> list[ShardRef]:
    """The eval shards among an archive's files (kind 'eval', RUN_DIR/rollouts/evals/step_S/eval_J.h5), in
    (step, shard) order: the samples of evaluations, kept apart from the training rollouts."""
    refs = []
    for p in files:
        _key, kind, step, shard = _identify(p)
        if kind == "eval":
            refs.append(ShardRef(step, shard, p, "eval", None, os.path.dirname(p)))
    return sorted(refs, key=lambda r: (r.step, r.shard, r.path))
