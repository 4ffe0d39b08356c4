#!/usr/bin/env bash
# The README's install command, copied as is, in a fresh Debian 12 root (a debootstrap chroot): it must end with
# the demo's report. Run as root on Debian or Ubuntu, from the repository root:
#
#   bash tools/fresh_install_check.sh            # prints "fresh_install_check: ok (N s) ..." or fails
#
# What the chroot holds: Debian 12 (bookworm) minbase plus git, python3, python3-venv (README: the venv module is
# a separate Debian/Ubuntu package) and ca-certificates (present on any installed Debian; pip needs it for PyPI).
# The repository is cloned from this checkout's committed HEAD (`git clone` of a local path); the README's first
# fenced bash block must be `git clone URL hpc-rlhf && cd hpc-rlhf` followed by the install command, which runs
# verbatim in the clone (extracted here from README.md, so the two cannot drift).
#
# Deviations from a machine on the internet, where download.pytorch.org cannot be reached:
#   PIP_FIND_LINKS=$FRESH_WHEELS (default /opt/wheels, bind-mounted read-only) so that pip finds torch's CPU wheel
#   there instead of on download.pytorch.org (pip warns once that the index cannot be reached). Everything else
#   comes from PyPI and Debian's archive. PIP_RETRIES=0, so that each package's lookup on the unreachable
#   index fails at once instead of after five retries. PIP_CERT: the chroot's pip trusts the host's CA bundle
#   (FRESH_CA, default $PIP_CERT or /etc/ssl/certs/ca-certificates.crt; "" for none): where the network intercepts
#   TLS with its own CA, the host trusts it and a fresh root does not.
# Environment: FRESH_WORK (/tmp/fresh-install: the chroot), FRESH_MIRROR (http://deb.debian.org/debian),
# FRESH_SUITE (bookworm), FRESH_WHEELS (/opt/wheels; "" for none). Downloaded .debs are kept in
# /var/cache/fresh-install-debs for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${FRESH_WORK:-/tmp/fresh-install}
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
SUITE=${FRESH_SUITE:-bookworm}
WHEELS=${FRESH_WHEELS-/opt/wheels}
FRESH_CA=${FRESH_CA-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
ROOT=$WORK/root
start=$(date +%s)

fail() { echo "fresh_install_check: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root (debootstrap, chroot, mount)"

# The README's first bash block: line 1 the clone, line 2 the install command (comments and blanks skipped).
mapfile -t LINES < <(awk '/^```bash/{b++; next} /^```/{if (b==1) exit} b==1 && !/^[[:space:]]*(#|$)/' README.md)
[ "${#LINES[@]}" -ge 2 ] || fail "README.md's first bash block has fewer than two commands"
case "${LINES[0]}" in "git clone "*" hpc-rlhf && cd hpc-rlhf") ;; *) fail "README's first command is not the clone: ${LINES[0]}" ;; esac
INSTALL=${LINES[1]}
echo "fresh_install_check: the README's command: $INSTALL"

command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
cleanup() {
    for m in "$ROOT/opt/wheels" "$ROOT/src" "$ROOT/dev" "$ROOT/proc"; do
        mountpoint -q "$m" 2>/dev/null && umount -R "$m"
    done
    return 0
}
trap cleanup EXIT
cleanup
rm -rf "$WORK" && mkdir -p "$ROOT" /var/cache/fresh-install-debs
echo "fresh_install_check: debootstrap $SUITE -> $ROOT"
debootstrap --variant=minbase --include=git,python3,python3-venv,ca-certificates \
    --cache-dir=/var/cache/fresh-install-debs "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap (log: $WORK/debootstrap.log)"; }
booted=$(date +%s)

mount -t proc proc "$ROOT/proc"
mkdir -p "$ROOT/dev" && mount --rbind /dev "$ROOT/dev" && mount --make-rslave "$ROOT/dev"  # /dev/shm for MPI
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
git clone -q --bare "$REPO" "$WORK/src.git" # HEAD's commit, readable without this checkout's .git (a worktree's is elsewhere)
mkdir -p "$ROOT/src" && mount --bind -o ro "$WORK/src.git" "$ROOT/src"
pipenv=(PIP_RETRIES=0) # download.pytorch.org does not resolve here: fail each lookup at once, not after 5 retries
if [ -n "$FRESH_CA" ]; then # a network that intercepts TLS: its CA, which the host trusts and the chroot does not
    cp "$FRESH_CA" "$ROOT/etc/ssl/certs/host-ca.crt" && pipenv+=(PIP_CERT=/etc/ssl/certs/host-ca.crt)
fi
if [ -n "$WHEELS" ]; then
    mkdir -p "$ROOT/opt/wheels" && mount --bind -o ro "$WHEELS" "$ROOT/opt/wheels"
    pipenv+=(PIP_FIND_LINKS=/opt/wheels)
fi

# a clone of the committed HEAD: the same files a user's clone has (git refuses a foreign-owned repo: safe.directory)
script="git config --global --add safe.directory '*' && git clone -q /src /root/hpc-rlhf && cd /root/hpc-rlhf && $INSTALL"
env -i HOME=/root LANG=C.UTF-8 TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "${pipenv[@]}" chroot "$ROOT" bash -euo pipefail -c "$script" >"$WORK/install.log" 2>&1 ||
    { tail -n 30 "$WORK/install.log" >&2; fail "the README's command (log: $WORK/install.log)"; }

report=$ROOT/root/hpc-rlhf/runs/demo/demo_report.json
[ -f "$report" ] || fail "no $report after the README's command"
python3 - "$report" <<'EOF' || fail "demo_report.json is incomplete"
import json, sys
r = json.load(open(sys.argv[1]))
need = ["gold_reward_initial", "gold_reward_final", "rm_pairwise_accuracy", "kl_final", "steps"]
missing = [k for k in need if k not in r]
assert not missing, missing
print("fresh_install_check: demo_report", {k: r[k] for k in need})
EOF
torch=$(chroot "$ROOT" /root/hpc-rlhf/.venv/bin/python -c "import torch; print(torch.__version__)")
end=$(date +%s)
echo "fresh_install_check: ok ($((end - start)) s: debootstrap $((booted - start)) s, clone+install+demo $((end - booted)) s;" \
    "torch $torch; Python $(chroot "$ROOT" python3 -c 'import sys; print(sys.version.split()[0])'))"
