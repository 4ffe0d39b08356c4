#!/usr/bin/env bash
# A development Slurm cluster (Debian 12, Slurm 22.05) for hpc_rlhf's Slurm code and tests: one node, or
# two or three compute nodes on this one machine.
#
#   tools/slurm/dev_cluster.sh install             # apt-get the packages (root); ~30 s
#   tools/slurm/dev_cluster.sh start [--nodes N]   # write /etc/slurm/slurm.conf, start munged, slurmctld and
#                                                  # the slurmd(s); idempotent; waits until every node is idle
#   tools/slurm/dev_cluster.sh status              # daemons, sinfo, squeue
#   tools/slurm/dev_cluster.sh stop                # stop the daemons; remove namespaces, bridge, /etc/hosts lines
#
# --nodes 1 (the default for a first start; later starts keep the running cluster's count): the node is
# this host (`hostname -s`, 127.0.0.1). --nodes 2 or 3: nodes node1..nodeN, each slurmd in its own network
# and UTS namespace on a bridge this script creates (tools/slurm/nodes.sh), all sharing this filesystem as
# a cluster shares its parallel filesystem; slurmctld and one munged stay in the host namespace.
# `srun -N2 --mpi=pmi2` then gives one MPI world over TCP between the nodes. Changing N restarts the
# daemons (jobs on nodes that go away are lost; others are kept in the state directory).
#
# Works without systemd: the daemons are started directly. Needs root.
# The config is rendered from tools/slurm/slurm.conf.in next to this script. Two partitions over all nodes:
# `low` (default; preemptable: REQUEUE with GraceTime=30) and `high` (PriorityTier=10, preempts `low`).
# Each node advertises DEV_SLURM_CPUS CPUs (default 16) whatever the machine has, so multi-task jobs fit.
# There is no accounting daemon: `sacct` fails; use squeue/scontrol.
#
# Environment: DEV_SLURM_CPUS (16), DEV_SLURM_START_TIMEOUT (60 s), DEV_SLURM_STATE (/var/spool/slurm-dev),
#              DEV_SLURM_LOG (/var/log/slurm-dev), DEV_SLURM_BRIDGE (hpcbr0), DEV_SLURM_NET (10.217.0).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
CPUS="${DEV_SLURM_CPUS:-16}"
START_TIMEOUT="${DEV_SLURM_START_TIMEOUT:-60}"
STATE="${DEV_SLURM_STATE:-/var/spool/slurm-dev}"
LOG="${DEV_SLURM_LOG:-/var/log/slurm-dev}"
RUN=/run/slurm-dev
MUNGE_RUN=/run/munge
MUNGE_KEY=/etc/munge/munge.key
PACKAGES=(slurmctld slurmd slurm-client munge slurm-wlm-basic-plugins libpmix-dev) # libpmix-dev: the libpmix.so that srun --mpi=pmix loads
NODES_FILE="$RUN/nodes" # the node count of the running cluster
# shellcheck source=tools/slurm/nodes.sh
. "$HERE/nodes.sh"

say() { echo "dev_cluster: $*"; }
die() {
    echo "dev_cluster: error: $*" >&2
    exit 1
}

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"; }

host() { hostname -s; }

pid_alive() { # pidfile
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

do_install() {
    need_root
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "packages already installed: ${PACKAGES[*]}"
        return 0
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The packages' postinst scripts try to start services; without systemd that fails harmlessly.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    command -v slurmctld >/dev/null || die "slurmctld missing after apt-get install"
    say "installed: $(slurmctld -V)"
}

render_conf() { # N
    local n=$1 mem_mb nodes="" list ctld_addr i
    mem_mb=$(awk -v n="$n" '/MemTotal/ {printf "%d", $2 / 1024 * 0.9 / n}' /proc/meminfo)
    if [ "$n" -eq 1 ]; then
        ctld_addr=127.0.0.1 list=$(host)
        nodes="NodeName=$(host) NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN"
    else
        ctld_addr="$NET.1" list="node[1-$n]"
        for i in $(seq "$n"); do
            nodes+="NodeName=$(node_name "$i") NodeAddr=$(node_addr "$i") CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN"
            [ "$i" -lt "$n" ] && nodes+=$'\n'
        done
    fi
    mkdir -p "$CONF_DIR"
    install -m 755 "$HERE/task_prolog.sh" "$RUN/task_prolog.sh" # outside this checkout, which may go away
    # srun --mpi=pmix: each step's PMIx client dir (default /tmp/spmix_appdir_UID_STEP) must be node-local, and
    # the nodes here share /tmp ("Cannot create directory ... File exists" on the second node): their own tmpfs.
    local mpi_conf
    mpi_conf="PMIxCliTmpDirBase=$([ "$n" -gt 1 ] && echo "$NODE_LOCAL" || echo /tmp)"
    if ! [ -f "$CONF_DIR/mpi.conf" ] || [ "$(cat "$CONF_DIR/mpi.conf")" != "$mpi_conf" ]; then
        echo "$mpi_conf" >"$CONF_DIR/mpi.conf" && chmod 644 "$CONF_DIR/mpi.conf" && rm -f "$CONF"
    fi
    local tmp
    tmp=$(mktemp)
    NODES="$nodes" awk '{ if ($0 == "@NODES@") print ENVIRON["NODES"]; else print }' "$HERE/slurm.conf.in" |
        sed -e "s|@HOST@|$(host)|g" -e "s|@CTLD_ADDR@|$ctld_addr|g" -e "s|@NODELIST@|$list|g" \
            -e "s|@STATE@|$STATE|g" -e "s|@LOG@|$LOG|g" -e "s|@RUN@|$RUN|g" >"$tmp"
    if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        return 1 # unchanged
    fi
    mv "$tmp" "$CONF"
    chmod 644 "$CONF"
    say "wrote $CONF ($n node(s): $list, CPUs=$CPUS each, RealMemory=${mem_mb}MB each)"
    return 0
}

node_names() { # N
    if [ "$1" -eq 1 ]; then host; else for i in $(seq "$1"); do node_name "$i"; done; fi
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_ok; then
        say "munged already running"
        return 0
    fi
    if [ ! -s "$MUNGE_KEY" ]; then
        mkdir -p "$(dirname "$MUNGE_KEY")"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
        say "created $MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 400 "$MUNGE_KEY"
    mkdir -p "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chown munge:munge "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chmod 755 "$MUNGE_RUN"
    # A stale socket/pid from a previous (killed) munged makes munged refuse to start.
    rm -f "$MUNGE_RUN"/munge.socket.2 "$MUNGE_RUN"/munge.socket.2.lock "$MUNGE_RUN"/munged.pid
    runuser -u munge -- munged
    for _ in $(seq 50); do
        munge_ok && break
        sleep 0.1
    done
    munge_ok || die "munged did not start (see /var/log/munge/munged.log)"
    say "started munged"
}

# Nodes not idle/mixed/allocated/completing, as "name:state" words (empty: all up); brings back a node left
# down/drained by an earlier run (e.g. a killed slurmd).
nodes_not_up() { # N
    local name state out=""
    for name in $(node_names "$1"); do
        state=$(sinfo -h -N -n "$name" -o '%T' 2>/dev/null | head -n1 || true)
        case "$state" in
        idle* | mixed* | allocated* | completing*) ;;
        drain* | down* | fail*)
            scontrol update NodeName="$name" State=RESUME >/dev/null 2>&1 || true
            out+="$name:$state "
            ;;
        *) out+="$name:${state:-no-answer} " ;;
        esac
    done
    echo "$out"
}

do_start() { # [--nodes N]
    need_root
    command -v slurmctld >/dev/null || die "Slurm is not installed: run '$0 install' first"
    local n
    n=$(cat "$NODES_FILE" 2>/dev/null || echo 1)
    while [ $# -gt 0 ]; do
        case "$1" in
        --nodes) n="${2:-}" && shift 2 ;;
        --nodes=*) n="${1#--nodes=}" && shift ;;
        *) die "unknown option '$1' (start [--nodes N])" ;;
        esac
    done
    case "$n" in 1 | 2 | 3) ;; *) die "--nodes must be 1, 2 or 3 (got '$n')" ;; esac
    local old
    old=$(cat "$NODES_FILE" 2>/dev/null || echo 1)
    if { [ "$old" != "$n" ] || [ -f "$RUN/slurmd.pid" ]; } && any_daemon_running; then
        say "switching from $old to $n node(s): restarting the daemons"
        stop_daemons
    fi
    mkdir -p "$STATE/slurmctld" "$LOG" "$RUN"
    local changed=0
    render_conf "$n" && changed=1
    echo "$n" >"$NODES_FILE"
    if [ "$n" -gt 1 ]; then nodes_up "$n"; else nodes_down; fi
    start_munge
    if pid_alive "$RUN/slurmctld.pid"; then
        if [ $changed -eq 1 ]; then
            scontrol reconfigure && say "slurmctld already running; reconfigured"
        else
            say "slurmctld already running (pid $(cat "$RUN/slurmctld.pid"))"
        fi
    else
        slurmctld || die "slurmctld failed to start (see $LOG/slurmctld.log)"
        say "started slurmctld"
    fi
    local name
    for name in $(node_names "$n"); do
        mkdir -p "$STATE/slurmd-$name"
        if pid_alive "$RUN/slurmd-$name.pid"; then
            say "slurmd of $name already running (pid $(cat "$RUN/slurmd-$name.pid"))"
        elif [ "$n" -eq 1 ]; then
            slurmd || die "slurmd failed to start (see $LOG/slurmd-$name.log)"
            say "started slurmd"
        else
            start_slurmd_in "$name" || die "slurmd of $name failed to start (see $LOG/slurmd-$name.log)"
            say "started slurmd of $name ($(node_addr "${name#node}"))"
        fi
    done
    local deadline=$((SECONDS + START_TIMEOUT)) bad=""
    while [ $SECONDS -lt $deadline ]; do
        bad=$(nodes_not_up "$n")
        if [ -z "$bad" ]; then
            say "$n node(s) up: $(node_names "$n" | tr '\n' ' ')(partitions: $(sinfo -h -o '%P' | tr '\n' ' '))"
            return 0
        fi
        sleep 1
    done
    echo "--- sinfo:" >&2
    sinfo -N -l >&2 || true
    echo "--- tail $LOG/slurmctld.log:" >&2
    tail -n 20 "$LOG/slurmctld.log" >&2 || true
    for name in $(node_names "$n"); do
        echo "--- tail $LOG/slurmd-$name.log:" >&2
        tail -n 20 "$LOG/slurmd-$name.log" >&2 || true
    done
    die "nodes not idle after ${START_TIMEOUT}s: $bad"
}

stop_pidfile() { # name pidfile
    if pid_alive "$2"; then
        local pid
        pid=$(cat "$2")
        kill "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        say "stopped $1 (pid $pid)"
    else
        say "$1 not running"
    fi
}

slurmd_pidfiles() { ls "$RUN"/slurmd*.pid 2>/dev/null || true; } # slurmd.pid: written by older versions

any_daemon_running() {
    local f
    pid_alive "$RUN/slurmctld.pid" && return 0
    for f in $(slurmd_pidfiles); do pid_alive "$f" && return 0; done
    return 1
}

stop_daemons() {
    local f
    for f in $(slurmd_pidfiles); do
        stop_pidfile "$(basename "$f" .pid)" "$f"
        rm -f "$f"
    done
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
}

do_stop() {
    need_root
    stop_daemons
    stop_pidfile munged "$MUNGE_RUN/munged.pid"
    nodes_down
    rm -f "$NODES_FILE"
    say "stopped; namespaces, bridge and /etc/hosts lines removed"
}

do_status() {
    local rc=0 f n
    n=$(cat "$NODES_FILE" 2>/dev/null || echo 1)
    echo "nodes: $n ($(node_names "$n" | tr '\n' ' '))"
    if pid_alive "$RUN/slurmctld.pid"; then echo "slurmctld: running (pid $(cat "$RUN/slurmctld.pid"))"; else
        echo "slurmctld: not running"
        rc=1
    fi
    for f in $(slurmd_pidfiles); do
        if pid_alive "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"; else
            echo "$(basename "$f" .pid): not running"
            rc=1
        fi
    done
    if munge_ok; then echo "munged: running"; else
        echo "munged: not running"
        rc=1
    fi
    if sinfo >/dev/null 2>&1; then
        sinfo -N
        squeue
    else
        echo "sinfo: no answer"
        rc=1
    fi
    return $rc
}

case "${1:-}" in
install) do_install ;;
start)
    shift
    do_start "$@"
    ;;
stop) do_stop ;;
status) do_status ;;
*)
    echo "usage: $0 {install|start [--nodes N]|stop|status}" >&2
    exit 2
    ;;
esac
