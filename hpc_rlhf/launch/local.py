"""Start a prepared run's ranks locally and watch them: `mpiexec -n WORLD python -m hpc_rlhf.launch.worker`.

    cfg, run_dir = prepare_run(cfg)     # hpc_rlhf.launch.prepare: resume check, tokenizer, config.yaml
    code = launch_local(cfg, run_dir)   # mpiexec in its own session; Ctrl-C/SIGTERM/SIGUSR2 -> USR2 to the ranks

Stopping. A first Ctrl-C (or SIGTERM/SIGUSR2 to `hpc-rlhf`) asks the ranks to checkpoint at the next
step boundary and exit 75; a second one kills them. The signal goes to the rank processes themselves,
not to mpiexec: MPICH's hydra (5.0.2, measured) dies of SIGUSR2 (no handler; its proxy then kills the
ranks), forwards SIGTERM and SIGINT, and starts every rank in a session of its own, so a signal to
mpiexec's process group reaches no rank. The launcher finds the ranks among mpiexec's descendants
(/proc) and signals each once its handler is installed (SigCgt); where it finds none it sends SIGTERM
to mpiexec, which hydra passes on to the ranks.

A rank that dies. hydra ends the other ranks at once when one dies of a signal, but the pid it then
reports is not reliably the one that died first (measured: it named another rank). So hydra is run with
`-disable-auto-cleanup` and the launcher watches the ranks itself (pidfd): each rank writes
RUN_DIR/.ranks/rank_R.json (pid, host, role) at start and rank_R.exit just before it leaves; a rank
that vanishes without an exit note died. The launcher prints `error: rank R (ROLE #i, pid P on HOST)
died without a word (killed by a signal? out of memory?)`, kills the other ranks and mpiexec, and
returns non-zero within a second. A rank that fails with an error names itself and aborts the world.
A rank that stops (SIGSTOP) is named by the others' heartbeats (cluster/heartbeat.py), which abort the world.

The launcher that dies. mpiexec is started with PR_SET_PDEATHSIG=SIGKILL and every rank watches the
launcher's pidfd (launch/orphans.py): a SIGKILL of `hpc-rlhf` leaves no process of the run behind.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

from hpc_rlhf.cluster.ranks import clear_rank_notes, rank_info
from hpc_rlhf.config import Config
from hpc_rlhf.errors import UserError
from hpc_rlhf.launch.orphans import die_with_parent, launcher_env
from hpc_rlhf.launch.site_mpi import mpiexec_args


def is_hydra(exe: str) -> bool:
    """Whether `exe` is MPICH's hydra mpiexec (which takes -disable-auto-cleanup)."""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "HYDRA" in out


def mpiexec_command(cfg: Config, run_dir: str, watched: bool = False) -> list[str]:
    """The mpiexec command line; watched=True: the launcher watches the ranks itself (hydra's own
    clean-up on a dead rank is turned off; see the module doc)."""
    exe = shutil.which(cfg.runtime.mpiexec)
    if exe is None:
        raise UserError(
            f"runtime.mpiexec '{cfg.runtime.mpiexec}' not found on PATH; `pip install mpich` or point it at your site MPI"
        )
    world = cfg.world_size
    extra = ["-disable-auto-cleanup"] if watched else mpiexec_args(exe)  # Open MPI: oversubscribe, root
    return [exe, *extra, "-n", str(world), sys.executable, "-m", "hpc_rlhf.launch.worker", run_dir]


def launch_local(cfg: Config, run_dir: str) -> int:
    """Run all ranks under mpiexec; return the job's exit status (75 = checkpointed on a stop signal)."""
    exe = shutil.which(cfg.runtime.mpiexec)
    watched = bool(exe) and hasattr(os, "pidfd_open") and os.path.isdir("/proc") and is_hydra(exe)
    cmd = mpiexec_command(cfg, run_dir, watched)
    env = dict(os.environ, PYTHONUNBUFFERED="1", **launcher_env())  # the ranks watch this process
    clear_rank_notes(run_dir)  # notes of an earlier attempt
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=die_with_parent)
    world = cfg.world_size
    stopper = _Stopper(proc, world)
    watcher = _Watcher(proc, run_dir, world) if watched else None
    hits = {"n": 0}

    def forward(num, frame):
        hits["n"] += 1
        if hits["n"] == 1:
            print(
                f"\n{signal.Signals(num).name}: asking the ranks to checkpoint and stop (again to kill)",
                file=sys.stderr,
            )
            stopper.start()
        else:
            kill_job(proc)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)}
    try:
        code = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if watcher is not None:
        watcher.join()
        remove_segments(watcher.segments, timeout=2.0)  # what ranks killed or aborted leave in RAM
        if watcher.verdict:
            print(f"error: {watcher.verdict}", file=sys.stderr, flush=True)
            return code if code > 0 else 1
        if watcher.agreed is not None:
            print(
                f"warning: every rank had finished (exit {watcher.agreed}) but some did not leave within "
                f"{watcher.linger_s:.0f} s (stuck in MPI_Finalize?); the launcher ended them",
                file=sys.stderr,
                flush=True,
            )
            return watcher.agreed
    return code if code >= 0 else 128 - code


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _is_worker(pid: int) -> bool:
    """Whether `pid` runs `python -m hpc_rlhf.launch.worker ...` (argv exactly so: mpiexec's own command
    line, and the fork of it that becomes hydra's proxy, name the module too, further along)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return argv[1:3] == [b"-m", b"hpc_rlhf.launch.worker"]


def rank_processes(root_pid: int) -> list[int]:
    """Live rank processes under `root_pid` (mpiexec): workers, not descending into them (a process a
    rank forks is not a rank)."""
    if not os.path.isdir("/proc"):
        return []
    kids, out, todo = _children(), [], [root_pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if _is_worker(c):
                out.append(c)
            else:
                todo.append(c)
    return out


def shm_segments(pids: list[int]) -> set[str]:
    """The MPICH shared-memory segments (/dev/shm/mpich_shm_*) that processes `pids` map."""
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    i = line.find("/dev/shm/mpich_shm")
                    if i >= 0:
                        out.add(line[i:].strip().removesuffix(" (deleted)"))
        except OSError:
            pass
    return out


def remove_segments(paths: set[str], timeout: float = 10.0) -> None:
    """Unlink segments once no process maps them any more (a SIGKILLed rank leaves its own behind, in RAM)."""
    end = time.monotonic() + timeout
    left = set(paths)
    while left and time.monotonic() < end:
        mapped = shm_segments([int(n) for n in os.listdir("/proc") if n.isdigit()])
        for p in sorted(left - mapped):
            try:
                os.unlink(p)
            except OSError:
                pass
            left.discard(p)
        if left:
            time.sleep(0.1)


def kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL every rank and mpiexec, then remove the shared-memory segments the ranks leave behind."""
    ranks = rank_processes(proc.pid)
    segments = shm_segments(ranks)
    for pid in ranks:
        _signal(pid, signal.SIGKILL)
    _signal(proc.pid, signal.SIGKILL)
    remove_segments(segments)


def _catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler installed for `sig` (its SigCgt mask in /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except OSError:
        pass
    return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class _Stopper:
    """Delivers the stop request (SIGUSR2) to every rank once its handler is in place."""

    def __init__(self, proc: subprocess.Popen, world: int):
        self.proc, self.world = proc, world
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="hpc_rlhf-stop", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        done: set[int] = set()
        deadline = time.monotonic() + 5.0
        while self.proc.poll() is None and len(done) < self.world:
            ranks = rank_processes(self.proc.pid)
            for pid in ranks:
                if pid not in done and _catches(pid, signal.SIGUSR2):
                    _signal(pid, signal.SIGUSR2)
                    done.add(pid)
            if not ranks and not done and time.monotonic() > deadline:  # no /proc, or ranks elsewhere
                _signal(self.proc.pid, signal.SIGTERM)  # hydra forwards SIGTERM to the ranks
                return
            time.sleep(0.1)


class _Watcher:
    """Watches the rank processes (pidfds); one that vanishes without an exit note ends the job.

    Also a backstop for a hang after the work is done: when every rank has left its exit note (the
    checkpoint or the final policy is committed by then) but some rank processes are still there
    `linger_s` after the first one left (stuck in MPI_Finalize, say), they are ended and the launcher
    returns the status the ranks agreed on, with a warning."""

    def __init__(self, proc: subprocess.Popen, run_dir: str, world: int, linger_s: float = 30.0):
        self.proc, self.run_dir, self.world, self.linger_s = proc, run_dir, world, linger_s
        self.verdict = ""
        self.agreed: int | None = None  # set when lingering ranks were ended after all left exit notes
        self.first_exit: float | None = None
        self.segments: set[str] = set()  # MPICH /dev/shm segments of the ranks (removed if left behind)
        self.thread = threading.Thread(target=self._run, name="hpc_rlhf-watch", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join(timeout=10)

    def _run(self) -> None:
        fds: dict[int, int] = {}  # pidfd -> pid
        seen: set[int] = set()
        poller = select.poll()
        try:
            while self.proc.poll() is None:
                if len(seen) < self.world:
                    for pid in rank_processes(self.proc.pid):
                        if pid not in seen:
                            try:
                                fd = os.pidfd_open(pid)
                            except OSError:
                                continue
                            seen.add(pid)
                            fds[fd] = pid
                            poller.register(fd, select.POLLIN)
                if not self.segments and seen:
                    self.segments = shm_segments(list(fds.values()))
                events = poller.poll(100 if len(seen) < self.world else 500)
                gone = []
                for fd, _ in events:
                    gone.append(fds.pop(fd))
                    poller.unregister(fd)
                    os.close(fd)
                if gone and self._judge(gone):
                    kill_job(self.proc)
                    return
                if gone and self.first_exit is None:
                    self.first_exit = time.monotonic()
                if self.first_exit is not None and time.monotonic() - self.first_exit > self.linger_s:
                    info = rank_info(self.run_dir)
                    notes = {i.get("exit") for i in info.values()}
                    if len(info) == self.world and len(notes) == 1 and not notes & {None, "failed"}:
                        self.agreed = int(notes.pop())
                        kill_job(self.proc)
                        return
        finally:
            for fd in fds:
                os.close(fd)

    def _judge(self, gone: list[int]) -> bool:
        """True (and a verdict) when a rank in `gone` died without leaving an exit note."""
        info = rank_info(self.run_dir)
        if any(i.get("exit") == "failed" for i in info.values()):
            return False  # a rank failed with an error: it named itself and is aborting the world
        by_pid = {int(i["pid"]): i for i in info.values()}
        dead = [pid for pid in gone if "exit" not in by_pid.get(pid, {})]
        if not dead:
            return False
        names = []
        for pid in dead:
            i = by_pid.get(pid)
            if i is None:
                names.append(f"a rank (pid {pid}, still starting up)")
            else:
                names.append(f"rank {i['rank']} ({i['role']} #{i['index']}, pid {pid} on {i['host']})")
        self.verdict = (
            f"{' and '.join(names)} died without a word (killed by a signal? out of memory?); the launcher "
            f"ended the other ranks. Resume with: hpc-rlhf resume {self.run_dir}"
        )
        return True
