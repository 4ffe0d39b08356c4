"""Which GPU each rank of a node takes, however the site binds GPUs to tasks, and two ranks on one device refused.

    mine = visible_uuids()                                   # the device query: UUIDs of the GPUs this rank sees
    index = pick_gpu(comm, nodes, rank, allow_shared, mine)  # collective: this rank's index into its own devices

A site binds GPUs in one of four ways: every task sees all GPUs of its node (`--gpus-per-node`, the plain case);
each task sees its own (`--gpus-per-task=1`); `--gpu-bind=...` maps tasks to devices; or a prolog or wrapper sets
CUDA_VISIBLE_DEVICES per task. A count of visible GPUs cannot tell these apart (with per-task binding every rank
sees 1 GPU, shared or not), so each rank lists the UUIDs of the devices it sees and the ranks of a node compare
them (`assign`, pure): in local-rank order each rank takes the first device of its own list that no lower rank
of the node took. With all GPUs visible to all ranks that is GPU `local rank`; with one GPU per task, the task's
GPU. When a rank finds every device of its list taken, two ranks would use one device (the same UUID): a
UserError naming both ranks and the UUID, unless runtime.allow_shared_gpu (then the ranks spread over the
devices they see). A CPU rank lists nothing and takes part in the exchange all the same (no rank waits alone).
"""

from __future__ import annotations

from hpc_rlhf.errors import UserError


def visible_uuids() -> list[str]:
    """UUIDs of the CUDA devices this process sees, in torch's index order (the one seam of the GPU tests)."""
    import torch

    return [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]


def assign(lists: list[list[str]]) -> tuple[list[int], dict[str, list[int]]]:
    """For a node's ranks (local-rank order) and the UUIDs each sees: each rank's index into its own list, and
    {uuid: [local ranks]} for every device that more than one rank would use. A rank with an empty list (CPU)
    gets -1. Pure."""
    taken: dict[str, list[int]] = {}
    picks = []
    for local, seen in enumerate(lists):
        if not seen:
            picks.append(-1)
            continue
        free = [i for i, u in enumerate(seen) if u not in taken]
        i = free[0] if free else local % len(seen)  # none free: it must share; spread over what it sees
        taken.setdefault(seen[i], []).append(local)
        picks.append(i)
    return picks, {u: ranks for u, ranks in taken.items() if len(ranks) > 1}


def pick_gpu(comm, nodes, rank: int, allow_shared: bool, mine: list[str]) -> int:
    """Collective over `comm` (the world the NodeMap `nodes` was gathered on): this rank's index into `mine`
    (-1 when it is empty). UserError (one line, on every rank of the node) when two ranks of a node would use
    one device and `allow_shared` is false."""
    rows = comm.allgather(list(mine))
    node = nodes.node_of_rank[rank]
    ranks = nodes.ranks_on(node)  # world ranks of this node, in local-rank order
    picks, shared = assign([rows[r] for r in ranks])
    if shared and not allow_shared:
        uuid, local = next(iter(shared.items()))
        who = " and ".join(f"rank {ranks[x]}" for x in local)
        raise UserError(
            f"{nodes.describe(node)}: {who} would use the same GPU ({uuid}), sharing its memory and time; give each "
            "rank its own GPU (slurm.gpus_per_node >= tasks per node, or a site binding of one GPU per task) or "
            "set runtime.allow_shared_gpu=true"
        )
    return picks[nodes.local_rank[rank]]
