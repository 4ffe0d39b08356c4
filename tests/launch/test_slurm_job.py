"""The in-job side of a Slurm run (hpc_rlhf.launch.slurm_job), without Slurm."""

from __future__ import annotations

import subprocess
import sys


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
