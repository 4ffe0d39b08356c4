"""Check every shard of an archive: schema, checksums (every dataset is read in full), shapes, offsets.

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
from hpc_rlhf.rollout.schema import BY_NAME, SCHEMA_VERSION, fields_for


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


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def check_file(path: str) -> tuple[str, str]:
    """('ok' | 'damaged' | 'partial' | 'foreign', reason) for one shard file."""
    try:
        f = h5py.File(path, "r", locking=False)
    except (OSError, ValueError) as e:
        return "damaged", f"not a readable HDF5 file ({_first_line(e)})"
    with f:
        try:
            attrs = dict(f.attrs)
        except (OSError, KeyError, ValueError) as e:
            return "damaged", f"attributes unreadable ({_first_line(e)})"
        ver = attrs.get("schema_version")
        if ver is None:
            return "foreign", "no schema_version attribute: not a rollout shard"
        if int(ver) != SCHEMA_VERSION:
            return "foreign", f"schema version {ver}, this reader knows {SCHEMA_VERSION}"
        kind = str(attrs.get("kind"))
        if kind not in ("generated", "scored"):
            return "partial", f"attribute kind={kind!r}, expected 'generated' or 'scored'"
        if "num_samples" not in attrs:
            return "partial", "attribute num_samples missing"
        n = int(attrs["num_samples"])
        want = [fl.name for fl in fields_for(kind)]
        missing = [name for name in want if name not in f]
        data: dict[str, np.ndarray] = {}
        for name in want:  # read every dataset in full: fletcher32 verifies each chunk
            if name in missing:
                continue
            try:
                data[name] = f[name][()]
            except (OSError, KeyError, ValueError, RuntimeError) as e:
                return "damaged", f"dataset {name} unreadable ({_first_line(e)})"
        for name in f:  # datasets beyond the schema are read too (checksums), not required
            if name not in data and isinstance(f[name], h5py.Dataset):
                try:
                    f[name][()]
                except (OSError, ValueError, RuntimeError) as e:
                    return "damaged", f"dataset {name} unreadable ({_first_line(e)})"
    if missing:
        return "partial", f"{kind} shard misses field(s) {', '.join(missing)}"
    bad = _consistency(data, n)
    if bad:
        return "partial", bad
    return "ok", ""


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
