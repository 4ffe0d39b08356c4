"""Start-up checks of a run spread over the dev cluster's nodes (tools/slurm/dev_cluster.sh start --nodes 2),
with the real worker started by `srun --mpi=pmi2` over 2 nodes x 2 tasks (ranks 0-1 on node1, 2-3 on node2):
a node-local RUN_DIR and a placement the allocation cannot meet are one-line errors before any role starts,
and a task that dies before MPI start-up ends the step instead of leaving its peers blocked in MPI_Init.

The 2-node runs themselves (placement, preemption, a killed rank) are in test_dev_cluster.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.launch import slurm_submit
from tests.conftest import TINY

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

# Each dev-cluster node's own tmpfs (tools/slurm/nodes.sh): the same path, different files on every node.
NODE_LOCAL = os.environ.get("DEV_SLURM_NODE_LOCAL", "/var/tmp/dev-node-local")
LAYOUT = ["layout.train=2", "generate.shards_per_step=4", "total_steps=2"]


def srun(*argv: str, tasks_per_node: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = ["srun", "-N", "2", f"--ntasks-per-node={tasks_per_node}", "--mpi=pmi2", "-t", "3", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def worker(run_dir: str) -> subprocess.CompletedProcess:
    return srun(sys.executable, "-m", "hpc_rlhf.launch.worker", run_dir)


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    # srun interleaves the tasks' stderr with its own: a task's line may run on into "srun: error: ..."
    lines = re.split(r"\n|(?=srun: )|(?=slurmstepd-)", r.stderr)
    return [ln for ln in lines if ln.startswith("error: ")]


def test_a_node_local_run_dir_is_a_one_line_error_at_start(tmp_path, two_nodes, tiny_rm):
    staged = tmp_path / "staged"
    slurm_submit.prepare_run_dir(load_config(TINY, [f"run_dir={staged}", *LAYOUT, *tiny_rm["overrides"]]))
    local = f"{NODE_LOCAL}/{uuid.uuid4().hex[:8]}"
    # submitted from here, the run dir is only where it was written: no node sees its config
    r = worker(local)
    assert r.returncode != 0
    assert "config.yaml does not exist on host node" in r.stderr and "every node sees" in r.stderr, r.stderr
    # copied to each node's local scratch: each node sees a config, but not the other nodes' files
    cp = srun("sh", "-c", f"mkdir -p {local} && cp -r {staged}/. {local}/", tasks_per_node=1)
    assert cp.returncode == 0, cp.stderr
    try:
        r = worker(local)
        assert r.returncode != 0, r.stdout + r.stderr
        lines = {ln.split("UserError: ", 1)[-1] for ln in error_lines(r)}
        assert len(lines) == 1, r.stderr  # the same one line on every rank
        msg = lines.pop()
        assert f"RUN_DIR {local} is not one folder shared by every node" in msg, msg
        assert "rank 0 on node 0 (node1, ranks 0-1)" in msg and "by node 1 (node2, ranks 2-3)" in msg, msg
        assert "hpc_rlhf.nodes: node 1: host node2, ranks 2-3" in r.stdout, r.stdout  # hosts and clocks logged
    finally:
        srun("rm", "-rf", local, tasks_per_node=1)


def test_a_placement_the_allocation_cannot_meet_is_refused_at_start(tmp_path, two_nodes, tiny_rm):
    """`--dry-run` refuses it too (tests/launch/test_dry_run.py); here the job is started without that check."""
    run_dir = tmp_path / "run"
    placement = ["placement.generate=0", "placement.score=0", "placement.train=0"]  # 4 ranks on a 2-task node
    slurm_submit.prepare_run_dir(load_config(TINY, [f"run_dir={run_dir}", *LAYOUT, *placement, *tiny_rm["overrides"]]))
    r = worker(str(run_dir))
    assert r.returncode != 0
    lines = {ln.split("ConfigError: ", 1)[-1] for ln in error_lines(r)}
    assert len(lines) == 1, r.stderr
    msg = lines.pop()
    assert msg.startswith("placement cannot be met by the allocation (node 0: ranks 0-1; node 1: ranks 2-3)"), msg
    assert not (Path(run_dir) / "rollouts").exists()  # no role started


def test_a_task_dead_before_mpi_start_up_ends_the_step_with_the_others_named(tmp_path, two_nodes, tiny_rm):
    """Task 3 exits before MPI_Init: tasks 0-2 wait in MPI_Init's PMI fence for it, and srun keeps them
    (--kill-on-bad-exit=0, as our jobs run) -- until each one's start-up deadline kills it, naming it."""
    run_dir = tmp_path / "run"
    slurm_submit.prepare_run_dir(
        load_config(TINY, [f"run_dir={run_dir}", *LAYOUT, "runtime.start_timeout_s=15", *tiny_rm["overrides"]])
    )
    die_early = f'[ "$SLURM_PROCID" = 3 ] && exit 3; exec {sys.executable} -m hpc_rlhf.launch.worker {run_dir}'
    t0 = time.monotonic()
    r = srun("--kill-on-bad-exit=0", "sh", "-c", die_early, timeout=150)
    took = time.monotonic() - t0
    assert r.returncode != 0
    assert took < 60 + 15, (took, r.stderr)  # torch's import on a loaded machine, then the 15 s deadline
    named = [ln for ln in error_lines(r) if "did not finish MPI start-up in 15 s" in ln]
    assert {ln.split(" (pid")[0] for ln in named} == {"error: task 0", "error: task 1", "error: task 2"}, r.stderr
    assert any("on host node1" in ln for ln in named) and any("on host node2" in ln for ln in named), named
    assert not (run_dir / "rollouts").exists()  # no role started
