#!/usr/bin/env bash
# CI: a second environment whose mpi4py is compiled against Debian's Open MPI (the "site MPI" path of the README),
# for the tests that run the same job under Open MPI and under MPICH (tests/launch/test_open_mpi.py and
# tests/launch/slurm/test_open_mpi_slurm.py). Idempotent: an existing venv that already runs on Open MPI is kept.
#
#   bash .ci/openmpi_env.sh          # -> .venv-ompi/ (git-ignored); OMPI_VENV=DIR to put it elsewhere
#
# The venv is made from Debian's own /usr/bin/python3, never from a Python that has held the PyPI `mpich` wheel:
# that wheel leaves libmpi.so in the Python's lib/, where the linker finds it first, and an mpi4py built there
# against Open MPI then loads MPICH's library (`undefined symbol: ompi_mpi_logical8`). mpi4py is built before
# the package, so that `pip install -e .` finds it satisfied instead of taking the binary wheel. pip's cache
# serves torch and the other wheels; the mpi4py wheel it builds here is the only mpi4py build in CI's cache.
# It needs the PMIx plugin of Slurm (mpi_pmix_v4, in slurm-wlm-basic-plugins, with libpmix2) for `srun --mpi=pmix`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${OMPI_VENV:-.venv-ompi}
need=()
for p in openmpi-bin libopenmpi-dev libpmix2 python3-venv; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ "${#need[@]}" -gt 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; fi
if ! "$VENV/bin/python" -m hpc_rlhf.launch.cli mpi 2>/dev/null | grep -q "Open MPI"; then
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q torch==2.13.0   # the CPU wheel, as in .ci/run
    MPICC=/usr/bin/mpicc "$VENV/bin/python" -m pip install -q --no-binary mpi4py mpi4py
    "$VENV/bin/python" -m pip install -q -e .
fi
"$VENV/bin/python" -m hpc_rlhf.launch.cli mpi
"$VENV/bin/python" -m hpc_rlhf.launch.cli mpi | grep -q "Open MPI" || { echo "openmpi_env: mpi4py is not on Open MPI" >&2; exit 1; }
srun --mpi=list 2>&1 | grep -qw pmix || { echo "openmpi_env: srun --mpi=list lacks pmix" >&2; exit 1; }
# one MPI world over both nodes of the dev cluster through PMIx (when it runs: .ci/slurm_setup.sh starts it first)
if sinfo >/dev/null 2>&1; then
    world=$(timeout 120 srun --job-name=ci-ompi -N 2 --ntasks-per-node=1 --mpi=pmix "$VENV/bin/python" -c \
        "from mpi4py import MPI; print(MPI.COMM_WORLD.allreduce(1))" || true)
    [ "$(echo "$world" | sort -u)" = "2" ] || { echo "openmpi_env: a 2-node srun --mpi=pmix did not form one world (got: $world)" >&2; exit 1; }
    echo "openmpi_env: 2-node srun --mpi=pmix with Open MPI: one world of 2"
fi
