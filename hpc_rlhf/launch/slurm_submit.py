"""Submission of a run to Slurm through submitit (what runs inside the job: hpc_rlhf.launch.slurm_job).

    info = submit(cfg, "configs/demo.yaml", dry_run=False)   # `hpc-rlhf submit CONFIG [k=v...] [--dry-run]`
    job_id, script = submit_job(cfg, worker, event="resume")  # the one submitter: submit, submit-recipe, resume

What a submission does
----------------------
1. Takes the Slurm shape from the config (`slurm_shape`): `slurm.nodes * slurm.tasks_per_node`
   (tasks_per_node=0 means world / nodes) equals `layout.generate + layout.score + layout.train`, one MPI
   rank per Slurm task; config.validate checked that, and every other `slurm:` value, at load time.
   `placement.*` (which nodes each role group runs on) must fit that allocation (`check_placement`).
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
   (the event log of hpc_rlhf.launch.slurm_events).
4. The first setup line of the job removes this user's `/dev/shm/mpich_shm_*` segments that no live process
   maps: the PyPI MPICH names them after the job and step, so a segment left by a killed attempt makes
   MPI_Init of the requeued attempt fail or hang.
`dry_run=True` prints the sbatch script submitit would write (rendered by submitit's own `_make_sbatch_string`
from the same parameters) and touches nothing.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO

from hpc_rlhf.config import Config
from hpc_rlhf.errors import UserError, first_line
from hpc_rlhf.launch.lease import check_free
from hpc_rlhf.launch.slurm_events import check_no_active_job, record_event
from hpc_rlhf.launch.slurm_job import DEFAULT_WORKER, SlurmTask
from hpc_rlhf.rundir import RunDir

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


# ------------------------------------------------------------------------------------------------ shape


def slurm_shape(cfg: Config) -> tuple[int, int]:
    """(nodes, tasks_per_node) of the job of a validated config (tasks_per_node=0 means world / nodes).

    config.validate (run by load_config) has checked that nodes * tasks_per_node == the layout's world size
    and every other `slurm:` value, with one-line ConfigErrors; nothing here raises.
    """
    s = cfg.slurm
    return s.nodes, s.tasks_per_node or cfg.world_size // s.nodes


def check_placement(cfg: Config) -> None:
    """`placement.*` against the job's allocation (Slurm's block distribution: node k holds ranks
    k*tasks_per_node and on): a one-line ConfigError when the groups cannot be placed. The worker checks
    again at start-up against the nodes MPI finds (cluster/nodes.py)."""
    from hpc_rlhf.cluster.topology import Topology

    if cfg.stage != "rl":  # sft, rm: every rank runs the stage; there are no role groups to place
        return
    nodes, tpn = slurm_shape(cfg)
    Topology.build(nodes * tpn, cfg.layout, cfg.placement, [r // tpn for r in range(nodes * tpn)])


def _parse_extra_sbatch(options: list[str]) -> dict[str, Any]:
    """`slurm.extra_sbatch` ("--key=value", "--flag", "#SBATCH --key=value"; syntax checked by
    config.validate) as submitit's additional parameters {key: value or True}."""
    out: dict[str, Any] = {}
    for opt in options:
        s = opt.strip()
        if s.startswith("#SBATCH"):
            s = s[len("#SBATCH") :].strip()
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
        setup.append(f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --mpi=none bash -c '{SHM_CLEANUP}'")
    else:
        setup.append(SHM_CLEANUP)
    setup.append(f"export HPC_RLHF_RUN_DIR={_q(str(run_dir))}")
    if s.snapshot_code:
        setup.append(f"export PYTHONPATH={_q(RunDir(str(run_dir)).code)}${{PYTHONPATH:+:$PYTHONPATH}}")
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

    # Private submitit API (_convert_parameters, _submitit_command_str, _make_submission_file_text): submitit
    # has no public "render without submitting". Chosen over a public-only imitation of the script because
    # the dry run must print exactly what `submit` writes; so pyproject.toml pins the tested range
    # (submitit>=1.5.4,<1.6: 1.5.4 added the slurm_teardown this script ends with), and
    # tests/launch/test_dry_run.py (golden files) plus the dev-cluster test_submit_status_logs (dry-run
    # script == submitted script) fail when a submitit upgrade changes either.
    ex = _RenderOnly(Path(RunDir(str(run_dir)).slurm), max_num_timeout=cfg.slurm.max_requeues)
    auto = executor_parameters(cfg, run_dir)
    generic = {k: v for k, v in auto.items() if not k.startswith("slurm_")}
    params = ex._convert_parameters(generic)
    params.update({k[len("slurm_") :]: v for k, v in auto.items() if k.startswith("slurm_")})
    ex.update_parameters(**params)
    return ex._make_submission_file_text(ex._submitit_command_str, "dry-run")


# ------------------------------------------------------------------------------------------ run dir state


def prepare_run_dir(cfg: Config) -> Path:
    """The preparation of every run (launch/prepare.py: checkpoint-compatibility check with a diff,
    tokenizer, RUN_DIR/config.yaml), plus the Slurm folder and the code snapshot."""
    from hpc_rlhf.launch.prepare import prepare_run

    _, prepared = prepare_run(cfg)
    run_dir = Path(prepared)
    Path(RunDir(str(run_dir)).slurm).mkdir(parents=True, exist_ok=True)
    if cfg.slurm.snapshot_code:
        snapshot_code(run_dir)
    return run_dir


def snapshot_code(run_dir: Path) -> Path:
    """Copy the hpc_rlhf package directory to RUN_DIR/code/hpc_rlhf (replacing an older snapshot)."""
    import hpc_rlhf

    src = Path(hpc_rlhf.__file__).resolve().parent
    dest = Path(RunDir(str(run_dir)).code) / "hpc_rlhf"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _log_paths(run_dir: Path, job_id: str, num_tasks: int) -> list[str]:
    out = []
    for rank in range(num_tasks):
        out += [
            RunDir(str(run_dir)).slurm_log(job_id, rank, "out"),
            RunDir(str(run_dir)).slurm_log(job_id, rank, "err"),
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
    check_placement(cfg)  # --dry-run too: a placement the allocation cannot meet is never queued
    run_dir = Path(cfg.run_dir).expanduser().absolute()
    cfg = dataclasses.replace(cfg, run_dir=str(run_dir))
    num_tasks = nodes * tpn
    if dry_run:
        script = render_sbatch(cfg, run_dir)
        out.write(script if script.endswith("\n") else script + "\n")
        out.write(f"# dry run: nothing submitted; {num_tasks} tasks, run dir {run_dir}\n")
        out.flush()
        return SubmitInfo(str(run_dir), None, script, num_tasks, [], dry_run=True)
    require_slurm()
    _check_worker(worker)
    check_no_active_job(run_dir)
    check_free(str(run_dir))  # a local run (or a job) that owns the run dir: refused before queueing
    prepare_run_dir(cfg)
    job_id, script = submit_job(cfg, worker, event=event, config=config_path)
    logs = _log_paths(run_dir, job_id, num_tasks)
    out.write(
        f"submitted Slurm job {job_id}: {num_tasks} tasks on {nodes} node(s)"
        f"{', partition ' + cfg.slurm.partition if cfg.slurm.partition else ''}\n"
        f"run dir: {run_dir}\n"
        f"logs:    {RunDir(str(run_dir)).slurm}/{job_id}_<rank>_log.out and .err, rank 0..{num_tasks - 1} "
        f"(hpc-rlhf logs {run_dir} --rank N)\n"
        f"status:  hpc-rlhf status {run_dir}\n"
    )
    out.flush()
    return SubmitInfo(str(run_dir), job_id, script, num_tasks, logs)


def require_slurm() -> None:
    """A one-line UserError where sbatch or srun is missing (not a Slurm login node)."""
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise UserError(
            "sbatch/srun not found: submit from a Slurm login node (dev machine: tools/slurm/dev_cluster.sh start)"
        )


def submit_job(
    cfg: Config, worker: str = DEFAULT_WORKER, *, event: str = "submit", what: str = "the job", **fields: Any
) -> tuple[str, str]:
    """Queue one job of a prepared run: the one place a job is submitted (`submit`, each stage of
    `submit-recipe`, a resubmission). submitit writes the sbatch script of `executor_parameters(cfg)` into
    RUN_DIR/slurm, every task runs SlurmTask(RUN_DIR, worker); sbatch's refusal is a one-line UserError
    naming `what`. The job is recorded in RUN_DIR/slurm/jobs.jsonl as `event` (with `fields`, e.g. config=).

    cfg: validated, its run_dir absolute and prepared. Returns (job id, the sbatch script as submitted).
    """
    import submitit

    run_dir = Path(cfg.run_dir)
    ex = submitit.AutoExecutor(
        folder=Path(RunDir(str(run_dir)).slurm), cluster="slurm", slurm_max_num_timeout=cfg.slurm.max_requeues
    )
    ex.update_parameters(**executor_parameters(cfg, run_dir))
    try:
        job = ex.submit(SlurmTask(str(run_dir), worker))
    except Exception as e:  # noqa: BLE001 - sbatch refused (bad partition, account, ...): say what it said
        raise UserError(f"sbatch refused {what}: {_sbatch_error(e)}") from None
    job_id = str(job.job_id)
    record_event(run_dir, event, job_id=job_id, num_tasks=cfg.world_size, worker=worker, **fields)
    return job_id, Path(job.paths.submission_file).read_text()


def _sbatch_error(e: Exception) -> str:
    """The line of sbatch's output that says why it refused (submitit raises with sbatch's stderr)."""
    msg = getattr(e, "stderr", None) or str(e)
    if isinstance(msg, bytes):
        msg = msg.decode(errors="replace")
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    return next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else first_line(e))
