#!/usr/bin/env bash
# CI: install and start the single-node dev Slurm cluster (tools/slurm/dev_cluster.sh), then prove that a
# job step runs. Exits non-zero when the cluster does not come up, so the Slurm tests never run without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/slurm/dev_cluster.sh install
bash tools/slurm/dev_cluster.sh start
sinfo
# munge auth, slurmctld -> slurmd and a job step, end to end.
if ! timeout 60 srun --job-name=ci-smoke -n 1 true; then
    echo "slurm_setup: a one-task srun did not run" >&2
    bash tools/slurm/dev_cluster.sh status || true
    tail -n 30 /var/log/slurm-dev/slurmctld.log /var/log/slurm-dev/slurmd.log >&2 || true
    exit 1
fi
echo "slurm_setup: dev cluster up"
