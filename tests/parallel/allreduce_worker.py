"""Run under mpiexec -n N by tests/parallel/test_dp_memory.py: bucketed gradient all-reduce against the sum.

Each rank fills gradients of mixed sizes (some above, some below the bucket size) with values seeded
by (rank, tensor), all-reduces them with DataParallel.allreduce_grads and checks, on every rank, that
each gradient equals the sum over ranks computed here in a plain loop. Exits 0 when all match.
"""

from __future__ import annotations

import sys

import torch
from mpi4py import MPI

from hpc_rlhf.parallel import dp as dpmod
from hpc_rlhf.parallel.dp import DataParallel

SHAPES = [(3, 5), (40,), (7, 30), (2,), (11, 11), (300,), (1,)]


def grad(rank: int, i: int, shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * rank + i)
    return torch.randint(-8, 8, shape, generator=g).float()  # small integers: the sum is exact


def main() -> int:
    dpmod.BUCKET_ELEMS = 100  # buckets of ~100 elements: tensors on their own and packed ones
    comm = MPI.COMM_WORLD
    dp = DataParallel.from_mpi(comm, torch.device("cpu"), 60)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    for i, p in enumerate(params):
        p.grad = grad(dp.rank, i, p.shape)
    params.append(torch.nn.Parameter(torch.zeros(4)))  # no gradient: skipped
    dp.allreduce_grads(params)
    ok = all(torch.equal(p.grad, sum(grad(r, i, p.shape) for r in range(dp.size))) for i, p in enumerate(params[:-1]))
    ok = ok and params[-1].grad is None
    dp.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
