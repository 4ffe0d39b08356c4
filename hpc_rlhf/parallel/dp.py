"""Data parallelism of the train group with torch.distributed, initialised from its MPI communicator.

    dp = DataParallel.from_mpi(train_comm, device, timeout_s, rt.rendezvous_addr, rt.rendezvous_port)
                                                       # gloo on CPU, NCCL on GPU; a no-op for 1 rank
    dp.allreduce_grads(model.parameters())            # SUM all-reduce, in place, in 16 MiB buckets

Losses are normalised by the global token count, so the SUM of gradients over ranks equals the
single-rank gradient (see docs/algorithms.md).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from datetime import timedelta

import torch
import torch.distributed as tdist

from hpc_rlhf.cluster.rendezvous import rendezvous_host
from hpc_rlhf.errors import UserError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


BUCKET_ELEMS = 1 << 22  # 16 MiB of fp32 gradients per all-reduce bucket


def _reduce_flat(grads: list[torch.Tensor]) -> None:
    """One SUM all-reduce of `grads` packed into a flat buffer, copied back."""
    flat = torch.cat([g.reshape(-1) for g in grads])
    tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
    off = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[off : off + n].view_as(g))
        off += n


class DataParallel:
    def __init__(self, rank: int, size: int, group=None):
        self.rank, self.size, self.group = rank, size, group

    @classmethod
    def from_mpi(
        cls, comm, device: torch.device, timeout_s: float = 600.0, addr: str = "", port: int = 0
    ) -> DataParallel:
        """comm: the train group's mpi4py communicator (or None for a single trainer). The rendezvous is
        the first trainer's `addr`:`port` (runtime.rendezvous_addr/_port): "" = the address its host name
        resolves to (refused when that is loopback and the trainers span hosts: cluster/rendezvous.py), 0 = a
        free port it picks; it tells the others over MPI."""
        if comm is None or comm.Get_size() == 1:
            return cls(0, 1)
        rank, size = comm.Get_rank(), comm.Get_size()
        hosts = comm.allgather(socket.gethostname())
        url = None
        if rank == 0:
            try:
                url = f"tcp://{rendezvous_host(addr, hosts)}:{port or _free_port()}"
            except UserError as e:
                url = f"error {e}"  # every trainer raises the same one line
        url = comm.bcast(url, root=0)
        if url.startswith("error "):
            raise UserError(url[len("error ") :])
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not tdist.is_initialized():
            tdist.init_process_group(
                backend, init_method=url, rank=rank, world_size=size, timeout=timedelta(seconds=timeout_s)
            )
        return cls(rank, size)

    def allreduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """SUM-all-reduce the gradients in place: a gradient of at least BUCKET_ELEMS elements on its
        own, smaller ones packed into flat buckets of about that size (never one flat copy of all
        the gradients: that would cost a second full gradient's memory)."""
        if self.size == 1:
            return
        bucket: list[torch.Tensor] = []
        n = 0
        for g in (p.grad for p in params if p.grad is not None):
            if g.numel() >= BUCKET_ELEMS and g.is_contiguous():
                tdist.all_reduce(g, op=tdist.ReduceOp.SUM)
                continue
            bucket.append(g)
            n += g.numel()
            if n >= BUCKET_ELEMS:
                _reduce_flat(bucket)
                bucket, n = [], 0
        if bucket:
            _reduce_flat(bucket)

    def allreduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def all_gather_rows(self, local: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Concatenate each rank's (counts[r], ...) rows in rank order."""
        if self.size == 1:
            return local
        m = max(counts)
        pad = torch.zeros((m - local.shape[0], *local.shape[1:]), dtype=local.dtype, device=local.device)
        bufs = [torch.empty((m, *local.shape[1:]), dtype=local.dtype, device=local.device) for _ in counts]
        tdist.all_gather(bufs, torch.cat([local, pad]))
        return torch.cat([b[:c] for b, c in zip(bufs, counts)])

    def all_gather_bytes(self, data: bytes, device, width: int = 1024) -> list[bytes]:
        """Every rank's `data` (at most `width` bytes; longer is cut), in rank order: a tensor
        all-gather (no pickle), e.g. the sha256 and size of each rank's checkpoint file."""
        if self.size == 1:
            return [data[:width]]
        buf = torch.zeros(width + 8, dtype=torch.uint8)
        n = min(len(data), width)
        buf[:8] = torch.tensor(list(n.to_bytes(8, "little")), dtype=torch.uint8)
        if n:
            buf[8 : 8 + n] = torch.frombuffer(bytearray(data[:n]), dtype=torch.uint8)
        buf = buf.to(device)
        bufs = [torch.empty_like(buf) for _ in range(self.size)]
        tdist.all_gather(bufs, buf)
        out = []
        for b in bufs:
            raw = bytes(b.cpu().tolist())
            out.append(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
        return out

    def close(self) -> None:
        if self.size > 1 and tdist.is_initialized():
            tdist.destroy_process_group()
