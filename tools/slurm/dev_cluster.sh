#!/usr/bin/env bash
# A single-node development Slurm cluster (Debian 12, Slurm 22.05) for hpc_rlhf's Slurm code and tests.
#
#   tools/slurm/dev_cluster.sh install   # apt-get the packages (root); ~30 s
#   tools/slurm/dev_cluster.sh start     # write /etc/slurm/slurm.conf, start munged, slurmctld, slurmd;
#                                        # idempotent; waits until `sinfo` shows the node idle
#   tools/slurm/dev_cluster.sh status    # daemons, sinfo, squeue
#   tools/slurm/dev_cluster.sh stop      # stop slurmd, slurmctld, munged (by their pid files)
#
# Works without systemd: the daemons are started directly. Needs root.
# The config is rendered from tools/slurm/slurm.conf.in next to this script. Two partitions:
# `low` (default; preemptable: REQUEUE with GraceTime=30) and `high` (PriorityTier=10, preempts `low`).
# The node advertises DEV_SLURM_CPUS CPUs (default 16) whatever the machine has, so multi-task jobs fit.
# There is no accounting daemon: `sacct` fails; use squeue/scontrol.
#
# Environment: DEV_SLURM_CPUS (16), DEV_SLURM_START_TIMEOUT (60 s), DEV_SLURM_STATE (/var/spool/slurm-dev),
#              DEV_SLURM_LOG (/var/log/slurm-dev).
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
PACKAGES=(slurmctld slurmd slurm-client munge)

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

render_conf() {
    local mem_mb
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p "$CONF_DIR"
    local tmp
    tmp=$(mktemp)
    sed -e "s|@HOST@|$(host)|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$mem_mb|g" \
        -e "s|@STATE@|$STATE|g" -e "s|@LOG@|$LOG|g" -e "s|@RUN@|$RUN|g" \
        "$HERE/slurm.conf.in" >"$tmp"
    if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        return 1 # unchanged
    fi
    mv "$tmp" "$CONF"
    chmod 644 "$CONF"
    say "wrote $CONF (node $(host), CPUs=$CPUS, RealMemory=${mem_mb}MB)"
    return 0
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

sinfo_state() { sinfo -h -N -n "$(host)" -o '%T' 2>/dev/null | head -n1; }

do_start() {
    need_root
    command -v slurmctld >/dev/null || die "Slurm is not installed: run '$0 install' first"
    mkdir -p "$STATE/slurmctld" "$STATE/slurmd" "$LOG" "$RUN"
    local changed=0
    render_conf && changed=1
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
    if pid_alive "$RUN/slurmd.pid"; then
        say "slurmd already running (pid $(cat "$RUN/slurmd.pid"))"
    else
        slurmd || die "slurmd failed to start (see $LOG/slurmd.log)"
        say "started slurmd"
    fi
    local deadline=$((SECONDS + START_TIMEOUT)) state=""
    while [ $SECONDS -lt $deadline ]; do
        state=$(sinfo_state || true)
        case "$state" in
        idle* | mixed* | allocated* | completing*)
            say "node $(host) is $state; cluster up (partitions: $(sinfo -h -o '%P' | tr '\n' ' '))"
            return 0
            ;;
        drain* | down* | fail*)
            # A node left down/drained by an earlier run (e.g. a killed slurmd): bring it back.
            scontrol update NodeName="$(host)" State=RESUME >/dev/null 2>&1 || true
            ;;
        esac
        sleep 1
    done
    echo "--- sinfo:" >&2
    sinfo -N -l >&2 || true
    echo "--- tail $LOG/slurmctld.log:" >&2
    tail -n 20 "$LOG/slurmctld.log" >&2 || true
    echo "--- tail $LOG/slurmd.log:" >&2
    tail -n 20 "$LOG/slurmd.log" >&2 || true
    die "node $(host) not idle after ${START_TIMEOUT}s (state: '${state:-no answer from slurmctld}')"
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

do_stop() {
    need_root
    stop_pidfile slurmd "$RUN/slurmd.pid"
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
    stop_pidfile munged "$MUNGE_RUN/munged.pid"
}

do_status() {
    local rc=0
    for d in slurmctld slurmd; do
        if pid_alive "$RUN/$d.pid"; then echo "$d: running (pid $(cat "$RUN/$d.pid"))"; else
            echo "$d: not running"
            rc=1
        fi
    done
    if munge_ok; then echo "munged: running"; else
        echo "munged: not running"
        rc=1
    fi
    if sinfo >/dev/null 2>&1; then
        sinfo
        squeue
    else
        echo "sinfo: no answer"
        rc=1
    fi
    return $rc
}

case "${1:-}" in
install) do_install ;;
start) do_start ;;
stop) do_stop ;;
status) do_status ;;
*)
    echo "usage: $0 {install|start|stop|status}" >&2
    exit 2
    ;;
esac
