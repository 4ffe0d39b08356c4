"""Crash-consistent checkpoints: atomic folders, a commit marker last, a `latest` pointer, keep-last-K.

    save_checkpoint(run_dir, step, files_writer, keep_last=2)   # -> RUN_DIR/checkpoints/step_XXXXXX
    ckpt = find_latest(run_dir)                                 # newest valid one, or None

A checkpoint is written into `checkpoints/.tmp-step_XXXXXX-PID/`, every file fsynced, then a
`COMMITTED` manifest (sha256 and size of every file) is written and fsynced, the folder renamed into
place, the parent fsynced, and `latest` replaced atomically. A folder without a valid manifest, or
whose files do not match it, is never loaded: `find_latest` falls back to the previous one with a
warning. A failed save (disk full, ...) removes its temporary folder and leaves older ones intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from hpc_rlhf.errors import CheckpointError
from hpc_rlhf.rollout.shard import fsync_dir

MARKER = "COMMITTED"


@dataclass
class CheckpointInfo:
    step: int
    path: str
    created_unix: float
    size_bytes: int
    valid: bool
    problem: str = ""


def ckpt_root(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data` atomically (tmp + fsync + rename + fsync dir)."""
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(d)


def save_checkpoint(run_dir: str, step: int, write_files: Callable[[str], None], keep_last: int = 2) -> str:
    """Call write_files(tmp_folder) to fill a new checkpoint of `step`, then commit it. Returns its path.

    Raises CheckpointError (naming the cause, e.g. no space left) after removing the partial folder."""
    root = ckpt_root(run_dir)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"step_{step:06d}")
    tmp = os.path.join(root, f".tmp-step_{step:06d}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        write_files(tmp)
        manifest = {"step": step, "created_unix": time.time(), "files": {}}
        for name in sorted(os.listdir(tmp)):
            p = os.path.join(tmp, name)
            _fsync_file(p)
            manifest["files"][name] = {"sha256": _sha256(p), "size": os.path.getsize(p)}
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump(manifest, f)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        if os.path.exists(final):  # a re-save of the same step (after a resume): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
        write_atomic(os.path.join(root, "latest"), f"step_{step:06d}\n".encode())
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"checkpoint of step {step} in '{root}' failed: {e.strerror or e} ; the previous checkpoint is kept"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune(run_dir, keep_last)
    return final


def validate(path: str) -> Optional[str]:
    """None if the checkpoint folder is committed and intact, else what is wrong."""
    marker = os.path.join(path, MARKER)
    if not os.path.isfile(marker):
        return "no COMMITTED marker (an interrupted save)"
    try:
        with open(marker) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return "unreadable COMMITTED marker"
    for name, meta in manifest.get("files", {}).items():
        p = os.path.join(path, name)
        if not os.path.isfile(p):
            return f"file {name} is missing"
        if os.path.getsize(p) != meta["size"]:
            return f"file {name} has {os.path.getsize(p)} bytes, expected {meta['size']} (truncated?)"
        if _sha256(p) != meta["sha256"]:
            return f"file {name} fails its sha256 check (corrupted)"
    return None


def _steps(run_dir: str) -> list[tuple[int, str]]:
    root = ckpt_root(run_dir)
    if not os.path.isdir(root):
        return []
    out = []
    for name in os.listdir(root):
        if name.startswith("step_") and name[5:].isdigit():
            out.append((int(name[5:]), os.path.join(root, name)))
    return sorted(out)


def list_checkpoints(run_dir: str, check: bool = True) -> list[CheckpointInfo]:
    infos = []
    for step, path in _steps(run_dir):
        problem = validate(path) if check else None
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
        created = os.path.getmtime(os.path.join(path, MARKER)) if os.path.exists(os.path.join(path, MARKER)) else 0.0
        infos.append(CheckpointInfo(step, path, created, size, problem is None, problem or ""))
    return infos


def find_latest(run_dir: str) -> Optional[CheckpointInfo]:
    """The newest valid checkpoint; damaged or uncommitted newer ones are skipped with a warning."""
    for info in reversed(list_checkpoints(run_dir)):
        if info.valid:
            return info
        print(
            f"warning: checkpoint '{info.path}' is not usable ({info.problem}); falling back to an older one",
            file=sys.stderr,
        )
    return None


def prune(run_dir: str, keep_last: int) -> None:
    """Keep the newest `keep_last` committed checkpoints; remove older ones and stale temporaries."""
    steps = [(s, p) for s, p in _steps(run_dir) if os.path.exists(os.path.join(p, MARKER))]
    for _, path in steps[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    root = ckpt_root(run_dir)
    for name in os.listdir(root):
        if name.startswith(".tmp-step_") and not name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def load_json(path: str, name: str) -> dict:
    try:
        with open(os.path.join(path, name)) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint '{path}': cannot read {name} ({e})") from None
