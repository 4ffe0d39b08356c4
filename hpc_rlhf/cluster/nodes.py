"""The nodes of a run, found by MPI itself: which node each rank is on, each rank's local rank, its GPU,
and the start-up checks every rank takes part in (hpc_rlhf/launch/worker.py calls them, in this order).

    nodes = NodeMap.gather(comm)                        # collective: node, local rank, host, clock per rank
    check_shared_run_dir(comm, run_dir, nodes, attempt) # collective: UserError unless every node sees RUN_DIR
    print(nodes.report())                               # rank 0: hosts, ranks and clock offsets, for the log
    device = local_device(cfg.runtime, nodes, rank)     # cuda:<local rank> (torch.cuda.set_device) or cpu

A node is a shared-memory domain of MPI (`COMM_WORLD.Split_type(COMM_TYPE_SHARED)`), whatever the
launcher (srun, mpiexec, OpenMPI's or MPICH's): no launcher variable (SLURM_LOCALID, MPI_LOCALRANKID,
OMPI_COMM_WORLD_LOCAL_RANK) is read. Nodes are numbered by their lowest world rank, which with Slurm's
block distribution is their position in the allocation (the numbering `placement.*` uses).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from hpc_rlhf.errors import UserError
from hpc_rlhf.rundir import RunDir


@dataclass(frozen=True)
class NodeMap:
    node_of_rank: tuple[int, ...]
    """Node index of each world rank."""
    local_rank: tuple[int, ...]
    """Each rank's rank among the ranks of its node."""
    hosts: tuple[str, ...]
    """Host name of each node (by node index)."""
    clock_s: tuple[float, ...]
    """Each rank's wall clock (time.time) when the map was gathered, just after a barrier."""

    @classmethod
    def gather(cls, comm) -> NodeMap:
        """Collective over `comm` (MPI.COMM_WORLD)."""
        from mpi4py import MPI

        rank = comm.Get_rank()
        local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        leader = local.bcast(rank, root=0)  # the node's lowest world rank
        local_rank = local.Get_rank()
        local.Free()
        comm.Barrier()
        rows = comm.allgather((leader, local_rank, socket.gethostname(), time.time()))
        leaders = sorted({r[0] for r in rows})
        node_of_rank = tuple(leaders.index(r[0]) for r in rows)
        hosts = tuple(rows[leader][2] for leader in leaders)
        return cls(node_of_rank, tuple(r[1] for r in rows), hosts, tuple(r[3] for r in rows))

    @property
    def count(self) -> int:
        return len(self.hosts)

    def ranks_on(self, node: int) -> list[int]:
        return [r for r, n in enumerate(self.node_of_rank) if n == node]

    def local_size(self, rank: int) -> int:
        return len(self.ranks_on(self.node_of_rank[rank]))

    def describe(self, node: int) -> str:
        ranks = self.ranks_on(node)
        return f"node {node} ({self.hosts[node]}, ranks {ranks[0]}-{ranks[-1]})"

    def report(self) -> str:
        """One line per node: host, ranks, and its clock against rank 0's (a skew shows in timings)."""
        lines = []
        for k in range(self.count):
            ranks = self.ranks_on(k)
            skew = max(abs(self.clock_s[r] - self.clock_s[0]) for r in ranks)
            lines.append(
                f"hpc_rlhf.nodes: node {k}: host {self.hosts[k]}, ranks {ranks[0]}-{ranks[-1]} ({len(ranks)}), "
                f"clock {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.clock_s[ranks[0]]))}, "
                f"|offset to rank 0| <= {skew:.3f} s"
            )
        return "\n".join(lines)


def check_shared_run_dir(comm, run_dir: str, nodes: NodeMap, attempt: str) -> None:
    """Collective: the first rank of each node writes RUN_DIR/.ranks/node_K.token holding this attempt's
    token; rank 0 reads them all. UserError (one line, on every rank) naming the nodes whose token rank 0
    cannot see: RUN_DIR is then node-local on them (or not the same folder), and their files (shards,
    weights, checkpoints) would be invisible to the other nodes."""
    rank, rd = comm.Get_rank(), RunDir(run_dir)
    k = nodes.node_of_rank[rank]
    if nodes.local_rank[rank] == 0:
        os.makedirs(rd.ranks, exist_ok=True)
        with open(rd.node_token(k), "w") as f:
            f.write(f"{attempt} {nodes.hosts[k]}\n")
            f.flush()
            os.fsync(f.fileno())
    comm.Barrier()
    missing = None
    if rank == 0:
        missing = [n for n in range(nodes.count) if _token(rd.node_token(n)) != f"{attempt} {nodes.hosts[n]}"]
    missing = comm.bcast(missing, root=0)
    if missing:
        raise UserError(
            f"RUN_DIR {run_dir} is not one folder shared by every node: rank 0 on {nodes.describe(0)} cannot see "
            f"the files written there by {', '.join(nodes.describe(n) for n in missing)}; put run_dir on a "
            "filesystem all nodes mount (a parallel filesystem or NFS), not a node-local path"
        )


def _token(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def local_device(runtime, nodes: NodeMap, rank: int, comm=None):
    """This rank's torch device from `runtime.device`: on CUDA, the GPU cluster/gpus.py assigns it among the
    devices it sees (GPU <local rank> when every rank sees all of the node's GPUs; its own GPU when the site
    binds one per task), made current (torch.cuda.set_device). Collective over `comm` (default COMM_WORLD)
    on every rank, CPU ranks too. UserError when two ranks of a node would use one device (the same UUID)
    and runtime.allow_shared_gpu is false."""
    import torch

    from hpc_rlhf.cluster.gpus import pick_gpu, visible_uuids
    from hpc_rlhf.models.build import pick_device

    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    device = pick_device(runtime.device, nodes.local_rank[rank])
    mine = visible_uuids() if device.type == "cuda" else []
    index = pick_gpu(comm, nodes, rank, runtime.allow_shared_gpu, mine)
    if device.type != "cuda":
        return device
    device = torch.device("cuda", index)
    torch.cuda.set_device(device)
    return device
