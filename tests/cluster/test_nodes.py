"""cluster/nodes.py with real MPI ranks: nodes and local ranks from MPI's shared-memory split (no launcher
variable), the shared-RUN_DIR token check, and on a GPU the device of each rank (set_device, no two ranks
on one GPU unless runtime.allow_shared_gpu), whatever way the site binds GPUs to tasks (the device query
cluster/gpus.visible_uuids is the one seam: without a GPU, each rank's list of UUIDs is given). The multi-node cases run on the dev Slurm cluster
(tests/launch/slurm/test_multi_node.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.mpi

PROBE = textwrap.dedent(
    """
    import json, sys
    from mpi4py import MPI
    from hpc_rlhf.config import RuntimeConfig
    from hpc_rlhf.cluster.nodes import NodeMap, check_shared_run_dir, local_device
    from hpc_rlhf.errors import UserError
    comm = MPI.COMM_WORLD
    nodes = NodeMap.gather(comm)
    check_shared_run_dir(comm, sys.argv[1], nodes, "tok")
    out = {"nodes": list(nodes.node_of_rank), "local": list(nodes.local_rank), "hosts": list(nodes.hosts)}
    for allow in (False, True):
        try:
            out[f"device_{allow}"] = str(local_device(RuntimeConfig(device=sys.argv[2], allow_shared_gpu=allow), nodes, comm.Get_rank()))
        except UserError as e:
            out[f"device_{allow}"] = "UserError: " + str(e)
    if comm.Get_rank() == 0:
        out["report"] = nodes.report()
    # one file per rank: lines printed by several ranks can run together on mpiexec's stdout
    with open(f"{sys.argv[1]}/probe_{comm.Get_rank()}.json", "w") as f:
        json.dump(out, f)
    """
)


def probe(mpiexec: str, n: int, run_dir: str, device: str, env: dict | None = None) -> list[dict]:
    r = subprocess.run(
        [mpiexec, "-n", str(n), sys.executable, "-c", PROBE, run_dir, device],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return read_outs(run_dir, n)


def read_outs(run_dir, n: int) -> list[dict]:
    return [json.loads(open(os.path.join(run_dir, f"probe_{rank}.json")).read()) for rank in range(n)]


def test_one_node_local_ranks_from_mpi_not_launcher_variables(mpiexec, tmp_path):
    # a launcher variable that says otherwise is not read
    outs = probe(mpiexec, 3, str(tmp_path), "cpu", env={"SLURM_LOCALID": "7", "MPI_LOCALRANKID": "7"})
    assert len(outs) == 3
    for out in outs:
        assert out["nodes"] == [0, 0, 0] and out["local"] == [0, 1, 2] and out["hosts"] == [socket.gethostname()]
        assert out["device_False"] == "cpu"
    report = next(o["report"] for o in outs if "report" in o)
    assert report.startswith(f"hpc_rlhf.nodes: node 0: host {socket.gethostname()}, ranks 0-2 (3), clock ")
    assert (tmp_path / ".ranks" / "node_000.token").read_text() == f"tok {socket.gethostname()}\n"


@pytest.mark.gpu
def test_each_rank_gets_its_local_gpu_and_two_ranks_on_one_gpu_are_refused(mpiexec, tmp_path):
    import torch

    if not torch.cuda.is_available():  # CI has no GPU; tools/gpu_check.sh (HPC_RLHF_GPU_CHECK=1) must not skip
        assert os.environ.get("HPC_RLHF_GPU_CHECK") != "1", "tools/gpu_check.sh: torch sees no CUDA device"
        pytest.skip("needs a CUDA device: run tools/gpu_check.sh on a GPU machine")
    count = torch.cuda.device_count()
    n = count + 1  # one rank more than there are GPUs
    outs = probe(mpiexec, n, str(tmp_path), "cuda")
    for out in outs:
        assert (
            out["device_False"].startswith("UserError: node 0 (") and "would use the same GPU (" in out["device_False"]
        )
    assert sorted(o["device_True"] for o in outs) == sorted(f"cuda:{r % count}" for r in range(n))
    outs = probe(mpiexec, count, str(tmp_path), "auto")
    assert sorted(o["device_False"] for o in outs) == [f"cuda:{r}" for r in range(count)]


# Each rank's visible GPU UUIDs under each way a site binds GPUs (2 GPUs A, B on the node; 2 or 3 ranks), the
# devices the ranks must end on, or None where two ranks would really use one device.
BINDINGS = {
    "all GPUs visible to every task": ([["A", "B"], ["A", "B"]], ["A", "B"]),
    "--gpus-per-task=1": ([["A"], ["B"]], ["A", "B"]),
    "--gpu-bind=map_gpu:1,0": ([["B"], ["A"]], ["B", "A"]),
    "site CUDA_VISIBLE_DEVICES per task": ([["B", "A"], ["A", "B"]], ["B", "A"]),
    "one GPU given to two tasks": ([["A"], ["A"]], None),
    "three tasks on two visible GPUs": ([["A", "B"], ["A", "B"], ["A", "B"]], None),
}

BIND_PROBE = textwrap.dedent(
    """
    import json, sys
    from mpi4py import MPI
    from hpc_rlhf.cluster.gpus import pick_gpu
    from hpc_rlhf.cluster.nodes import NodeMap
    from hpc_rlhf.errors import UserError
    comm = MPI.COMM_WORLD
    nodes = NodeMap.gather(comm)
    out = {}
    for name, (lists, _) in json.loads(sys.argv[1]).items():
        if len(lists) != comm.Get_size():
            continue
        mine = lists[comm.Get_rank()]  # what visible_uuids() would say on this rank
        for allow in (False, True):
            try:
                out[f"{name}|{allow}"] = mine[pick_gpu(comm, nodes, comm.Get_rank(), allow, mine)]
            except UserError as e:
                out[f"{name}|{allow}"] = "UserError: " + str(e)
    outs = comm.gather(out)
    if comm.Get_rank() == 0:
        print(json.dumps(outs), flush=True)
    """
)


@pytest.mark.parametrize("n", [2, 3])
def test_every_way_a_site_binds_gpus_is_accepted_and_a_really_shared_gpu_refused(mpiexec, n):
    r = subprocess.run(
        [mpiexec, "-n", str(n), sys.executable, "-c", BIND_PROBE, json.dumps(BINDINGS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    outs = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("[")))
    assert len(outs) == n
    for name, (lists, want) in BINDINGS.items():
        if len(lists) != n:
            continue
        got = [o[f"{name}|False"] for o in outs]
        if want is not None:
            assert got == want, (name, got)
            assert [o[f"{name}|True"] for o in outs] == want, name
            continue
        # refused on every rank of the node, in one line naming two ranks and the device
        assert all(g.startswith("UserError: node 0 (") and "would use the same GPU (A)" in g for g in got), got
        assert all("\n" not in g and "rank 0 and rank " in g for g in got), got
        allowed = [o[f"{name}|True"] for o in outs]
        assert allowed == [lst[i % len(lst)] for i, lst in enumerate(lists)], (name, allowed)


@pytest.mark.gpu
def test_one_gpu_per_task_set_by_the_site_on_real_gpus(mpiexec, tmp_path):
    """Each rank gets CUDA_VISIBLE_DEVICES=<its rank mod the GPU count> (what --gpus-per-task=1 or a site's
    wrapper does): with 2 GPUs each rank sees one and keeps it; with 1 GPU both see the same one: refused."""
    import torch

    if not torch.cuda.is_available():
        assert os.environ.get("HPC_RLHF_GPU_CHECK") != "1", "tools/gpu_check.sh: torch sees no CUDA device"
        pytest.skip("needs a CUDA device: run tools/gpu_check.sh on a GPU machine")
    count = torch.cuda.device_count()
    wrap = f'CUDA_VISIBLE_DEVICES=$((PMI_RANK % {count})) exec "$@"'
    r = subprocess.run(
        [mpiexec, "-n", "2", "sh", "-c", wrap, "sh", sys.executable, "-c", PROBE, str(tmp_path), "cuda"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    outs = read_outs(tmp_path, 2)
    assert len(outs) == 2
    if count >= 2:
        assert [o["device_False"] for o in outs] == ["cuda:0", "cuda:0"], outs  # each its own, index 0 of its list
    else:
        assert all("would use the same GPU (" in o["device_False"] for o in outs), outs
