"""The Slurm tests need the dev cluster (tools/slurm/dev_cluster.sh install && tools/slurm/dev_cluster.sh start).

Without it they skip, except in CI (CI set): there `sinfo` failing fails the test, since .ci/slurm_setup.sh
must have started the cluster.
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
