"""Heartbeats (hpc_rlhf/cluster/heartbeat.py) between real processes: a killed or stopped one is named in
time by every other, one that leaves with an exit note is not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hpc_rlhf.rundir import RunDir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 1.5

MEMBER = textwrap.dedent(
    """
    import json, os, sys, time
    from hpc_rlhf.cluster.heartbeat import Heartbeat
    from hpc_rlhf.rundir import RunDir
    run_dir, rank, world, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    attempt = sys.argv[5]
    rd = RunDir(run_dir)
    with open(rd.rank_info(rank), "w") as f:
        json.dump({"rank": rank, "role": "score", "index": rank, "pid": os.getpid(), "host": "h"}, f)
    t0 = time.monotonic()
    hb = Heartbeat(
        run_dir, rank, world, timeout, lambda m: print(f"DEAD {time.monotonic() - t0:.2f} {m}", flush=True), attempt=attempt
    )
    hb.start()
    print("UP", flush=True)
    line = sys.stdin.readline()
    if not line.startswith("leave"):
        time.sleep(4 * timeout)
    hb.stop()
    open(rd.rank_exit(rank), "w").write(f"0 {attempt}\\n")
    time.sleep(2 * timeout)
    """
)


def _group(run_dir, world=3, attempt="a1"):
    os.makedirs(RunDir(str(run_dir)).ranks, exist_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MEMBER, str(run_dir), str(r), str(world), str(TIMEOUT), attempt],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for r in range(world)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "UP"
    return procs


def _finish(procs, skip=()):
    live = {r: p for r, p in enumerate(procs) if r not in skip}
    for p in live.values():
        p.stdin.write("\n")
        p.stdin.flush()
    return {r: p.communicate(timeout=30)[0] for r, p in live.items()}


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP])
def test_a_killed_or_stopped_rank_is_named_by_every_other_within_the_timeout(tmp_path, how):
    procs = _group(tmp_path)
    time.sleep(0.5)
    os.kill(procs[1].pid, how)
    try:
        outs = _finish(procs, skip={1})
    finally:
        procs[1].kill()
        procs[1].wait()
    for r in (0, 2):
        dead = [ln for ln in outs[r].splitlines() if ln.startswith("DEAD")]
        assert len(dead) == 1, outs[r]
        assert f"rank 1 (score #1, pid {procs[1].pid} on h) sent no heartbeat" in dead[0]
        assert float(dead[0].split()[1]) < 6.0  # start-up skew + 0.5 s + the timeout + a beat or two


def test_a_rank_that_leaves_with_an_exit_note_is_not_named(tmp_path):
    procs = _group(tmp_path)
    procs[1].stdin.write("leave\n")
    procs[1].stdin.flush()
    time.sleep(0.3)
    outs = _finish(procs)
    assert not any("DEAD" in o for o in outs.values()), outs
    assert json.load(open(RunDir(str(tmp_path)).rank_info(1)))["rank"] == 1


def test_notes_of_a_previous_attempt_do_not_hide_a_dead_rank(tmp_path):
    """A requeued job finds the exit notes and beat files of its previous attempt in RUN_DIR/.ranks."""
    rd = RunDir(str(tmp_path))
    os.makedirs(rd.ranks)
    open(rd.rank_exit(1), "w").write("75 old\n")  # rank 1 left the previous attempt on purpose
    open(rd.rank_info(1)[: -len(".json")] + ".beat", "w").write("old 99\n")
    procs = _group(tmp_path, attempt="new")
    time.sleep(0.5)
    os.kill(procs[1].pid, signal.SIGKILL)
    procs[1].wait()
    outs = _finish(procs, skip={1})
    for r in (0, 2):
        assert f"rank 1 (score #1, pid {procs[1].pid} on h) sent no heartbeat" in outs[r], outs[r]
