"""The run-directory lease (hpc_rlhf/launch/lease.py) with real processes: refusal, takeover, races."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hpc_rlhf.errors import UserError
from hpc_rlhf.launch.lease import acquire, owner
from hpc_rlhf.rundir import RunDir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HOLDER = textwrap.dedent(
    """
    import sys, time
    from hpc_rlhf.launch.lease import acquire
    lease = acquire(sys.argv[1], "train", ttl_s=float(sys.argv[2]))
    lease.start_renewing(lambda msg: print("LOST", msg, flush=True))
    print("HELD", flush=True)
    time.sleep(600)
    """
)


def _holder(run_dir, ttl=60.0) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir), str(ttl)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert p.stdout.readline().strip() == "HELD"
    return p


def test_a_live_owner_is_named_and_a_released_lease_is_free(tmp_path):
    p = _holder(tmp_path)
    try:
        t0 = time.monotonic()
        with pytest.raises(UserError) as e:
            acquire(str(tmp_path), "resume")
        msg = str(e.value)
        assert len(msg.splitlines()) == 1 and f"pid {p.pid} on {os.uname().nodename}" in msg
        assert "hpc-rlhf train" in msg and time.monotonic() - t0 < 5
    finally:
        p.kill()
        p.wait()
    lease = acquire(str(tmp_path), "resume")  # its owner is gone (same host): taken over at once
    assert owner(str(tmp_path))["pid"] == os.getpid()
    lease.release()
    assert owner(str(tmp_path)) is None
    acquire(str(tmp_path), "train").release()


def _plant(run_dir, **fields) -> None:
    body = {
        "token": "x" * 32,
        "host": "another-node",
        "pid": 1,
        "command": "train",
        "renewed_unix": time.time(),
        "ttl_s": 60,
        "beat": 3,
        **fields,
    }
    with open(RunDir(str(run_dir)).owner, "w") as f:
        json.dump(body, f)


def test_a_lease_of_another_host_blocks_until_it_expires(tmp_path):
    _plant(tmp_path, renewed_unix=time.time() - 50)
    with pytest.raises(UserError, match="another-node"):
        acquire(str(tmp_path), "resume")
    _plant(tmp_path, renewed_unix=time.time() - 61)
    lease = acquire(str(tmp_path), "resume")
    assert owner(str(tmp_path))["token"] == lease.token


def _squeue_says(tmp_path, monkeypatch, script: str) -> None:
    """squeue, the seam through which the lease learns a Slurm job's state, answering as `script` does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (("squeue", script), ("sacct", "exit 0")):  # sacct: accounting off
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_requeued_slurm_job_takes_over_its_own_lease(tmp_path, monkeypatch):
    _squeue_says(tmp_path, monkeypatch, "echo RUNNING")
    _plant(tmp_path, slurm_job_id="77")
    with pytest.raises(UserError, match="Slurm job 77"):
        acquire(str(tmp_path), "slurm", slurm_job_id="78")
    assert acquire(str(tmp_path), "slurm", slurm_job_id="77").body["slurm_job_id"] == "77"


@pytest.mark.parametrize(
    "squeue", ["echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1", "exit 0", "echo FAILED"]
)
def test_the_lease_of_an_ended_slurm_job_is_taken_over_at_once(tmp_path, monkeypatch, squeue):
    _plant(tmp_path, slurm_job_id="77")  # renewed a moment ago: a live job's lease would hold for 60 s
    _squeue_says(tmp_path, monkeypatch, squeue)
    lease = acquire(str(tmp_path), "resume")
    assert owner(str(tmp_path))["token"] == lease.token


def test_no_verdict_from_a_failing_squeue_keeps_the_lease(tmp_path, monkeypatch):
    _plant(tmp_path, slurm_job_id="77")
    _squeue_says(tmp_path, monkeypatch, "echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1")
    with pytest.raises(UserError, match="Slurm job 77"):
        acquire(str(tmp_path), "resume")


def test_renewal_keeps_it_fresh_and_notices_a_lost_lease(tmp_path):
    lease = acquire(str(tmp_path), "train", ttl_s=0.4)
    lost = []
    lease.start_renewing(lost.append)
    time.sleep(0.5)
    assert owner(str(tmp_path))["beat"] >= 2 and owner(str(tmp_path))["age_s"] < 0.4
    _plant(tmp_path, renewed_unix=time.time())  # somebody else's lease replaces ours
    time.sleep(0.4)
    assert lost and "lost the ownership" in lost[0]
    lease.release()  # not ours any more: left in place
    assert owner(str(tmp_path))["host"] == "another-node"


RACER = textwrap.dedent(
    """
    import sys, time
    from hpc_rlhf.errors import UserError
    from hpc_rlhf.launch.lease import acquire
    while time.time() < float(sys.argv[2]):
        pass
    try:
        acquire(sys.argv[1], "resume")
        print("WON", flush=True)
        time.sleep(3)
    except UserError:
        print("REFUSED", flush=True)
    """
)


@pytest.mark.parametrize("stale", [False, True])
def test_of_racing_starters_exactly_one_wins(tmp_path, stale):
    if stale:
        _plant(tmp_path, renewed_unix=time.time() - 100)
    go = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path), str(go)], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outs) == ["REFUSED"] * 3 + ["WON"], outs


def test_sigkilled_owner_with_live_ranks_is_not_taken_over_before_expiry(tmp_path):
    """Ranks of the run that still live on this host keep the lease until it expires."""
    rank = subprocess.Popen(["sleep", "60"])
    try:
        rd = RunDir(str(tmp_path))
        os.makedirs(rd.ranks)
        with open(rd.rank_info(0), "w") as f:
            json.dump({"rank": 0, "pid": rank.pid, "host": os.uname().nodename}, f)
        p = _holder(tmp_path)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        with pytest.raises(UserError, match="in use"):
            acquire(str(tmp_path), "resume")
    finally:
        rank.kill()
        rank.wait()
    acquire(str(tmp_path), "resume")


def test_an_owner_killed_together_with_its_ranks_is_taken_over_at_once(tmp_path):
    """As on a node crash seen from the same host: the launcher and every rank gone (SIGKILL)."""
    rank = subprocess.Popen(["sleep", "60"])
    rd = RunDir(str(tmp_path))
    os.makedirs(rd.ranks)
    with open(rd.rank_info(0), "w") as f:
        json.dump({"rank": 0, "pid": rank.pid, "host": os.uname().nodename}, f)
    p = _holder(tmp_path)
    for proc in (p, rank):
        proc.kill()
        proc.wait()
    t0 = time.monotonic()
    lease = acquire(str(tmp_path), "resume")
    assert time.monotonic() - t0 < 2 and owner(str(tmp_path))["token"] == lease.token
