"""One owner per run directory: a lease file (RUN_DIR/owner.json) that works on a shared filesystem.

    with owned(run_dir, "train", ttl_s=60):       # refused (UserError naming the owner) when owned
        ...                                       # renewed every ttl/4 s on a thread; released at the end
    lease = acquire(run_dir, "slurm job", ttl_s=60, slurm_job_id=JOB)   # the same, by hand
    check_free(run_dir)                           # `submit`: refuse an owned run dir, take nothing
    owner(run_dir)                                # what `status` and `checkpoints` show, or None

A local command (`train`, `resume`, `demo`) is also refused while a Slurm job of the run dir is queued
or running (RUN_DIR/slurm/jobs.jsonl and squeue): a pending job holds no lease yet.

Creation is `link(2)` of a fully written private file onto the lease name: atomic and exclusive on local
filesystems and on NFS (the classic NFS-safe lock: no flock, no O_EXCL reliance); the link count of the
private file tells a retransmitted NFS link that succeeded from one that failed. Renewals replace the
file with a rename, after checking that the token in it is still ours.

A lease is taken over only when it is provably stale:
- its owner ran on this host and that process is gone (pid not alive, or alive with another start
  time: a reused pid), and no rank process of the run listed in RUN_DIR/.ranks is alive on this host; or
- its owner is a Slurm job that has ended (squeue lists it no more, or sacct gives its final state): at once,
  so a run whose job FAILED can be submitted again right away;
- it expired (no renewal for `ttl_s` by this host's clock: clusters keep clocks in sync with NTP), and,
  when the owner is a Slurm job and `squeue` answers here, that job is no longer active;
- a Slurm job that finds its own job id in the lease (a requeued job) takes it over at once.
The takeover renames the stale file to a private name first (one contender wins the rename) and checks
that what it renamed is what it judged stale, so two resumes cannot both take over.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

from hpc_rlhf.cluster.ranks import proc_start, rank_info
from hpc_rlhf.errors import UserError
from hpc_rlhf.launch.slurm_events import check_no_active_job, job_active, job_ended
from hpc_rlhf.rundir import RunDir, tmp_path, write_atomic


def _alive(pid: int, start: Optional[str]) -> bool:
    """Whether process `pid` (started at `start`, when known) still runs on this host; a zombie does not."""
    if os.path.isdir("/proc"):
        now = proc_start(pid)
        return now is not None and (start is None or now == start)
    try:  # no /proc: ask the kernel
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner(run_dir: str) -> Optional[dict]:
    """The lease's content (plus `age_s`, seconds since its last renewal), or None when unowned."""
    try:
        with open(RunDir(run_dir).owner) as f:
            info = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"unreadable": True, "age_s": float("inf")}
    info["age_s"] = time.time() - float(info.get("renewed_unix", 0))
    return info


def describe(info: dict) -> str:
    """'pid 123 on node7 (hpc-rlhf train, Slurm job 45), renewed 3 s ago' for messages and `status`."""
    if info.get("unreadable"):
        return "an unreadable lease file"
    job = f", Slurm job {info['slurm_job_id']}" if info.get("slurm_job_id") else ""
    return (
        f"pid {info.get('pid')} on {info.get('host')} (hpc-rlhf {info.get('command')}{job}), "
        f"renewed {info['age_s']:.0f} s ago, expires after {info.get('ttl_s', 0):.0f} s without renewal"
    )


def _ranks_alive_here(run_dir: str) -> list[int]:
    """Pids of this attempt's rank processes (RUN_DIR/.ranks) that still run on this host."""
    host = socket.gethostname()
    return [
        int(r["pid"])
        for r in rank_info(run_dir).values()
        if r.get("host") == host and _alive(int(r["pid"]), r.get("pid_start"))
    ]


def stale_reason(run_dir: str, info: dict, my_job: Optional[str]) -> Optional[str]:
    """Why the lease `info` may be taken over, or None while its owner may be alive."""
    if info.get("unreadable"):
        return "the lease file is unreadable"
    if my_job and info.get("slurm_job_id") == my_job:
        return f"it belongs to this Slurm job ({my_job}), requeued"
    if info.get("host") == socket.gethostname():
        if not _alive(int(info["pid"]), info.get("pid_start")):
            ranks = _ranks_alive_here(run_dir)
            if not ranks:
                return f"its owner (pid {info['pid']}) is gone"
            if info["age_s"] <= info.get("ttl_s", 60):
                return None
    job = info.get("slurm_job_id")
    if job:
        ended = job_ended(str(job))
        if ended is not None:  # the job is over, whatever its last renewal: no need to wait for the expiry
            return f"its Slurm job {job} has ended ({ended})"
    if info["age_s"] <= float(info.get("ttl_s", 60)):
        return None
    if job and job_active(str(job)):
        return None
    return f"it expired ({info['age_s']:.0f} s since its last renewal, ttl {info.get('ttl_s')} s)"


@dataclass
class Lease:
    run_dir: str
    token: str
    body: dict
    ttl_s: float
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    @property
    def path(self) -> str:
        return RunDir(self.run_dir).owner

    def still_ours(self) -> bool:
        info = owner(self.run_dir)
        return bool(info) and info.get("token") == self.token

    def renew(self) -> bool:
        """Rewrite the lease with a new renewal time; False (nothing written) when it is no longer ours."""
        if not self.still_ours():
            return False
        self.body["renewed_unix"] = time.time()
        self.body["beat"] = int(self.body.get("beat", 0)) + 1
        write_atomic(self.path, json.dumps(self.body).encode())
        return True

    def start_renewing(self, on_lost: Callable[[str], None]) -> None:
        def loop() -> None:
            while not self._stop.wait(self.ttl_s / 4):
                try:
                    ok = self.renew()
                except OSError as e:  # a filesystem hiccup: try again at the next beat
                    ok, err = True, e
                    print(f"warning: could not renew the lease of {self.run_dir}: {err}", file=sys.stderr, flush=True)
                if not ok:
                    info = owner(self.run_dir)
                    who = describe(info) if info else "nobody"
                    on_lost(f"lost the ownership of run dir {self.run_dir} (now held by {who})")
                    return

        self._thread = threading.Thread(target=loop, name="hpc_rlhf-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.still_ours():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _try_create(path: str, body: dict) -> bool:
    """Exclusive creation of `path` holding `body`: link a private, complete file onto it."""
    private = tmp_path(path) + f"-{body['token'][:8]}"
    with open(private, "w") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(private, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # NFS: the reply of a link that succeeded can be lost; the link count tells
        return os.stat(private).st_nlink == 2
    finally:
        os.unlink(private)


def _take_over(path: str, seen: dict) -> bool:
    """Move the stale lease `seen` out of the way; False when somebody else moved or renewed it."""
    aside = tmp_path(path) + f"-stale-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        with open(aside) as f:
            moved = json.load(f)
    except (OSError, ValueError):
        moved = {}
    if seen.get("unreadable") or (moved.get("token"), moved.get("beat")) == (seen.get("token"), seen.get("beat")):
        os.unlink(aside)
        return True
    try:  # it was renewed between our read and the rename: put it back unless another lease is there
        os.link(aside, path)
    except OSError:
        pass
    os.unlink(aside)
    return False


def acquire(run_dir: str, command: str, ttl_s: float = 60.0, slurm_job_id: Optional[str] = None) -> Lease:
    """Take the lease of `run_dir` for this process, or raise UserError naming its live owner."""
    rd = RunDir(run_dir)
    os.makedirs(rd.root, exist_ok=True)
    token = uuid.uuid4().hex
    now = time.time()
    body = {
        "token": token,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": proc_start(os.getpid()),
        "slurm_job_id": slurm_job_id,
        "command": command,
        "acquired_unix": now,
        "renewed_unix": now,
        "ttl_s": ttl_s,
        "beat": 0,
    }
    for _ in range(20):
        if _try_create(rd.owner, body):
            return Lease(rd.root, token, body, ttl_s)
        info = owner(rd.root)
        if info is None:
            continue  # released between our try and our read
        why = stale_reason(rd.root, info, slurm_job_id)
        if why is None:
            raise UserError(
                f"run dir {rd.root} is in use by {describe(info)}; wait for that run to end or stop it "
                f"(Ctrl-C / kill -USR2 {info.get('pid')}, or hpc-rlhf cancel for a Slurm job), or use another run_dir"
            )
        if _take_over(rd.owner, info):
            print(f"hpc_rlhf: taking over the lease of {rd.root}: {why}", file=sys.stderr, flush=True)
    raise UserError(f"run dir {rd.root}: could not take its lease ({rd.owner} keeps changing); try again")


def check_free(run_dir: str) -> None:
    """UserError (one line, naming the owner) when a live owner holds the lease of `run_dir`."""
    info = owner(run_dir)
    if info is not None and stale_reason(run_dir, info, None) is None:
        raise UserError(f"run dir {run_dir} is in use by {describe(info)}; wait for that run to end, or stop it")


def _end_this_process(msg: str) -> None:
    """A run that lost its run directory to another owner must not write one more byte there."""
    print(f"error: {msg}; ending this run now", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # the ranks follow their launcher (launch/orphans.py)


@contextmanager
def owned(
    run_dir: str, command: str, ttl_s: float, on_lost: Callable[[str], None] = _end_this_process
) -> Iterator[Lease]:
    """Own `run_dir` for a local command: refuse it while a Slurm job of it is queued or running, take
    the lease (or raise), renew it on a thread while the body runs, release it after."""
    check_no_active_job(run_dir)
    lease = acquire(run_dir, command, ttl_s)
    lease.start_renewing(on_lost)
    try:
        yield lease
    finally:
        lease.release()
