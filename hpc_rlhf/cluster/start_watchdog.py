"""A deadline for a rank's MPI start-up, which the run's own failure detection cannot see yet.

    dog = StartWatchdog(timeout_s, rank_hint)   # before `from mpi4py import MPI`
    from mpi4py import MPI                      # MPI_Init: a PMI exchange with every peer
    ...                                         # the first collectives, until the heartbeats run
    dog.done()                                  # disarm (idempotent)

Why: a task that dies inside MPI_Init (a transport assertion, a corrupt address from the process
manager) leaves its peers blocked in MPI_Init's PMI fence. No heartbeat runs yet (cluster/heartbeat.py starts
after the first collectives) and the Slurm step keeps `--kill-on-bad-exit=0` so rank 0 can requeue
(launch/slurm_job.py): without a deadline the job would hang until its time limit.

How: a small watchdog *process* (not a thread: MPI_Init holds the GIL) waits on a pipe. `done()` closes
the pipe and the watchdog leaves; so does the task's death (the pipe closes with it). If the deadline passes
first, the watchdog prints one line naming the host and the task, and SIGKILLs the task. Every task has its
own watchdog, so every task of a start-up that cannot finish ends, and the job with them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

_WATCH = r"""
import os, select, signal, sys
timeout, pid, who = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ready, _, _ = select.select([0], [], [], timeout)
if not ready:
    sys.stderr.write(
        f"error: {who} did not finish MPI start-up in {timeout:g} s: a peer task failed to start (see its "
        "error above) or the MPI transport is blocked; raise runtime.start_timeout_s if start-up is just slow\n")
    sys.stderr.flush()
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


def _who() -> str:
    task = os.environ.get("SLURM_PROCID") or os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK")
    return f"task {task if task is not None else '?'} (pid {os.getpid()}) on host {socket.gethostname()}"


class StartWatchdog:
    """SIGKILLs this process unless `done()` is called within `timeout_s` seconds (<= 0: no deadline)."""

    def __init__(self, timeout_s: float) -> None:
        self._proc: subprocess.Popen | None = None
        if timeout_s > 0:
            self._proc = subprocess.Popen(
                [sys.executable, "-S", "-c", _WATCH, str(timeout_s), str(os.getpid()), _who()],
                stdin=subprocess.PIPE,
                close_fds=True,
            )

    def done(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()  # EOF: the watchdog leaves
            self._proc.wait()
            self._proc = None
