"""Crash-consistent checkpoints: atomic folders, a commit marker last, a `latest` pointer, keep-last-K.

    save_checkpoint(run_dir, step, files_writer, keep_last=2)   # -> RUN_DIR/checkpoints/step_XXXXXX
    ckpt = find_latest(run_dir)                                 # newest valid one, or None
    list_checkpoints(run_dir)                                   # every step_* folder, validated

A checkpoint is written into `checkpoints/.tmp-step_XXXXXX-PID/`, every file fsynced (side by side,
one filesystem commit), then a `COMMITTED` manifest (sha256 and size of every file) is written and fsynced, the folder renamed into
place, the parent fsynced, and `latest` replaced atomically (tmp + fsync + rename). A folder without a
valid manifest, or whose files do not match it, is never loaded: `find_latest` falls back to the
previous one with a warning (the folders are the truth; `latest` is a pointer for people and scripts).
A failed save (disk full, ...) removes its temporary folder, leaves older checkpoints intact and raises
CheckpointError naming the cause. Folders are deleted by first renaming them to a `.tmp-` name, so a
kill in the middle of a deletion never leaves a half-deleted `step_*` folder behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from hpc_rlhf.errors import CheckpointError, first_line
from hpc_rlhf.rundir import (
    COMMITTED as MARKER,
)
from hpc_rlhf.rundir import (
    LATEST,
    TMP_MARK,
    RunDir,
    fsync_dir,
    parse_step_name,
    remove_path,
    remove_tree,
    step_name,
    sync_paths,
    write_atomic,
)


@dataclass
class CheckpointInfo:
    step: int
    path: str
    created_unix: float
    size_bytes: int
    valid: bool
    problem: str = ""


def ckpt_root(run_dir: str) -> str:
    return RunDir(run_dir).checkpoints


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_failure(e: BaseException, where: str) -> Optional[str]:
    """The I/O cause of a failed write, in words, or None when `e` is not an I/O failure: an OSError
    anywhere in the exception chain (torch.save wraps ENOSPC into 'unexpected pos ...', safetensors
    into SafetensorError), else a disk-full diagnosis from the message or the free space left."""
    seen, cur = set(), e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None:
            return f"{cur.strerror or os.strerror(cur.errno)} (errno {errno.errorcode.get(cur.errno, cur.errno)})"
        cur = cur.__cause__ or cur.__context__
    msg = first_line(e)
    if "No space left" in msg:
        return f"No space left on device ({type(e).__name__}: {msg})"
    try:
        st = os.statvfs(where)
        free = st.f_bavail * st.f_frsize
    except OSError:
        return None
    if free < (1 << 20):
        return f"No space left on device ({free} bytes free; {type(e).__name__}: {msg})"
    return None


def staging_folder(run_dir: str, step: int, pid: Optional[int] = None) -> str:
    """The temporary folder a checkpoint of `step` is written into by the process `pid` (default:
    this one) that commits it; other train ranks write their files into it first (train.sharding=fsdp)."""
    return os.path.join(ckpt_root(run_dir), f"{TMP_MARK}{step_name(step)}-{pid or os.getpid()}")


def make_staging_folder(run_dir: str, step: int) -> str:
    """Create this process's (empty) staging folder of `step`; returns it."""
    tmp = staging_folder(run_dir, step)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return tmp


def save_checkpoint(
    run_dir: str,
    step: int,
    write_files: Callable[[str], Optional[dict[str, tuple[str, int]]]],
    keep_last: int = 2,
    staged: Optional[dict[str, tuple[str, int]]] = None,
) -> str:
    """Call write_files(tmp_folder) to fill a new checkpoint of `step`, then commit it. Returns its path.
    write_files may return {file name: (sha256, size)} for files it hashed while writing them
    (tensorfile.write_tensors); the others are hashed here. staged: the files other ranks already
    wrote and fsynced into make_staging_folder(run_dir, step), with their (sha256, size); None: the
    folder is made here.

    Raises CheckpointError (naming the cause, e.g. no space left) after removing the partial folder."""
    root = ckpt_root(run_dir)
    os.makedirs(root, exist_ok=True)
    name = step_name(step)
    final = RunDir(run_dir).checkpoint(step)
    tmp = staging_folder(run_dir, step)
    committed, failure = False, None
    try:
        if staged is None:
            make_staging_folder(run_dir, step)
        _write_manifest(tmp, step, {**(staged or {}), **(write_files(tmp) or {})})
        remove_tree(final)  # a re-save of the same step (after a resume or a fall-back): replace it
        os.replace(tmp, final)
        fsync_dir(root)
        committed = True
        write_atomic(RunDir(run_dir).latest, f"{name}\n".encode())
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        cause = describe_failure(e, root)
        if cause is None:  # not an I/O failure (a bug): keep its traceback
            raise
        if committed:
            failure = (
                f"checkpoint of step {step} in '{root}' was committed but the '{LATEST}' pointer could not be "
                f"updated: {cause}"
            )
        else:
            failure = (
                f"checkpoint of step {step} in '{root}' failed: {cause}; nothing of it was kept and the previous "
                "checkpoint is intact"
            )
    if failure is not None:
        # raised outside the except block, without the I/O error's traceback: its frames hold writers
        # (torch.save's) whose open files would keep the space of the deleted folder in use
        raise CheckpointError(failure)
    prune(run_dir, keep_last)
    return final


def _write_manifest(tmp: str, step: int, known: dict[str, tuple[str, int]]) -> None:
    """fsync every file of `tmp` (at once, and the folder), then write and fsync the COMMITTED manifest:
    sha256 and size of each file (`known`: those hashed while written)."""
    manifest = {"step": step, "created_unix": time.time(), "files": {}}
    names = sorted(os.listdir(tmp))
    sync_paths([os.path.join(tmp, n) for n in names])  # every file at once (and the folder)
    for fname in names:
        p = os.path.join(tmp, fname)
        sha, size = known.get(fname) or (_sha256(p), os.path.getsize(p))
        manifest["files"][fname] = {"sha256": sha, "size": size}
    with open(os.path.join(tmp, MARKER), "w") as f:
        json.dump(manifest, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)


def validate(path: str) -> Optional[str]:
    """None if the checkpoint folder is committed and intact, else what is wrong."""
    marker = os.path.join(path, MARKER)
    if not os.path.isfile(marker):
        return "no COMMITTED marker (an interrupted save)"
    try:
        with open(marker) as f:
            manifest = json.load(f)
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable COMMITTED marker"
    if not files:
        return "COMMITTED marker lists no files"
    for name, meta in files.items():
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
        step = parse_step_name(name)
        if step is not None and os.path.isdir(os.path.join(root, name)):
            out.append((step, os.path.join(root, name)))
    return sorted(out)


def _created(path: str) -> float:
    try:
        with open(os.path.join(path, MARKER)) as f:
            return float(json.load(f)["created_unix"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def list_checkpoints(run_dir: str, check: bool = True) -> list[CheckpointInfo]:
    """Every checkpoint folder, oldest first, with its validity (check=False: only the marker's presence)."""
    return [_info(step, path, check) for step, path in _steps(run_dir)]


def _info(step: int, path: str, check: bool = True) -> CheckpointInfo:
    if check:
        problem = validate(path)
    else:
        problem = None if os.path.isfile(os.path.join(path, MARKER)) else "no COMMITTED marker"
    size = sum(e.stat().st_size for e in os.scandir(path) if e.is_file())
    return CheckpointInfo(step, path, _created(path), size, problem is None, problem or "")


def find_latest(run_dir: str, quiet: bool = False) -> Optional[CheckpointInfo]:
    """The newest valid checkpoint; damaged or uncommitted newer ones are skipped with a warning.
    Validates newest first and stops at the first valid one: older checkpoints are not hashed."""
    for step, path in reversed(_steps(run_dir)):
        info = _info(step, path)
        if info.valid:
            return info
        if not quiet:
            print(
                f"warning: checkpoint '{info.path}' is not usable ({info.problem}); falling back to an older one",
                file=sys.stderr,
            )
    return None


def prune(run_dir: str, keep_last: int) -> None:
    """Keep the newest `keep_last` committed checkpoints; remove older ones and stale temporaries."""
    root = ckpt_root(run_dir)
    steps = _steps(run_dir)
    committed = [(s, p) for s, p in steps if os.path.exists(os.path.join(p, MARKER))]
    for _, path in committed[:-keep_last]:
        remove_tree(path, background=True)
    oldest_kept = committed[-keep_last][0] if len(committed) >= keep_last else None
    for s, path in steps:  # marker-less folders cannot be loaded; drop those older than what is kept
        if oldest_kept is not None and s < oldest_kept and not os.path.exists(os.path.join(path, MARKER)):
            remove_tree(path)
    own = f"-{os.getpid()}"
    for name in os.listdir(root):
        if name.startswith(TMP_MARK) and not name.endswith(own):
            remove_path(os.path.join(root, name))


def load_json(path: str, name: str) -> dict:
    try:
        with open(os.path.join(path, name)) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint '{path}': cannot read {name} ({e})") from None
