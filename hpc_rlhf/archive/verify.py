"""Check every shard of an archive (schema versions 1 and 2): schema, checksums (every dataset is
read in full), shapes, offsets.

    report = verify(Archive.open(run_dir))
    report.ok                       # True when nothing is wrong
    report.problems                 # [(status, path, reason)], status in damaged | partial | foreign | temporary

damaged:   the file cannot be opened or a dataset fails to read (fletcher32 checksum, truncation)
partial:   fields of its kind are missing, or shapes/offsets disagree with num_samples and each other
foreign:   an *.h5 file that is not a rollout shard of a schema version this reader knows
temporary: a left-over `.<name>.tmp-<pid>` from a writer that crashed before its rename
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from hpc_rlhf.archive.store import Archive
from hpc_rlhf.errors import ShardError, first_line
from hpc_rlhf.rollout.schema import BY_NAME, DATASETS
from hpc_rlhf.rollout.shard import read_shard


@dataclass
class VerifyReport:
    checked: int = 0
    good: list[str] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        c: dict[str, int] = {}
        for status, _p, _r in self.problems:
            c[status] = c.get(status, 0) + 1
        return c


def check_file(path: str) -> tuple[str, str]:
    """('ok' | 'damaged' | 'partial' | 'foreign', reason) for one shard file of any readable version:
    every dataset is read in full (fletcher32 verifies each chunk), then shapes, dtypes and offsets."""
    try:
        data, attrs = read_shard(path)
    except ShardError as e:
        return e.status, e.reason
    with h5py.File(path, "r", locking=False) as f:  # datasets beyond the schema: checksums too
        for name in f:
            if name not in data and name not in DATASETS and isinstance(f[name], h5py.Dataset):
                try:
                    f[name][()]
                except (OSError, ValueError, RuntimeError) as e:
                    return "damaged", f"dataset {name} unreadable ({first_line(e)})"
    bad = _consistency(data, int(attrs["num_samples"]))
    return ("partial", bad) if bad else ("ok", "")


def _consistency(data: dict[str, np.ndarray], n: int) -> str:
    for name, arr in data.items():
        fl = BY_NAME[name]
        if arr.dtype != np.dtype(fl.dtype):
            return f"field {name} has dtype {arr.dtype}, schema says {fl.dtype}"
        want = {"N": n, "N+1": n + 1}.get(fl.shape)
        if want is not None and arr.shape != (want,):
            return f"field {name} has shape {arr.shape}, expected ({want},) for num_samples={n}"
    for off, flat, length, per_token in (
        ("prompt_offsets", "prompt_tokens", "prompt_len", ()),
        ("response_offsets", "response_tokens", "response_len", ("gen_logprobs", "ref_logprobs")),
    ):
        o = data[off]
        if o[0] != 0 or np.any(np.diff(o) < 0):
            return f"{off} do not start at 0 and never decrease"
        if int(o[-1]) != len(data[flat]):
            return f"{off} end at {int(o[-1])} but {flat} has {len(data[flat])}"
        if not np.array_equal(np.diff(o), data[length]):
            return f"{length} disagrees with {off}"
        for p in per_token:
            if p in data and len(data[p]) != len(data[flat]):
                return f"{p} has {len(data[p])} values for {len(data[flat])} tokens"
    return ""


def verify(arc: Archive) -> VerifyReport:
    """Check every *.h5 file of the archive (generated and scored) and list left-over temporary files."""
    rep = VerifyReport()
    for path in arc.files:
        status, reason = check_file(path)
        rep.checked += 1
        if status == "ok":
            rep.good.append(path)
        else:
            rep.problems.append((status, path, reason))
    for path in arc.temporary:
        rep.problems.append(("temporary", path, "left-over temporary file of a crashed writer; delete it"))
    return rep


def format_report(rep: VerifyReport, root: str) -> str:
    lines = []
    for status, path, reason in rep.problems:
        rel = os.path.relpath(path, root)
        lines.append(f"{status:9s} {rel}: {reason}")
    if rep.ok:
        lines.append(f"{len(rep.good)} shards OK")
    else:
        c = rep.counts()
        extra = ", ".join(f"{v} {k}" for k, v in sorted(c.items()))
        lines.append(f"{len(rep.good)} shards OK, {extra}")
    return "\n".join(lines)
