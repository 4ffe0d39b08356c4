"""Site MPI on the dev cluster: a 2-node job whose mpi4py is compiled against Debian's Open MPI (the venv of
.ci/openmpi_env.sh) runs through `srun --mpi=pmix`, picked by slurm.mpi_plugin=auto, and ends bit-identical
to the same job under MPICH (`srun --mpi=pmi2`), the two submitted side by side. The dev cluster's TaskProlog
gives every task MPICH's OFI netmod variables (MPIR_CVAR_CH4_NETMOD=ofi, FI_PROVIDER=tcp): Open MPI runs
with them set, as this test shows (its OFI components leave the tcp provider out; TCP and shared memory carry it).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, kr, need
from tests.launch.slurm.test_dev_cluster import DONE, TWO_NODES, run_logs, wait_state
from tests.launch.test_site_mpi import ompi_python

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
STEPS = 20


def submit(python: str, run_dir: Path, overrides: list[str], jobs: list) -> str:
    r = subprocess.run(
        [python, "-m", "hpc_rlhf.launch.cli", "submit", str(Path(REPO) / "configs" / "tiny.yaml"), *overrides,
         f"run_dir={run_dir}"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    job = re.search(r"submitted Slurm job (\d+)", r.stdout).group(1)
    jobs.append(job)
    return job


def test_a_2_node_open_mpi_job_through_pmix_ends_bit_identical_to_mpich(tmp_path, jobs, tiny_rm, two_nodes):
    ompi = ompi_python()
    need(Path(ompi).exists(), "the Open MPI venv (bash .ci/openmpi_env.sh)")
    args = [f"total_steps={STEPS}", "checkpoint.every_steps=1000", "slurm.timeout_min=10", *TWO_NODES]
    args += tiny_rm["overrides"]
    runs = {"openmpi": tmp_path / "openmpi", "mpich": tmp_path / "mpich"}
    ids = {
        "openmpi": submit(ompi, runs["openmpi"], args, jobs),
        "mpich": submit(sys.executable, runs["mpich"], args, jobs),
    }
    for name, plugin in (("openmpi", "pmix"), ("mpich", "pmi2")):
        script = (runs[name] / "slurm" / f"{ids[name]}_submission.sh").read_text()
        assert f"--mpi={plugin} " in script, script
    for name in runs:
        done = wait_state(ids[name], DONE, timeout=600)
        assert done["JobState"] == "COMPLETED", f"{name}: {done.get('JobState')}\n{run_logs(runs[name])}"
    logs = run_logs(runs["openmpi"])
    assert "hpc_rlhf.nodes: node 0: host node1, ranks 0-1" in logs and "node 1: host node2, ranks 2-3" in logs, logs
    assert kr.final_sha(str(runs["openmpi"])) == kr.final_sha(str(runs["mpich"]))
