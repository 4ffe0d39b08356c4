"""The control plane: small MPI messages announcing shards, policy versions, stops; waits with timeouts.

Messages (all small pickled tuples; rollout data itself only ever travels through shard files):
    SHARD    generator -> its scorer      (step, shard, path, seconds)
    SCORED   scorer    -> every trainer   (step, shard, path, seconds)
    CTRL     trainer 0 -> gen/score ranks ("weights", version, path) | ("stop", step) | ("done", step)
                                          | to generators ("refill", step, round) (algo.dynamic_sampling)
    STOPREQ  any rank  -> trainer 0       (rank, why): this rank saw a stop signal
    EVAL     generator -> trainer 0       (version, eval shard, path): an eval shard written (eval.every)
    BYE      at the end: "nothing more comes from me" (see Control.finish)

MPI keeps messages between one pair of ranks on one tag in order, and each receiver knows from the
plan exactly which message comes next, so processing order never depends on timing. Every wait
polls with a short back-off (no filesystem polling), forwards a local stop signal once, and raises
RankTimeout naming what it waited for, from whom, after `timeout_s`.

At the end of a run or a stop, messages may still be in flight: a STOPREQ sent while trainer 0 was
already stopping, shards generated ahead with max_policy_lag > 0. MPI requires every message to be
received before MPI_Finalize. When the stop signal reached every rank (measured with MPICH 5.0.2,
3 ranks, a loaded machine), trainer 0 left with a STOPREQ unreceived, and the generator and scorer
then hung in MPI_Finalize in about half of the stops. So every rank ends with `finish()`: it sends
BYE to each rank it ever sends to, then receives everything from each rank that sends to it until that
rank's BYE. A sender's messages to one receiver arrive in order, so nothing is left in flight.
"""

from __future__ import annotations

import time
from typing import Any

from hpc_rlhf.cluster.topology import Topology
from hpc_rlhf.errors import RankTimeout

SHARD, SCORED, CTRL, STOPREQ, BYE, EVAL = 11, 12, 13, 14, 15, 16


class Stopped(Exception):
    """Trainer 0 ordered a stop (after checkpointing) while this rank was waiting."""

    def __init__(self, step: int):
        super().__init__(f"stop after step {step}")
        self.step = step


class Control:
    def __init__(self, comm, topo: Topology, timeout_s: float, stop_flag):
        self.comm, self.topo, self.timeout_s, self.stop_flag = comm, topo, timeout_s, stop_flag
        self.rank = comm.Get_rank()
        self.stop_forwarded = False

    def send(self, dest: int, tag: int, msg: Any) -> None:
        self.comm.send(msg, dest=dest, tag=tag)

    def forward_stop(self) -> None:
        """Tell trainer 0 (once) that this rank received a stop signal."""
        if self.stop_flag.is_set() and not self.stop_forwarded:
            self.stop_forwarded = True
            if self.rank != self.topo.trainer0:
                self.comm.send((self.rank, self.stop_flag.why), dest=self.topo.trainer0, tag=STOPREQ)

    def wait(self, source: int, tag: int, what: str, ctrl_verbs: tuple[str, ...] = ()) -> Any:
        """Receive the next `tag` message from `source`. A CTRL stop from trainer 0 raises Stopped; a CTRL
        message whose verb is in `ctrl_verbs` is returned instead."""
        start = time.monotonic()
        delay = 0.0005
        watch_ctrl = tag != CTRL and source != self.topo.trainer0 and not self.topo.is_trainer(self.rank)
        while True:
            if self.comm.Iprobe(source=source, tag=tag):
                return self.comm.recv(source=source, tag=tag)
            if watch_ctrl and self.comm.Iprobe(source=self.topo.trainer0, tag=CTRL):
                msg = self.comm.recv(source=self.topo.trainer0, tag=CTRL)
                if msg[0] == "stop":
                    raise Stopped(msg[1])
                if msg[0] in ctrl_verbs:
                    return msg
                raise RuntimeError(f"rank {self.rank}: unexpected control message {msg!r} while waiting for {what}")
            self.forward_stop()
            waited = time.monotonic() - start
            if waited > self.timeout_s:
                raise RankTimeout(
                    f"rank {self.rank} ({self.topo.describe(self.rank)}) waited {waited:.0f} s for {what} "
                    f"from rank {source} ({self.topo.describe(source)}); raise runtime.wait_timeout_s if that rank is just slow"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.002)

    def stop_requests(self) -> list[tuple[int, str]]:
        """Trainer 0: drain STOPREQ messages received so far."""
        out = []
        while self.comm.Iprobe(tag=STOPREQ):
            out.append(self.comm.recv(tag=STOPREQ))
        return out

    # -- the end ------------------------------------------------------------------------------------
    def finish(self, shards_per_step: int) -> None:
        """After the run's final verdict: BYE to every rank this one sends to, then drain each rank
        that sends to this one up to its BYE (see the module doc). Raises RankTimeout after timeout_s."""
        from mpi4py import MPI

        links = message_links(self.topo, shards_per_step)
        for dest in sorted({d for s, d in links if s == self.rank}):
            self.comm.send(None, dest=dest, tag=BYE)
        for src in sorted({s for s, d in links if d == self.rank}):
            start, delay = time.monotonic(), 0.0005
            status = MPI.Status()
            while True:
                if self.comm.Iprobe(source=src, tag=MPI.ANY_TAG, status=status):
                    self.comm.recv(source=src, tag=status.Get_tag())  # in order: this drains up to BYE
                    if status.Get_tag() == BYE:
                        break
                    continue
                if time.monotonic() - start > self.timeout_s:
                    raise RankTimeout(
                        f"rank {self.rank} ({self.topo.describe(self.rank)}) waited {self.timeout_s:.0f} s for the "
                        f"end-of-run message from rank {src} ({self.topo.describe(src)})"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.002)


def message_links(topo: Topology, shards_per_step: int) -> set[tuple[int, int]]:
    """Every (sender, receiver) pair of the control plane."""
    links = set()
    t0 = topo.trainer0
    for j in range(shards_per_step):
        links.add((topo.generator_rank(j), topo.scorer_rank(j)))  # SHARD
    for s in topo.score:
        links.update((s, t) for t in topo.train)  # SCORED
    for r in range(topo.world_size):
        if r != t0:
            links.add((r, t0))  # STOPREQ
            if not topo.is_trainer(r):
                links.add((t0, r))  # CTRL
    return links
