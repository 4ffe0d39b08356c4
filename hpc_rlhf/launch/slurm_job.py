"""What runs inside a Slurm job submitted by `hpc-rlhf submit`: `SlurmTask(RUN_DIR)`, once per Slurm task.

    python -m submitit.core._submit RUN_DIR/slurm   # srun starts this per task; it unpickles SlurmTask and calls it

submitit pickles the SlurmTask at submission (hpc_rlhf.launch.slurm_submit), so this module's path
(`hpc_rlhf.launch.slurm_job.SlurmTask`) is inside every job's pickle: moving or renaming the class breaks
the requeue of jobs submitted before (with slurm.snapshot_code=false; a snapshot keeps its own copy). This
module never imports the submitting side. What SlurmTask.__call__ does, in order:
- Replaces submitit's signal handlers: submitit binds USR2 to "checkpoint the pickled callable and requeue"
  (counting every USR2 as a time-out when timeout_min <= 10) and SIGTERM to a no-op. Our state is never in
  submitit's pickle: it is all in RUN_DIR. A stop signal that arrives before the worker has installed its
  own SIGUSR2/SIGTERM handlers (a flag that the ranks agree on at a step boundary; the worker imports torch
  first, which takes seconds) is noted and re-sent to the process once the worker's handler is in place
  (a watcher thread), because Slurm sends it only once: seen on preemption 12 s after the job started.
- Checks SLURM_NTASKS == layout world size, then initialises MPI and checks MPI size == SLURM_NTASKS (a wrong
  `--mpi` plugin silently gives every task a world of 1; the PyPI MPICH needs pmi2, not pmix).
- Runs the worker in-process, exactly as `python -m hpc_rlhf.launch.worker RUN_DIR` (runpy, sys.argv set),
  and takes its exit status: 0 = run finished; `runtime.requeue_exit_code` (75) = checkpointed after a stop
  signal, requeue me; anything else = failure.
- On 0 the task returns (mpi4py finalises MPI at exit, as under mpiexec; submitit writes its result). On a
  failure with MPI still live the MPI job is aborted, so no rank hangs waiting for a dead peer. The job's end
  is recorded first as an `end` event in RUN_DIR/slurm/jobs.jsonl (exit status; by rank 0 when the run
  finished or failed before the worker started, by each failing task otherwise): `hpc-rlhf status` reads
  it, never submitit's result pickle. (A worker that aborts MPI itself, as the real one does on an error,
  leaves no `end`: Slurm's own state says FAILED while it remembers the job.) On 75 MPI is
  not finalised (MPI_Finalize is collective: one rank failing in it, e.g. on a message left in flight by the
  stop, hangs all the others until Slurm kills them, and rank 0 would never requeue).
- On 75 the global-rank-0 task runs `scontrol requeue $SLURM_JOB_ID` itself, unless this job was cancelled
  (`hpc-rlhf cancel` records that first) or it already requeued itself `slurm.max_requeues` times (counted in
  RUN_DIR/slurm/jobs.jsonl per job id, so `resume` starts a fresh budget). All tasks then leave with status 75
  without writing a submitit result (the run is not over); srun is given `--kill-on-bad-exit=0` so a site
  default of 1 cannot kill rank 0 before it has requeued. The requeued job has the same id and reruns the
  same sbatch script and pickle: the worker resumes from the latest committed checkpoint in RUN_DIR.
  Rank 0 also requeues only while Slurm says the job is RUNNING: a plain `scancel` sends SIGTERM too (the
  worker checkpoints and exits 75 alike) but the job is then COMPLETING/CANCELLED, and `scontrol requeue`
  would bring a cancelled job back (seen on the dev cluster) -- so it records `requeue_skipped` instead.
- Who signals: the sbatch script has `--signal=USR2@signal_delay_s` (no `B:`), which Slurm sends to every task
  of the step before the time limit. On preemption (PreemptMode=REQUEUE with GraceTime) the dev cluster's
  tasks get SIGCONT and, with `SlurmctldParameters=preempt_send_user_signal`, the USR2 (sites without it
  send SIGTERM), while the job stays RUNNING for GraceTime: the worker checkpoints, rank 0's requeue succeeds
  (observed). If it fails (Slurm already requeueing), that is logged (`requeue_failed`) and harmless; a worker
  too slow for GraceTime is killed and requeued by Slurm and resumes from its last periodic checkpoint.
- A requeued job is held ~120 s (BeginTime) by Slurm before it starts again; `requeue` by us counts in
  jobs.jsonl, Slurm's own requeues show as `Restarts` (SLURM_RESTART_COUNT) in `hpc-rlhf status`.
Known gap: a stop signal in the ~0.1 s between the Python start of a task and SlurmTask installing its
handlers goes to submitit's handler (USR2: it requeues the job itself, harmless) or, before submitit's
imports, kills the task (USR2's default action); the next start resumes from the last periodic checkpoint.
`requeue_self` is also the counted self-requeue of the plain sbatch template jobs/ppo.sbatch.
"""

from __future__ import annotations

import atexit
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from hpc_rlhf.cluster.start_watchdog import StartWatchdog
from hpc_rlhf.config import Config, load_config
from hpc_rlhf.errors import ConfigError, first_line
from hpc_rlhf.launch.slurm_events import read_events, record_event
from hpc_rlhf.rundir import RunDir

DEFAULT_WORKER = "hpc_rlhf.launch.worker"


class _EarlySignals:
    """Stop signals that arrive before the worker has installed its own handlers are not lost.

    Installed over submitit's handlers at the start of the task; a signal is noted, and a watcher thread
    delivers it again (to this process) as soon as the worker's own Python handler is in place. This
    matters: the worker imports torch/transformers before installing its handlers (seconds to tens of
    seconds), and Slurm sends the preemption signal only once.
    """

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

    def __init__(self) -> None:
        self.noted: list[int] = []
        self.done = False
        self._thread: Optional[threading.Thread] = None

    def handler(self, signum: int, frame: Any) -> None:
        self.noted.append(signum)
        where = "after" if self.done else "before"
        print(
            f"hpc_rlhf.slurm: got {signal.Signals(signum).name} {where} the worker's handlers",
            file=sys.stderr,
            flush=True,
        )

    def install(self) -> _EarlySignals:
        for s in self.SIGNALS:
            signal.signal(s, self.handler)
        if self._thread is None:
            self._thread = threading.Thread(target=self._redeliver, name="hpc_rlhf-early-signals", daemon=True)
            self._thread.start()
        return self

    def _redeliver(self) -> None:
        while not self.done:
            time.sleep(0.2)
            for s in dict.fromkeys(self.noted):
                current = signal.getsignal(s)
                if self.done or not callable(current) or current == self.handler:
                    continue  # not the worker's handler (yet)
                self.noted = [x for x in self.noted if x != s]
                print(
                    f"hpc_rlhf.slurm: passing the early {signal.Signals(s).name} on to the worker",
                    file=sys.stderr,
                    flush=True,
                )
                os.kill(os.getpid(), s)

    def stop(self) -> None:
        """The worker returned: from now on a signal is only noted, and ignored from the interpreter's
        exit on. Python's finalisation resets the handlers it installed to the default action, which for
        USR2 and TERM kills the process: a preemption USR2 in that window turned a finished run into a
        FAILED job (signal 12 from srun; seen when a short run ended just as it was preempted)."""
        self.done = True
        for s in self.SIGNALS:
            signal.signal(s, self.handler)
        atexit.register(_ignore_signals, self.SIGNALS)


def _ignore_signals(signals: tuple) -> None:
    for s in signals:  # SIG_IGN, unlike a Python handler, survives interpreter finalisation
        signal.signal(s, signal.SIG_IGN)


def _live_mpi() -> Any:
    mod = sys.modules.get("mpi4py.MPI")
    if mod is None:
        return None
    return mod if mod.Is_initialized() and not mod.Is_finalized() else None


def _run_worker(worker: str, run_dir: str) -> int:
    """Run the worker in this process as `python -m WORKER RUN_DIR` would; return its exit status."""
    saved = sys.argv[:]
    sys.argv = [worker, run_dir]
    try:
        if worker.endswith(".py"):
            runpy.run_path(worker, run_name="__main__")
        else:
            runpy.run_module(worker, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code
        print(e.code, file=sys.stderr, flush=True)
        return 1
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        raise  # the caller records the end and aborts the MPI job
    finally:
        sys.argv = saved
    return 0


def requeue_self(run_dir: str | Path, cfg: Config, job_id: str) -> bool:
    """`scontrol requeue JOB` unless the job was cancelled or used up slurm.max_requeues; logs the outcome."""
    events = read_events(run_dir)
    if any(e.get("event") == "cancel" and str(e.get("job_id")) == job_id for e in events):
        print(f"hpc_rlhf.slurm: job {job_id} was cancelled; not requeueing", flush=True)
        return False
    # RUNNING on the time-limit USR2 and during a preemption's grace time; a plain `scancel` (SIGTERM to the
    # tasks) shows COMPLETING/CANCELLED: the user wants the job gone, so it must not come back.
    state = _job_state(job_id)
    if state not in (None, "RUNNING"):
        record_event(run_dir, "requeue_skipped", job_id=job_id, state=state)
        print(f"hpc_rlhf.slurm: job {job_id} is {state} (scancel?); not requeueing", flush=True)
        return False
    done = sum(1 for e in events if e.get("event") == "requeue" and str(e.get("job_id")) == job_id)
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    if done >= cfg.slurm.max_requeues:
        record_event(run_dir, "requeue_refused", job_id=job_id, requeues=done, max_requeues=cfg.slurm.max_requeues)
        print(
            f"hpc_rlhf.slurm: job {job_id} already requeued itself {done} times (slurm.max_requeues="
            f"{cfg.slurm.max_requeues}); not requeueing. Continue with: hpc-rlhf resume {run_dir}",
            file=sys.stderr,
            flush=True,
        )
        return False
    try:
        r = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        ok, err = r.returncode == 0, (r.stderr or r.stdout).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        ok, err = False, first_line(e)
    if not ok:  # e.g. Slurm is already requeueing it (preemption with PreemptMode=REQUEUE)
        record_event(run_dir, "requeue_failed", job_id=job_id, error=err, restarts=restarts)
        print(f"hpc_rlhf.slurm: scontrol requeue {job_id} failed: {err}", file=sys.stderr, flush=True)
        return False
    record_event(run_dir, "requeue", job_id=job_id, n=done + 1, restarts=restarts, state=state)
    print(f"hpc_rlhf.slurm: requeued job {job_id} ({done + 1}/{cfg.slurm.max_requeues})", flush=True)
    return True


def _job_state(job_id: str) -> Optional[str]:
    """JobState per `scontrol show job` (None when unknown)."""
    try:
        r = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for kv in r.stdout.split():
        if kv.startswith("JobState="):
            return kv.split("=", 1)[1]
    return None


class WorkerFailed(RuntimeError):
    """The worker exited with a status that is neither 0 nor the requeue status."""


class SlurmTask:
    """The callable submitit runs in every Slurm task: runs the worker of RUN_DIR, requeues on its request."""

    def __init__(self, run_dir: str, worker: str = DEFAULT_WORKER) -> None:
        self.run_dir = run_dir
        self.worker = worker

    def __repr__(self) -> str:
        return f"SlurmTask({self.run_dir!r}, worker={self.worker!r})"

    def __call__(self) -> int:
        early = _EarlySignals().install()
        rank = int(os.environ.get("SLURM_PROCID", "0"))
        job_id = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "")
        try:
            cfg = self._start(rank, job_id)
        except Exception as e:
            if rank == 0:  # the same on every task (config, task count, MPI wiring, lease): one record
                self._end(job_id, rank, 1, first_line(e))
                print(f"hpc_rlhf.slurm: error: {first_line(e)}", file=sys.stderr, flush=True)
            mpi = _live_mpi()
            if mpi is not None:  # the other tasks would wait for this one in MPI: end the step
                mpi.COMM_WORLD.Abort(1)
            raise
        try:
            code = _run_worker(self.worker, self.run_dir)
        except BaseException as e:
            self._end(job_id, rank, 1, first_line(e))
            mpi = _live_mpi()
            if mpi is not None:  # peers may be blocked on this rank: end the whole step
                mpi.COMM_WORLD.Abort(1)
            raise
        early.stop()  # late signals (e.g. the SIGTERM of our own requeue) are only noted
        rq = cfg.runtime.requeue_exit_code
        if code == 0:
            if rank == 0:
                self._end(job_id, rank, 0)
                self._release()
            return 0  # MPI is finalised at interpreter exit (mpi4py), as under mpiexec
        if code == rq:
            # The checkpoint is committed (the ranks agreed before the worker returned), so rank 0 can requeue
            # now. No MPI_Finalize: it is a collective that hangs every rank when one of them fails in it
            # (seen: "communicator being freed has unmatched messages" after a stop), and the requeue kills
            # the step anyway; the MPICH shared memory this leaves is removed by the next start's setup.
            if rank == 0 and not requeue_self(self.run_dir, cfg, job_id):
                self._release()  # kept on a requeue: the requeued job (same id) takes it over
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rq)  # no submitit result and no `end` event: the run is not over
        self._end(job_id, rank, code)
        self._release()
        mpi = _live_mpi()
        if mpi is not None:
            print(f"hpc_rlhf.slurm: worker exited {code}; aborting the MPI job", file=sys.stderr, flush=True)
            mpi.COMM_WORLD.Abort(code if 0 < code < 256 else 1)
        raise WorkerFailed(f"worker {self.worker} exited with status {code} (rank {rank}, job {job_id})")

    def _start(self, rank: int, job_id: str) -> Config:
        """The run's config, once SLURM_NTASKS and the MPI world both equal the layout's world size."""
        ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
        cfg = load_config(RunDir(self.run_dir).config)
        world = cfg.world_size
        if ntasks != world:
            raise ConfigError(f"the job has SLURM_NTASKS={ntasks} tasks but the layout world size is {world}")
        dog = StartWatchdog(cfg.runtime.start_timeout_s)  # a peer dead in MPI_Init must not hang this task
        from mpi4py import MPI

        dog.done()

        if MPI.COMM_WORLD.Get_size() != ntasks:
            raise RuntimeError(
                f"MPI world size {MPI.COMM_WORLD.Get_size()} != SLURM_NTASKS {ntasks}: srun --mpi="
                f"{os.environ.get('SLURM_MPI_TYPE', cfg.slurm.mpi_plugin)} does not wire up this MPI "
                "(MPICH needs pmi2, Open MPI pmix; `hpc-rlhf mpi` names it): use slurm.mpi_plugin=auto"
            )
        if rank == 0:
            print(
                f"hpc_rlhf.slurm: job {job_id} (restart {os.environ.get('SLURM_RESTART_COUNT', '0')}), {ntasks} tasks, "
                f"worker {self.worker}, code {Path(__file__).resolve().parents[1]}",
                flush=True,
            )
            self._own(job_id, cfg.runtime.lease_ttl_s)
        return cfg

    def _own(self, job_id: str, ttl_s: float) -> None:
        """Rank 0 takes the run dir's lease for this job (its own lease when requeued) and renews it; a
        live owner elsewhere fails the job (UserError) before any rank writes."""
        from hpc_rlhf.launch.lease import acquire

        def lost(msg: str) -> None:
            print(f"hpc_rlhf.slurm: error: {msg}; aborting the job", file=sys.stderr, flush=True)
            mpi = _live_mpi()
            if mpi is not None:
                mpi.COMM_WORLD.Abort(1)
            os._exit(1)

        self._lease = acquire(self.run_dir, "slurm job", ttl_s, slurm_job_id=job_id)
        self._lease.start_renewing(lost)

    def _release(self) -> None:
        lease = getattr(self, "_lease", None)
        if lease is not None:
            lease.release()

    def _end(self, job_id: str, rank: int, status: int, error: str = "") -> None:
        """The `end` event of the job (jobs.jsonl): what `hpc-rlhf status` reports once Slurm forgot the job.
        Best effort: a run dir that cannot be written must not hide the task's own outcome."""
        fields: dict[str, Any] = {"status": status, "rank": rank}
        fields["restarts"] = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if error:
            fields["error"] = error
        try:
            record_event(self.run_dir, "end", job_id=job_id, **fields)
        except OSError as e:
            print(f"hpc_rlhf.slurm: could not record the end of job {job_id}: {first_line(e)}", file=sys.stderr)
