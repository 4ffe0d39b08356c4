"""Heartbeats between the ranks of a run: a rank that dies or stops is named within a timeout, anywhere.

    hb = Heartbeat(run_dir, rank, world, timeout_s=30, on_dead=abort_world, attempt=token)
    hb.start()        # a thread beats into RUN_DIR/.ranks/rank_R.beat and reads every other rank's beat
    hb.stop()         # this rank leaves on purpose (it writes its exit note next)
    hb.wait_verdict() # after lost_peer(error): let the watch name the vanished peer first

Every rank writes a counter to its beat file every timeout/6 s and watches the counters of the others.
A rank whose counter has not moved for `timeout_s` by the watcher's own clock, and which left no exit
note (RUN_DIR/.ranks/rank_R.exit), is dead or stopped (SIGKILL, the OOM killer, SIGSTOP, a lost node):
`on_dead(message)` is called once, with the rank, its role, pid and host. The files live on the run
directory's shared filesystem, so this works across nodes, under Slurm as under the local launcher, with
no clock agreement between nodes (each watcher compares counters against its own clock) and no MPI
traffic (a rank blocked in MPI still beats: its thread runs). NFS's close-to-open consistency makes each
open() of a beat file see the last completed rename.

What it does not see: a rank whose main thread is stuck while its process runs. Those waits are bounded
by `runtime.wait_timeout_s` (Control.wait and the gloo group name what they awaited).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Optional

from hpc_rlhf.cluster.ranks import read_exit
from hpc_rlhf.rundir import RunDir


class Heartbeat:
    def __init__(
        self,
        run_dir: str,
        rank: int,
        world: int,
        timeout_s: float,
        on_dead: Callable[[str], None],
        startup_s: Optional[float] = None,
        attempt: str = "",
    ):
        self.rd, self.rank, self.world, self.timeout_s = RunDir(run_dir), rank, world, timeout_s
        self.on_dead, self.attempt = on_dead, attempt
        self.startup_s = max(timeout_s, 60.0) if startup_s is None else startup_s  # peers still importing torch
        self.interval_s = max(0.05, timeout_s / 6)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.beats = 0
        self.verdict = ""
        self._dead = threading.Event()

    def beat_path(self, rank: int) -> str:
        return self.rd.rank_info(rank)[: -len(".json")] + ".beat"

    def start(self) -> Heartbeat:
        os.makedirs(self.rd.ranks, exist_ok=True)
        self._beat()
        self._thread = threading.Thread(target=self._run, name="hpc_rlhf-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def wait_verdict(self) -> str:
        """Wait (at most the timeout and two beats) for this watch to name a dead or stopped peer; its
        verdict, or "" when none came. For a rank whose collective failed because a peer vanished (see
        lost_peer): the heartbeat then names the peer, its role and host, where the transport error
        names an address at best."""
        self._dead.wait(self.timeout_s + 2 * self.interval_s)
        return self.verdict

    def _beat(self) -> None:
        self.beats += 1
        path = self.beat_path(self.rank)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{self.attempt or '-'} {self.beats}\n")
        os.replace(tmp, path)  # no fsync: only liveness, never durability

    def _read(self, rank: int) -> Optional[str]:
        """The beat counter of `rank` in this attempt (None: not beating yet, or a previous attempt's file)."""
        try:
            with open(self.beat_path(rank)) as f:
                parts = f.read().split()
        except OSError:
            return None
        if len(parts) != 2 or parts[0] != (self.attempt or "-"):
            return None
        return parts[1]

    def _left(self, rank: int) -> bool:
        """`rank` wrote its exit note in this attempt (it left, or failed and aborts the world itself)."""
        note = read_exit(self.rd.root, rank)
        return note is not None and (not self.attempt or note[1] == self.attempt)

    def _run(self) -> None:
        t0 = time.monotonic()
        seen: dict[int, tuple[Optional[str], float]] = {r: (None, t0) for r in range(self.world) if r != self.rank}
        while not self._stop.wait(self.interval_s):
            try:
                self._beat()
            except OSError:
                pass  # a filesystem hiccup; the next beat tries again
            now = time.monotonic()
            for r, (last, since) in list(seen.items()):
                if self._left(r):
                    del seen[r]  # it left on purpose (or failed and is aborting the world itself)
                    continue
                cur = self._read(r)
                if cur != last:
                    seen[r] = (cur, now)
                    continue
                limit = self.timeout_s if last is not None else self.startup_s
                if now - since > limit and not self._stop.is_set():
                    self.verdict = self._describe(r, now - since, last is None)
                    self._dead.set()
                    self.on_dead(self.verdict)
                    return

    def _describe(self, rank: int, silent_s: float, never: bool) -> str:
        try:
            with open(self.rd.rank_info(rank)) as f:
                i = json.load(f)
            who = f"rank {rank} ({i['role']} #{i['index']}, pid {i['pid']} on {i['host']})"
        except (OSError, ValueError, KeyError):
            who = f"rank {rank}"
        if never:
            return f"{who} never sent a heartbeat in {silent_s:.0f} s (it did not start?)"
        return (
            f"{who} sent no heartbeat for {silent_s:.0f} s (killed, stopped or its node lost; "
            f"runtime.heartbeat_timeout_s={self.timeout_s:g})"
        )


# What torch.distributed's transports say when the rank at the other end of a connection vanished.
_PEER_LOSS = ("connection reset by peer", "connection closed by peer", "broken pipe", "remote process exited")


def lost_peer(e: BaseException) -> bool:
    """`e` says a peer of a collective vanished (gloo/NCCL), not what failed here."""
    text = f"{type(e).__name__} {e}".lower()
    return type(e).__name__ in ("DistNetworkError",) or any(p in text for p in _PEER_LOSS)
