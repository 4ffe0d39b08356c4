"""The Slurm tests need the dev cluster (tools/slurm/dev_cluster.sh install && tools/slurm/dev_cluster.sh start
--nodes 2); the multi-node ones (fixture `two_nodes`) need at least two nodes.

Without it they skip, except in CI (CI set): there `sinfo` failing (or a cluster of one node) fails the
test, since .ci/slurm_setup.sh must have started the 2-node cluster.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import in_ci


def _sinfo_ok() -> tuple[bool, str]:
    if shutil.which("sinfo") is None:
        return False, "sinfo is not installed"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%P %a %T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, "sinfo timed out"
    if r.returncode != 0:
        return False, f"sinfo failed: {(r.stderr or r.stdout).strip()}"
    return True, r.stdout.strip()


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The dev cluster is reachable; FAILS in CI when it is not, skips otherwise."""
    ok, detail = _sinfo_ok()
    if not ok:
        msg = f"the dev Slurm cluster is not reachable ({detail}); start it: tools/slurm/dev_cluster.sh start"
        if in_ci():
            pytest.fail(f"CI: {msg} (.ci/slurm_setup.sh should have)")
        pytest.skip(msg)
    return detail


@pytest.fixture(scope="session")
def two_nodes(slurm_cluster: str) -> int:
    """The dev cluster has >= 2 nodes (their count); FAILS in CI when it has one, skips otherwise."""
    r = subprocess.run(["sinfo", "-h", "-N", "-p", "low", "-o", "%N"], capture_output=True, text=True, timeout=20)
    count = len(set(r.stdout.split()))
    if count < 2:
        msg = f"the dev Slurm cluster has {count} node(s); start 2: tools/slurm/dev_cluster.sh start --nodes 2"
        if in_ci():
            pytest.fail(f"CI: {msg} (.ci/slurm_setup.sh should have)")
        pytest.skip(msg)
    return count


@pytest.fixture
def jobs():
    """Job ids a test started; any still alive at the end is cancelled."""
    ids: list[str] = []
    yield ids
    for j in ids:
        subprocess.run(["scancel", str(j)], capture_output=True, timeout=30)
