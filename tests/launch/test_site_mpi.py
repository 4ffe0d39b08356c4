"""The site's MPI: the srun plugin `slurm.mpi_plugin` resolves to (auto, or a plugin checked against what srun
offers and what the MPI speaks), refused at submit in one line; `hpc-rlhf mpi`; Open MPI's mpiexec running a
job locally that ends bit-identical to MPICH's (the Open MPI venv of .ci/openmpi_env.sh: mpi4py compiled
against Debian's Open MPI). The 2-node Open MPI job through `srun --mpi=pmix` is in
tests/launch/slurm/test_open_mpi_slurm.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from hpc_rlhf.cluster.mpi_lib import MpiLibrary, family_of
from hpc_rlhf.config import load_config
from hpc_rlhf.errors import ConfigError
from hpc_rlhf.launch import site_mpi, slurm_submit
from tests.conftest import REPO, TINY, cli, kr, need

OPEN_MPI = "Open MPI v4.1.4, package: Debian OpenMPI, ident: 4.1.4, repo rev: v4.1.4, May 26, 2022"
MPICH = "MPICH Version:      5.0.2\nMPICH configure:    --with-device=ch4:ucx,ofi --with-pm=hydra:gforker\n"
LISTED = ["pmix", "none", "cray_shasta", "pmi2", "pmix_v4"]  # Debian 12's srun --mpi=list


def lib(version: str) -> MpiLibrary:
    return MpiLibrary(family_of(version), version, ("/x/libmpi.so",), "4.1.2 (/x)")


def ompi_python() -> str:
    return os.environ.get("HPC_RLHF_OMPI_PYTHON", os.path.join(REPO, ".venv-ompi", "bin", "python"))


@pytest.mark.parametrize(
    "requested, version, listed, want",
    [
        ("auto", MPICH, LISTED, "pmi2"),
        ("auto", OPEN_MPI, LISTED, "pmix"),
        ("auto", OPEN_MPI, None, "pmix"),  # no srun here (a dry run on a laptop): the library decides
        ("auto", MPICH.replace("hydra", "hydra --with-pmix"), ["pmix"], "pmix"),  # an MPICH built with PMIx
        ("pmix_v4", OPEN_MPI, LISTED, "pmix_v4"),
        ("pmi2", MPICH, LISTED, "pmi2"),
        ("auto", "Some MPI 1.0", ["pmi2"], "pmi2"),  # unknown library: srun's offer
        ("auto", OPEN_MPI, ["pmi2", "none"], "slurm.mpi_plugin=auto: mpi4py runs on Open MPI v4.1.4, which needs"),
        ("pmi2", OPEN_MPI, LISTED, "slurm.mpi_plugin=pmi2 cannot wire up Open MPI v4.1.4"),
        ("pmix", MPICH, LISTED, "slurm.mpi_plugin=pmix cannot wire up MPICH 5.0.2"),
        ("pmi5", MPICH, LISTED, "slurm.mpi_plugin=pmi5: srun --mpi=list offers only pmix, none"),
        ("none", MPICH, LISTED, "slurm.mpi_plugin=none gives MPI no wire-up"),
    ],
)
def test_the_plugin_auto_picks_and_the_mismatches_refused(requested, version, listed, want):
    if want.startswith("slurm.mpi_plugin"):
        with pytest.raises(ConfigError) as e:
            site_mpi.choose_plugin(requested, lib(version), listed)
        assert str(e.value).startswith(want) and "\n" not in str(e.value), str(e.value)
    else:
        assert site_mpi.choose_plugin(requested, lib(version), listed) == want


def test_submit_refuses_a_plugin_mismatch_in_one_line_before_anything_is_written(tmp_path):
    """This Python's MPICH needs pmi2: pmix is refused at submit (--dry-run too), exit 2, one line, no run dir;
    a plugin srun does not list is refused where srun is installed."""
    run_dir = tmp_path / "run"
    r = cli("submit", TINY, f"run_dir={run_dir}", "slurm.mpi_plugin=pmix", "--dry-run", check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: slurm.mpi_plugin=pmix cannot wire up MPICH"), r.stderr
    r = cli("submit", TINY, f"run_dir={run_dir}", "slurm.mpi_plugin=pmix", check=False)
    assert r.returncode == 2 and "cannot wire up MPICH" in r.stderr and not run_dir.exists(), r.stderr
    if shutil.which("srun"):
        cfg = load_config(TINY, [f"run_dir={run_dir}", "slurm.mpi_plugin=pmi9"])
        with pytest.raises(ConfigError, match=r"^slurm.mpi_plugin=pmi9: srun --mpi=list offers only .*pmi2"):
            slurm_submit.submit(cfg, TINY, dry_run=True)
        assert not run_dir.exists()


def test_hpc_rlhf_mpi_names_the_library(mpiexec):
    out = cli("mpi").stdout
    assert out.startswith("MPI library: MPICH ") and "libmpi.so.12" in out, out
    assert f"local launcher: {mpiexec} (MPICH)" in out, out


@pytest.fixture(scope="session")
def ompi() -> str:
    py = ompi_python()
    need(os.path.exists(py) and os.path.exists("/usr/bin/mpiexec"), "the Open MPI venv (bash .ci/openmpi_env.sh)")
    return py


def run_ompi(ompi: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ompi, "-m", "hpc_rlhf.launch.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.mpi
def test_open_mpi_locally_ends_bit_identical_to_mpich(ompi, train_args, reference, tmp_path):
    """The fault tests' run (1+1+1 ranks, 20 steps) under Debian's Open MPI mpiexec, as root, 3 ranks on a
    machine of 2 cores: the launcher passes --oversubscribe and --allow-run-as-root; the final policy equals
    the MPICH run's."""
    out = run_ompi(ompi, "mpi", "--mpiexec", "/usr/bin/mpiexec").stdout
    assert out.startswith("MPI library: Open MPI v") and "libmpi.so.40" in out, out
    assert "local launcher: /usr/bin/mpiexec (Open MPI) --oversubscribe" in out, out
    run = tmp_path / "ompi"
    r = run_ompi(ompi, "train", *train_args, f"run_dir={run}", "runtime.mpiexec=/usr/bin/mpiexec")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert kr.final_sha(str(run)) == reference


def test_a_mixed_mpi_build_or_launcher_is_refused_in_one_line(ompi, tmp_path):
    """mpi4py built against Open MPI with MPICH's libmpi loaded too (what a base Python holding the `mpich`
    wheel did to such a build), and Open MPI's mpiexec for an mpi4py on MPICH: one line, exit 2."""
    mpich_lib = os.path.join(sys.base_prefix, "lib", "libmpi.so.12")
    if os.path.exists(mpich_lib):
        r = run_ompi(ompi, "mpi", env={"LD_PRELOAD": mpich_lib})
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "mpi4py of" in r.stderr and "--no-binary mpi4py" in r.stderr, r.stderr
    r = cli("train", TINY, f"run_dir={tmp_path / 'run'}", "runtime.mpiexec=/usr/bin/mpiexec", check=False)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr
    assert "/usr/bin/mpiexec is Open MPI's launcher but mpi4py runs on MPICH" in errors[0], r.stderr
