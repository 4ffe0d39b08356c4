"""No orphans: the processes of a local run end when the `hpc-rlhf` launcher dies, however it dies.

    subprocess.Popen(cmd, preexec_fn=die_with_parent, env={**os.environ, **launcher_env()})  # launcher side
    watch_launcher(on_gone)                                                               # in each rank

Two independent guards, because a SIGKILL of the launcher runs none of its code:
- mpiexec gets PR_SET_PDEATHSIG=SIGKILL (Linux): the kernel kills it when the launcher's thread that
  started it dies;
- each rank watches the launcher's pid (a pidfd, HPC_RLHF_LAUNCHER_PID in its environment) on a thread
  and ends itself at once when it goes (hydra's proxies and ranks are re-parented, not killed, when
  mpiexec dies). A rank ends as under SIGKILL: the run directory is left as after any kill, resumable
  from its last committed checkpoint.
Under Slurm the variable is unset and nothing is watched: slurmstepd owns the tasks.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from typing import Optional

ENV = "HPC_RLHF_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1


def launcher_env() -> dict[str, str]:
    """What the launcher adds to its ranks' environment."""
    return {ENV: str(os.getpid())}


def _find_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _find_prctl()  # looked up here, in the parent: the child between fork and exec only calls it


def die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGKILL this child when its parent dies (Linux; a no-op elsewhere)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _end_now(msg: str) -> None:
    print(f"hpc_rlhf: {msg}; this rank ends now (resume with hpc-rlhf resume RUN_DIR)", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def watch_launcher(on_gone: Callable[[str], None] = _end_now) -> Optional[threading.Thread]:
    """Call on_gone(message) as soon as the launcher named in the environment exits (None: nothing to watch)."""
    raw = os.environ.get(ENV)
    if not raw or not hasattr(os, "pidfd_open"):
        return None
    pid = int(raw)
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        on_gone(f"the launcher (pid {pid}) is gone")
        return None
    except OSError:  # pidfd_open unsupported by this kernel: nothing to watch with
        return None

    def wait() -> None:
        select.select([fd], [], [])
        on_gone(f"the launcher (pid {pid}) died")

    t = threading.Thread(target=wait, name="hpc_rlhf-launcher-watch", daemon=True)
    t.start()
    return t
