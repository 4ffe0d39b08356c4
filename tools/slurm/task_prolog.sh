#!/bin/sh
# TaskProlog of the dev cluster (tools/slurm/dev_cluster.sh copies it to /run/slurm-dev/ and names it in
# slurm.conf): each line "export NAME=value" it prints is set in the environment of every task.
#
# The PyPI MPICH defaults to its UCX netmod. On this cluster every "node" is a network namespace of one
# machine, so UCX takes the nodes for one host (same boot id) and reaches peers on other nodes through shared
# memory of their /proc/PID/fd, and its long worker addresses go through Slurm's PMI2 key-value store. Both
# failed intermittently (a corrupt address: `addr_version == UCP_OBJECT_VERSION_V2`, PMI2 "value not properly
# terminated"; `mm_posix.c: open(/proc/PID/fd/N) failed`) and left a step hung in MPI_Init. The OFI netmod
# over TCP (MPICH's other netmod in the same wheel) exchanges 16-byte socket addresses and uses TCP between
# the nodes, as a cluster without a fast fabric does. A job that sets either variable itself keeps its value.
[ -n "$MPIR_CVAR_CH4_NETMOD" ] || echo "export MPIR_CVAR_CH4_NETMOD=ofi"
[ -n "$FI_PROVIDER" ] || echo "export FI_PROVIDER=tcp"
