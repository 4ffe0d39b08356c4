"""This attempt's rank notes in RUN_DIR/.ranks: who each rank is, and whether it left on purpose.

    register_rank(run_dir, rank, role, index, attempt)   # at start: rank_RRRRR.json {rank, role, index, pid, ...}
    note_exit(run_dir, rank, "0", attempt)               # just before leaving: rank_RRRRR.exit ('0', '75', 'failed')
    note_exit(run_dir, rank, "failed", attempt, "rank 1 (score) failed: ...")   # with the line the rank prints
    rank_info(run_dir)                                   # {rank: {..., "exit": ...}} for launchers, heartbeats, leases
    failure_lines(run_dir)                               # the failed ranks' lines, for the launcher's last word

`attempt` is a token the ranks of one start of the run share (rank 0 draws it and broadcasts it): a
requeued Slurm job finds the notes of its previous attempt in place, and must not take an old exit
note for a rank of this attempt that left.

A rank that vanishes without an exit note died (SIGKILL, the OOM killer, a lost node): the local
launcher's watcher, the heartbeats (cluster/heartbeat.py) and `hpc-rlhf status` tell them apart this way.
"""

from __future__ import annotations

import json
import os
import shutil
import socket

from hpc_rlhf.rundir import RunDir, rank_of_info_name, tmp_path


def proc_start(pid: int) -> str | None:
    """Start time of process `pid` (field 22 of /proc/PID/stat): tells a live pid from a reused one. None
    when there is no such process, or only its corpse (a zombie that nobody reaped yet: it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def clear_rank_notes(run_dir: str) -> None:
    """Remove the notes of an earlier attempt (the launcher, before it starts the ranks)."""
    shutil.rmtree(RunDir(run_dir).ranks, ignore_errors=True)


def register_rank(run_dir: str, rank: int, role: str, index: int, attempt: str = "") -> None:
    rd = RunDir(run_dir)
    os.makedirs(rd.ranks, exist_ok=True)
    pid = os.getpid()
    info = {"rank": rank, "role": role, "index": index, "pid": pid, "pid_start": proc_start(pid)}
    info.update(host=socket.gethostname(), attempt=attempt)
    path = rd.rank_info(rank)
    tmp = tmp_path(path)
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)


def note_exit(run_dir: str, rank: int, what: str, attempt: str = "", line: str = "") -> None:
    """This rank leaves on purpose ('0', '75') or after naming its failure ('failed', with `line`, the one
    line it prints: the launcher repeats it, since a rank's last output can be lost when MPI aborts)."""
    try:
        rd = RunDir(run_dir)
        os.makedirs(rd.ranks, exist_ok=True)
        with open(rd.rank_exit(rank), "w") as f:
            f.write(f"{what} {attempt}".strip() + "\n" + (line.splitlines()[0] + "\n" if line else ""))
    except OSError:
        pass


def read_exit(run_dir: str, rank: int) -> tuple[str, str] | None:
    """(what, attempt) of rank `rank`'s exit note, or None when it has none."""
    try:
        with open(RunDir(run_dir).rank_exit(rank)) as f:
            parts = f.readline().split()
    except OSError:
        return None
    return (parts[0], parts[1] if len(parts) > 1 else "") if parts else None


def failure_lines(run_dir: str) -> list[str]:
    """The line each failed rank of this attempt noted (rank order); [] when none did."""
    out = []
    for rank, info in sorted(rank_info(run_dir).items()):
        if info.get("exit") != "failed" or info.get("exit_attempt") != info.get("attempt"):
            continue
        try:
            with open(RunDir(run_dir).rank_exit(rank)) as f:
                line = f.read().splitlines()[1:2]
        except OSError:
            continue
        out += line
    return out


def rank_info(run_dir: str) -> dict[int, dict]:
    """rank -> {rank, role, index, pid, host, exit?} of this attempt's ranks."""
    rd, out = RunDir(run_dir), {}
    if not os.path.isdir(rd.ranks):
        return out
    for name in os.listdir(rd.ranks):
        if rank_of_info_name(name) is None:
            continue
        try:
            with open(os.path.join(rd.ranks, name)) as f:
                info = json.load(f)
            out[int(info["rank"])] = info
        except (OSError, ValueError, KeyError):
            pass
    for r, info in out.items():
        note = read_exit(run_dir, r)
        if note is not None:
            info["exit"], info["exit_attempt"] = note
    return out
