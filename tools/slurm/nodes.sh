# shellcheck shell=bash
# The compute nodes of a multi-node dev cluster (sourced by tools/slurm/dev_cluster.sh; not run alone).
#
# Node i (1..N) is named nodeI. It gets a network namespace /run/netns/nodeI holding one end of a veth
# pair (eth0, address $NET.(10+i)); the other end sits on the bridge $BRIDGE (address $NET.1, where
# slurmctld listens) in the host namespace. Nothing is routed or NATed: traffic stays between the
# namespaces and the bridge. slurmd runs as
#     nsenter --net=/run/netns/nodeI unshare --uts --mount sh -c "hostname nodeI; mount ...; exec slurmd -N nodeI"
# i.e. in the node's network namespace and its own UTS namespace (its own hostname), sharing the host's
# filesystem and pid namespace, as compute nodes share a parallel filesystem, except $NODE_LOCAL, a tmpfs
# of its own (its mount namespace: node-local scratch). (`ip netns exec` does not
# work: it remounts /sys, and slurmd then fails with "No filesystem mounted on /sys/fs/cgroup".)
# The nodes' names go to /etc/hosts on lines ending in $HOSTS_TAG, which `stop` removes.

BRIDGE="${DEV_SLURM_BRIDGE:-hpcbr0}"
NET="${DEV_SLURM_NET:-10.217.0}"
HOSTS_TAG="# hpc_rlhf dev_cluster"
# Each node's own node-local scratch (a tmpfs in its mount namespace, like a compute node's local disk):
# the same path shows different files on each node and on the host; tests prove a node-local run_dir fails.
NODE_LOCAL="${DEV_SLURM_NODE_LOCAL:-/var/tmp/dev-node-local}"

node_name() { echo "node$1"; }
node_addr() { echo "$NET.$((10 + $1))"; }

nodes_up() { # N: bridge, namespaces, veths, /etc/hosts lines (idempotent; drops nodes beyond N)
    local n=$1 i name ns
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$NET.1/24" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
    for i in $(seq "$n"); do
        name=$(node_name "$i")
        if [ ! -e "/run/netns/$name" ]; then
            ip netns add "$name"
            ip link add "veth-$name" type veth peer name eth0 netns "$name"
            ip link set "veth-$name" master "$BRIDGE" up
            ip -n "$name" addr add "$(node_addr "$i")/24" dev eth0
            ip -n "$name" link set eth0 up
            ip -n "$name" link set lo up
        fi
    done
    for ns in /run/netns/node[0-9]*; do # nodes of a larger cluster started before
        name=$(basename "$ns")
        if [ -e "$ns" ] && [ "${name#node}" -gt "$n" ]; then
            ip link del "veth-$name" 2>/dev/null || true
            ip netns del "$name"
        fi
    done
    hosts_lines "$n"
}

hosts_lines() { # N: exactly the nodes' lines (and the controller's bridge name) in /etc/hosts
    local tmp i
    tmp=$(mktemp)
    grep -vF "$HOSTS_TAG" /etc/hosts >"$tmp" || true
    for i in $(seq "$1"); do
        echo "$(node_addr "$i") $(node_name "$i") $HOSTS_TAG" >>"$tmp"
    done
    # /etc/hosts may be a bind mount: rewrite it in place rather than replace the file.
    cat "$tmp" >/etc/hosts
    rm -f "$tmp"
}

nodes_down() { # every node namespace, veth, the bridge and our /etc/hosts lines
    local ns
    for ns in /run/netns/node[0-9]*; do
        [ -e "$ns" ] || continue
        ip link del "veth-$(basename "$ns")" 2>/dev/null || true
        ip netns del "$(basename "$ns")"
    done
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
    if grep -qF "$HOSTS_TAG" /etc/hosts; then
        local tmp
        tmp=$(mktemp)
        grep -vF "$HOSTS_TAG" /etc/hosts >"$tmp" || true
        cat "$tmp" >/etc/hosts
        rm -f "$tmp"
    fi
    return 0
}

start_slurmd_in() { # NODE: slurmd in the node's network, UTS and mount namespaces
    mkdir -p "$NODE_LOCAL"
    nsenter --net="/run/netns/$1" unshare --uts --mount sh -c \
        "hostname $1 && mount -t tmpfs -o size=256m dev-node-local $NODE_LOCAL && exec slurmd -N $1"
}
