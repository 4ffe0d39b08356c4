"""A stop signal that reaches a Slurm task after the worker returned, even while the interpreter
exits, must not kill it: a finished run would otherwise end as a FAILED job (srun: signal 12)."""

from __future__ import annotations

import subprocess
import sys

EXIT_HOOKS = r"""
import atexit, os, signal
from hpc_rlhf.launch.slurm_job import _EarlySignals
_EarlySignals().install().stop()  # the worker returned
atexit._run_exitfuncs()  # what the interpreter runs first when it exits
assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
os.kill(os.getpid(), signal.SIGUSR2)
os.kill(os.getpid(), signal.SIGTERM)
print("alive")
"""

# USR2 and TERM every few ms from outside, until this process is gone: some land while it exits
SIGNALLED_EXIT = r"""
import os, subprocess, sys, time
from hpc_rlhf.launch.slurm_job import _EarlySignals
_EarlySignals().install().stop()
loop = f"while kill -USR2 {os.getpid()} 2>/dev/null && kill -TERM {os.getpid()} 2>/dev/null; do sleep 0.002; done"
subprocess.Popen(["sh", "-c", loop], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.2)
sys.exit(0)
"""


def test_after_the_exit_hooks_stop_signals_are_ignored():
    p = subprocess.run([sys.executable, "-c", EXIT_HOOKS], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "alive", (p.returncode, p.stderr[-2000:])


def test_a_task_signalled_while_it_exits_exits_cleanly():
    for _ in range(5):
        p = subprocess.run([sys.executable, "-c", SIGNALLED_EXIT], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, (p.returncode, p.stderr[-500:])
        assert "got SIGUSR2 after the worker's handlers" in p.stderr
