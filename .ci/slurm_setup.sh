#!/usr/bin/env bash
# CI: install and start the dev Slurm cluster with two compute nodes (tools/slurm/dev_cluster.sh: one network
# and UTS namespace per node on this machine), then prove that a job step spans both nodes in one MPI world.
# Exits non-zero when the cluster does not come up, so the Slurm tests never run without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/slurm/dev_cluster.sh install
bash tools/slurm/dev_cluster.sh start --nodes 2
sinfo
# munge auth, slurmctld -> slurmd and a job step, end to end, on both nodes and over MPI between them.
world=$(timeout 60 srun --job-name=ci-smoke -N 2 --ntasks-per-node=1 --mpi=pmi2 python3 -c \
    "from mpi4py import MPI; import socket; print(MPI.COMM_WORLD.allreduce(1), socket.gethostname())" || true)
if [ "$(echo "$world" | awk '{print $1}' | sort -u)" != "2" ] || [ "$(echo "$world" | awk '{print $2}' | sort -u | wc -l)" != "2" ]; then
    echo "slurm_setup: a 2-node MPI srun did not run (got: $world)" >&2
    bash tools/slurm/dev_cluster.sh status || true
    tail -n 30 /var/log/slurm-dev/slurmctld.log /var/log/slurm-dev/slurmd-*.log >&2 || true
    exit 1
fi
echo "slurm_setup: dev cluster up (2 nodes): $world"
