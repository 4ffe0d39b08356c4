"""What the train ranks hold, kept small: the gradient all-reduce in buckets (no flat copy of every
gradient), the policy versions (none on a non-lead rank; with max_policy_lag=0 the live tensors, no
copy), glibc's fixed mmap threshold. The memory itself is measured by tools/bench/memory.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from hpc_rlhf.runtime.malloc import return_freed_memory
from hpc_rlhf.weights.publish import cpu_state
from hpc_rlhf.weights.versions import PolicyVersions
from tests.conftest import REPO


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_bucketed_allreduce_sums_every_gradient(mpiexec, ranks):
    worker = os.path.join(REPO, "tests", "parallel", "allreduce_worker.py")
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run(
        [mpiexec, "-n", str(ranks), sys.executable, worker], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_versions_hold_live_tensors_with_no_lag_and_nothing_off_the_lead(tmp_path):
    model = torch.nn.Linear(3, 2)
    lead = PolicyVersions(str(tmp_path), 0, publish_files=True, hold=True)
    lead.keep(0, cpu_state(model, copy=False))
    with torch.no_grad():
        model.weight.add_(1.0)  # the update: the held version is the live policy
    assert lead[0]["weight"].data_ptr() == model.weight.data_ptr()
    lead.add(1, cpu_state(model, copy=False))
    assert list(lead.recent) == [1] and os.path.exists(lead.publish_initial(1)[0][1])
    other = PolicyVersions(str(tmp_path), 1, publish_files=False, hold=False)
    other.keep(0, cpu_state(model))
    assert other.add(1, cpu_state(model)).endswith(".safetensors") and not other.recent
    lagged = PolicyVersions(str(tmp_path), 1, publish_files=False)
    for v in range(4):
        lagged.add(v, cpu_state(model))
    assert list(lagged.recent) == [2, 3]  # k + 1 versions


def test_fixed_mmap_threshold_returns_freed_tensors():
    """Tensors freed between live ones (holes an arena could not trim) leave the resident set."""
    assert return_freed_memory()  # glibc (CI's Linux)

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024

    for _ in range(2):  # the second round is the one glibc's own threshold would serve from an arena
        ts = [torch.ones(1 << 20) for _ in range(64)]  # 64 x 4 MiB
        full = rss_mib()
        del ts[::2]
        assert full - rss_mib() > 100  # 128 MiB freed
        del ts
