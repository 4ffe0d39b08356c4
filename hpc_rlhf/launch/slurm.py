"""Submission of a run to Slurm through submitit, and what runs inside the job.

    info = submit(cfg, "configs/demo.yaml", dry_run=False)   # `hpc-rlhf submit CONFIG [k=v...] [--dry-run]`

What a submission does
----------------------
1. Checks the Slurm shape against the layout: `slurm.nodes * slurm.tasks_per_node` (tasks_per_node=0 means
   world / nodes) must equal `layout.generate + layout.score + layout.train`, one MPI rank per Slurm task.
2. Creates RUN_DIR, writes the resolved config to RUN_DIR/config.yaml (refusing a RUN_DIR that holds a run
   with a config that differs in keys that are not resume-safe), and with `slurm.snapshot_code` copies the
   `hpc_rlhf` package directory to RUN_DIR/code/hpc_rlhf; the job puts RUN_DIR/code first on PYTHONPATH, so
   it runs (and reruns after a requeue) the code as it was at submission. (A copy of the package rather than
   submitit.helpers.RsyncSnapshot: it needs neither git nor rsync and works from an installed package.)
3. Submits `SlurmTask(RUN_DIR)` with `submitit.AutoExecutor(folder=RUN_DIR/slurm)`: submitit writes the
   sbatch script RUN_DIR/slurm/JOBID_submission.sh, whose single step is
   `srun --mpi=pmi2 --kill-on-bad-exit=0 python -m submitit.core._submit RUN_DIR/slurm`, i.e. one Python per
   Slurm task, each unpickling the same SlurmTask and calling it. Logs: RUN_DIR/slurm/JOBID_RANK_log.{out,err}
   (append mode, so a requeued job adds to the same files). The job id is appended to RUN_DIR/slurm/jobs.jsonl
   (an event log: submit/resume, requeue, requeue_refused, requeue_skipped, requeue_failed, cancel).
`dry_run=True` prints the sbatch script submitit would write (rendered by submitit's own `_make_sbatch_string`
from the same parameters) and touches nothing.

Inside the job (SlurmTask.__call__, once per task)
---------------------------------------------------
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
  failure with MPI still live the MPI job is aborted, so no rank hangs waiting for a dead peer. On 75 MPI is
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
- The first setup line of the job removes this user's `/dev/shm/mpich_shm_*` segments that no live process
  maps: the PyPI MPICH names them after the job and step, so a segment left by a killed attempt makes
  MPI_Init of the requeued attempt fail or hang.
Known gap: a stop signal in the ~0.1 s between the Python start of a task and SlurmTask installing its
handlers goes to submitit's handler (USR2: it requeues the job itself, harmless) or, before submitit's
imports, kills the task (USR2's default action); the next start resumes from the last periodic checkpoint.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO

from hpc_rlhf.config import Config, load_config
from hpc_rlhf.errors import ConfigError, UserError

DEFAULT_WORKER = "hpc_rlhf.launch.worker"
JOBS_FILE = "jobs.jsonl"
ACTIVE_STATES = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "SUSPENDED",
    "STOPPED",
}

# Removes this user's MPICH shared-memory segments that no live process maps (a requeued job has the same
# id, hence the same segment names; a stale one breaks MPI_Init). One shell line, no single quotes.
SHM_CLEANUP = (
    'for f in /dev/shm/mpich_shm_*; do [ -O "$f" ] && ! grep -qsF "$f" /proc/[0-9]*/maps && rm -f "$f"; done; true'
)


@dataclass
class SubmitInfo:
    run_dir: str
    """Absolute run directory."""
    job_id: Optional[str]
    """Slurm job id (None for a dry run)."""
    script: str
    """The sbatch script (as written by submitit, or as it would be for a dry run)."""
    num_tasks: int
    """Slurm tasks = MPI ranks."""
    logs: list[str] = field(default_factory=list)
    """stdout/stderr of each task (rank order; .out then .err)."""
    dry_run: bool = False


# ----------------------------------------------------------------------------------------------- checks


def slurm_shape(cfg: Config) -> tuple[int, int]:
    """(nodes, tasks_per_node) of the job; ConfigError unless nodes * tasks_per_node == the layout's world."""
    s, world = cfg.slurm, cfg.layout.world_size
    if s.nodes < 1:
        raise ConfigError(f"config key 'slurm.nodes': must be >= 1 (got {s.nodes})")
    if s.tasks_per_node < 0:
        raise ConfigError(
            f"config key 'slurm.tasks_per_node': must be >= 0 (0 = world / nodes), got {s.tasks_per_node}"
        )
    tpn = s.tasks_per_node
    if tpn == 0:
        if world % s.nodes:
            raise ConfigError(
                f"config key 'slurm.nodes': layout world size {world} does not divide over slurm.nodes={s.nodes}; "
                "set slurm.tasks_per_node or change the layout"
            )
        tpn = world // s.nodes
    if s.nodes * tpn != world:
        raise ConfigError(
            f"config key 'slurm.tasks_per_node': Slurm tasks slurm.nodes*slurm.tasks_per_node = {s.nodes}*{tpn} = "
            f"{s.nodes * tpn} != layout world size {world} (layout.generate+score+train = "
            f"{cfg.layout.generate}+{cfg.layout.score}+{cfg.layout.train}); one MPI rank per Slurm task"
        )
    for key, value, low in (
        ("cpus_per_task", s.cpus_per_task, 1),
        ("timeout_min", s.timeout_min, 1),
        ("gpus_per_node", s.gpus_per_node, 0),
        ("mem_gb", s.mem_gb, 0),
        ("max_requeues", s.max_requeues, 0),
        ("signal_delay_s", s.signal_delay_s, 0),
    ):
        if value < low:
            raise ConfigError(f"config key 'slurm.{key}': must be >= {low} (got {value})")
    if s.signal_delay_s >= s.timeout_min * 60:
        raise ConfigError(
            f"config key 'slurm.signal_delay_s': {s.signal_delay_s} s must be shorter than slurm.timeout_min="
            f"{s.timeout_min} min"
        )
    if not s.mpi_plugin or any(c.isspace() for c in s.mpi_plugin):
        raise ConfigError(f"config key 'slurm.mpi_plugin': '{s.mpi_plugin}' is not an srun --mpi plugin (e.g. pmi2)")
    return s.nodes, tpn


def _parse_extra_sbatch(options: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for opt in options:
        s = opt.strip()
        if s.startswith("#SBATCH"):
            s = s[len("#SBATCH") :].strip()
        if not s.startswith("--") or len(s) < 3 or " " in s.split("=", 1)[0]:
            raise ConfigError(
                f"config key 'slurm.extra_sbatch': '{opt}' is not a long sbatch option such as --exclusive or "
                "--reservation=NAME"
            )
        key, sep, value = s[2:].partition("=")
        out[key] = value if sep else True
    return out


# ------------------------------------------------------------------------------------- sbatch parameters


def executor_parameters(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """The AutoExecutor parameters of a run: generic names + `slurm_*` ones (every `slurm:` config field)."""
    s = cfg.slurm
    nodes, tpn = slurm_shape(cfg)
    additional: dict[str, Any] = {"requeue": True}
    if s.mail_user:
        additional["mail_user"] = s.mail_user
    if s.mail_type:
        additional["mail_type"] = s.mail_type
    additional.update(_parse_extra_sbatch(list(s.extra_sbatch)))
    setup = list(s.setup)
    setup.append("# hpc_rlhf: drop MPICH shared memory left by a killed attempt (a requeued job keeps its id)")
    if nodes > 1:
        setup.append(f"srun --nodes={nodes} --ntasks-per-node=1 --mpi=none bash -c '{SHM_CLEANUP}'")
    else:
        setup.append(SHM_CLEANUP)
    setup.append(f"export HPC_RLHF_RUN_DIR={_q(str(run_dir))}")
    if s.snapshot_code:
        setup.append(f"export PYTHONPATH={_q(str(run_dir / 'code'))}${{PYTHONPATH:+:$PYTHONPATH}}")
    params: dict[str, Any] = {
        "name": f"hpc_rlhf-{run_dir.name}",
        "nodes": nodes,
        "tasks_per_node": tpn,
        "cpus_per_task": s.cpus_per_task,
        "timeout_min": s.timeout_min,
        "slurm_signal_delay_s": s.signal_delay_s,
        "slurm_srun_args": [f"--mpi={s.mpi_plugin}", "--kill-on-bad-exit=0"],
        "slurm_setup": setup,
        "slurm_additional_parameters": additional,
    }
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    if s.mem_gb:
        params["mem_gb"] = s.mem_gb
    if nodes == 1:  # the job's exit status must stay srun's (Slurm reports it): keep it across the cleanup
        params["slurm_teardown"] = ["hpc_rlhf_rc=$?", SHM_CLEANUP, "exit $hpc_rlhf_rc"]
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key):
            params[f"slurm_{key}"] = getattr(s, key)
    return params


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


def render_sbatch(cfg: Config, run_dir: Path) -> str:
    """The sbatch script submitit would write for this run, without Slurm being installed.

    Same translation as AutoExecutor (generic names through SlurmExecutor._convert_parameters, `slurm_x` -> x)
    and the same renderer (SlurmExecutor._make_submission_file_text -> _make_sbatch_string).
    """
    from submitit.slurm.slurm import SlurmExecutor

    class _RenderOnly(SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:  # no srun needed to render
            return 2

    ex = _RenderOnly(run_dir / "slurm", max_num_timeout=cfg.slurm.max_requeues)
    auto = executor_parameters(cfg, run_dir)
    generic = {k: v for k, v in auto.items() if not k.startswith("slurm_")}
    params = ex._convert_parameters(generic)
    params.update({k[len("slurm_") :]: v for k, v in auto.items() if k.startswith("slurm_")})
    ex.update_parameters(**params)
    return ex._make_submission_file_text(ex._submitit_command_str, "dry-run")


# ------------------------------------------------------------------------------------------ run dir state


def jobs_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / "slurm" / JOBS_FILE


def record_event(run_dir: str | Path, event: str, **fields: Any) -> None:
    """Append one event (submit, resume, requeue, requeue_refused/_skipped/_failed, cancel) to jobs.jsonl."""
    path = jobs_file(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def read_events(run_dir: str | Path) -> list[dict]:
    path = jobs_file(run_dir)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill: skip it
    return out


def job_ids(run_dir: str | Path) -> list[str]:
    """Slurm job ids of the run, oldest first (one per submit/resume)."""
    return [str(e["job_id"]) for e in read_events(run_dir) if e.get("event") in ("submit", "resume")]


def squeue_state(job_id: str) -> Optional[str]:
    """The job's state per squeue, or None when squeue does not know the job (or is not installed)."""
    try:
        r = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    state = r.stdout.strip().splitlines()
    return state[0].strip() if r.returncode == 0 and state else None


def _check_no_active_job(run_dir: Path) -> None:
    ids = job_ids(run_dir)
    if not ids or shutil.which("squeue") is None:
        return
    state = squeue_state(ids[-1])
    if state in ACTIVE_STATES:
        raise UserError(
            f"run dir {run_dir} already has Slurm job {ids[-1]} ({state}); cancel it first "
            f"(hpc-rlhf cancel {run_dir}) or use another run_dir"
        )


def prepare_run_dir(cfg: Config) -> Path:
    """The local launcher's preparation (checkpoint-compatibility check with a diff, tokenizer,
    RUN_DIR/config.yaml), plus the Slurm folder and the code snapshot."""
    from hpc_rlhf.launch.local import prepare_run

    run_dir = Path(prepare_run(cfg))
    (run_dir / "slurm").mkdir(parents=True, exist_ok=True)
    if cfg.slurm.snapshot_code:
        snapshot_code(run_dir)
    return run_dir


def snapshot_code(run_dir: Path) -> Path:
    """Copy the hpc_rlhf package directory to RUN_DIR/code/hpc_rlhf (replacing an older snapshot)."""
    import hpc_rlhf

    src = Path(hpc_rlhf.__file__).resolve().parent
    dest = run_dir / "code" / "hpc_rlhf"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _log_paths(run_dir: Path, job_id: str, num_tasks: int) -> list[str]:
    out = []
    for rank in range(num_tasks):
        out += [
            str(run_dir / "slurm" / f"{job_id}_{rank}_log.out"),
            str(run_dir / "slurm" / f"{job_id}_{rank}_log.err"),
        ]
    return out


def _check_worker(worker: str) -> None:
    if worker.endswith(".py"):
        if not os.path.isfile(worker):
            raise UserError(f"worker script '{worker}' does not exist")
        return
    import importlib.util

    try:
        found = importlib.util.find_spec(worker) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise UserError(f"worker module '{worker}' is not importable; the job would fail at once")


# ------------------------------------------------------------------------------------------------- submit


def submit(
    cfg: Config,
    config_path: Optional[str] = None,
    dry_run: bool = False,
    *,
    worker: str = DEFAULT_WORKER,
    event: str = "submit",
    out: Optional[TextIO] = None,
) -> SubmitInfo:
    """Submit the run `cfg` (validated by load_config) to Slurm; see the module docstring.

    `worker`: the module (or a .py path, for tests) each task runs as `python -m WORKER RUN_DIR`.
    Raises ConfigError/UserError (one line) before anything is written or submitted when something is off.
    """
    out = out or sys.stdout
    nodes, tpn = slurm_shape(cfg)
    run_dir = Path(cfg.run_dir).expanduser().absolute()
    cfg = dataclasses.replace(cfg, run_dir=str(run_dir))
    params = executor_parameters(cfg, run_dir)
    num_tasks = nodes * tpn
    if dry_run:
        script = render_sbatch(cfg, run_dir)
        out.write(script if script.endswith("\n") else script + "\n")
        out.write(f"# dry run: nothing submitted; {num_tasks} tasks, run dir {run_dir}\n")
        out.flush()
        return SubmitInfo(str(run_dir), None, script, num_tasks, [], dry_run=True)
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise UserError(
            "sbatch/srun not found: submit from a Slurm login node (dev machine: tools/slurm/dev_cluster.sh start)"
        )
    _check_worker(worker)
    _check_no_active_job(run_dir)
    prepare_run_dir(cfg)

    import submitit

    ex = submitit.AutoExecutor(folder=run_dir / "slurm", cluster="slurm", slurm_max_num_timeout=cfg.slurm.max_requeues)
    ex.update_parameters(**params)
    try:
        job = ex.submit(SlurmTask(str(run_dir), worker))
    except Exception as e:  # sbatch refused (bad partition, account, ...): say what sbatch said
        msg = getattr(e, "stderr", None) or str(e)
        if isinstance(msg, bytes):
            msg = msg.decode(errors="replace")
        lines = [ln for ln in str(msg).splitlines() if ln.strip()]
        err = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else type(e).__name__)
        raise UserError(f"sbatch refused the job: {err.strip()}") from None
    job_id = str(job.job_id)
    record_event(run_dir, event, job_id=job_id, config=config_path, num_tasks=num_tasks, worker=worker)
    script = Path(job.paths.submission_file).read_text()
    logs = _log_paths(run_dir, job_id, num_tasks)
    out.write(
        f"submitted Slurm job {job_id}: {num_tasks} tasks on {nodes} node(s)"
        f"{', partition ' + cfg.slurm.partition if cfg.slurm.partition else ''}\n"
        f"run dir: {run_dir}\n"
        f"logs:    {run_dir / 'slurm'}/{job_id}_<rank>_log.out and .err, rank 0..{num_tasks - 1} "
        f"(hpc-rlhf logs {run_dir} --rank N)\n"
        f"status:  hpc-rlhf status {run_dir}\n"
    )
    out.flush()
    return SubmitInfo(str(run_dir), job_id, script, num_tasks, logs)


# --------------------------------------------------------------------------------------- inside the job


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
        mpi = _live_mpi()
        if mpi is not None:  # peers may be blocked on this rank: end the whole step
            mpi.COMM_WORLD.Abort(1)
        raise
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
        ok, err = False, str(e)
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
        ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
        job_id = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "")
        cfg = load_config(str(Path(self.run_dir) / "config.yaml"))
        world = cfg.layout.world_size
        if ntasks != world:
            raise ConfigError(f"the job has SLURM_NTASKS={ntasks} tasks but the layout world size is {world}")
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_size() != ntasks:
            raise RuntimeError(
                f"MPI world size {MPI.COMM_WORLD.Get_size()} != SLURM_NTASKS {ntasks}: srun --mpi="
                f"{cfg.slurm.mpi_plugin} does not wire up this MPI (the PyPI MPICH needs slurm.mpi_plugin=pmi2)"
            )
        if rank == 0:
            print(
                f"hpc_rlhf.slurm: job {job_id} (restart {os.environ.get('SLURM_RESTART_COUNT', '0')}), {ntasks} tasks, "
                f"worker {self.worker}, code {Path(__file__).resolve().parents[1]}",
                flush=True,
            )
        code = _run_worker(self.worker, self.run_dir)
        early.stop()  # late signals (e.g. the SIGTERM of our own requeue) are only noted
        rq = cfg.runtime.requeue_exit_code
        mpi = _live_mpi()
        if mpi is not None and code not in (0, rq):
            print(f"hpc_rlhf.slurm: worker exited {code}; aborting the MPI job", file=sys.stderr, flush=True)
            mpi.COMM_WORLD.Abort(code if 0 < code < 256 else 1)
        if code == 0:
            return 0  # MPI is finalised at interpreter exit (mpi4py), as under mpiexec
        if code == rq:
            # The checkpoint is committed (the ranks agreed before the worker returned), so rank 0 can requeue
            # now. No MPI_Finalize: it is a collective that hangs every rank when one of them fails in it
            # (seen: "communicator being freed has unmatched messages" after a stop), and the requeue kills
            # the step anyway; the MPICH shared memory this leaves is removed by the next start's setup.
            if rank == 0:
                requeue_self(self.run_dir, cfg, job_id)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rq)  # no submitit result: the run is not over
        raise WorkerFailed(f"worker {self.worker} exited with status {code} (rank {rank}, job {job_id})")
