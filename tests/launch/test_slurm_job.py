"""The in-job side of a Slurm run (hpc_rlhf.launch.slurm_job), without Slurm."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_rlhf.config import load_config, to_yaml
from hpc_rlhf.launch import sbatch_cmds, slurm_runs
from hpc_rlhf.launch.slurm_events import job_end, read_events, record_event


def test_the_in_job_module_does_not_import_the_submitting_one():
    code = (
        "import sys, hpc_rlhf.launch.slurm_job\n"
        "assert 'hpc_rlhf.launch.slurm_submit' not in sys.modules\n"
        "assert 'submitit' not in sys.modules\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]


def test_slurm_task_pickles_by_its_module_path():
    """submitit pickles SlurmTask at submission: the job unpickles it by this module path."""
    import pickle

    from hpc_rlhf.launch.slurm_job import SlurmTask

    blob = pickle.dumps(SlurmTask("/x/run", "w.py"))
    assert b"hpc_rlhf.launch.slurm_job" in blob
    task = pickle.loads(blob)
    assert (task.run_dir, task.worker) == ("/x/run", "w.py")


def _run_dir(tmp_path: Path, *overrides: str) -> Path:
    run_dir = tmp_path / "run"
    (run_dir / "slurm").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(load_config(None, [f"run_dir={run_dir}", *overrides])))
    return run_dir


def test_a_task_that_fails_before_the_worker_records_the_end(tmp_path):
    """SLURM_NTASKS != the layout's world: rank 0 records `end` (status 1, the error's first line)."""
    run_dir = _run_dir(tmp_path)
    code = f"from hpc_rlhf.launch.slurm_job import SlurmTask\nSlurmTask({str(run_dir)!r})()\n"
    env = {**os.environ, "SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_ID": "4242"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode != 0 and "SLURM_NTASKS=2" in p.stderr, p.stderr[-2000:]
    (end,) = [e for e in read_events(run_dir) if e["event"] == "end"]
    assert end["job_id"] == "4242" and end["status"] == 1 and end["rank"] == 0
    assert end["error"].startswith("the job has SLURM_NTASKS=2 tasks but the layout world size is 3")


def _status(run_dir: Path, monkeypatch) -> dict:
    """`status` of a job that Slurm no longer knows (no accounting)."""
    monkeypatch.setattr(slurm_runs, "slurm_state", lambda job_id: {"job_id": job_id, "state": None, "source": None})
    return slurm_runs.status(run_dir, out=io.StringIO())


@pytest.mark.parametrize("status, state", [(0, "COMPLETED"), (1, "FAILED"), (None, "UNKNOWN")])
def test_status_reports_the_recorded_end(tmp_path, monkeypatch, status, state):
    run_dir = _run_dir(tmp_path)
    record_event(run_dir, "submit", job_id="7", num_tasks=3)
    record_event(run_dir, "end", job_id="6", status=0, rank=0)  # another job's end
    if status is not None:
        record_event(run_dir, "end", job_id="7", status=status, rank=0)
    info = _status(run_dir, monkeypatch)
    assert info["state"] == state
    if status is not None:
        assert info["exit_code"] == status and "end event" in info["source"]


def test_sbatch_template_end_helper(tmp_path, monkeypatch):
    """jobs/ppo.sbatch's `sbatch_cmds end RUN_DIR RC`: an `end` unless RC is the requeue status."""
    run_dir = _run_dir(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    assert sbatch_cmds.main(["end", str(run_dir), "75"]) == 0
    assert job_end(read_events(run_dir), "99") is None
    assert sbatch_cmds.main(["end", str(run_dir), "3"]) == 0
    end = job_end(read_events(run_dir), "99")
    assert end is not None and end["status"] == 3 and end["via"] == "sbatch"
