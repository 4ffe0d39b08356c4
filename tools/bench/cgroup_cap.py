"""Run a function's child processes under a memory cap, so that an overshoot kills only them.

    import cgroup_cap
    result = cgroup_cap.verify(lambda: run_something(), "probe-name", cap_bytes, args)

Used by tools/bench/largest_model.py --verify. Makes a child cgroup of this process's own memory
cgroup (root needed): cgroup v2 (`memory.max`, `memory.peak`) where the unified hierarchy has the
memory controller, else cgroup v1 (`memory.limit_in_bytes`, `memory.max_usage_in_bytes`). This process
joins it, so every process it starts is capped (the kernel's OOM killer picks inside the cgroup), and
leaves it afterwards; the cgroup is removed. Before starting it waits, up to args.retries times
args.retry_wait_s apart, until MemAvailable exceeds the expected use (at most the cap) plus
args.headroom_gib; if it never does, the function is not run.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

GIB = 2**30


def _own_cgroup() -> tuple[str, str, str, str]:
    """(folder of this process's memory cgroup, limit file, peak file, version)."""
    with open("/proc/self/cgroup") as f:
        lines = [ln.rstrip("\n").split(":", 2) for ln in f]
    v1 = [path for _, ctl, path in lines if "memory" in ctl.split(",")]
    v2 = [path for hid, ctl, path in lines if hid == "0" and ctl == ""]
    if v2 and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            if "memory" in f.read().split():
                return "/sys/fs/cgroup" + v2[0], "memory.max", "memory.peak", "v2"
    if v1:
        return "/sys/fs/cgroup/memory" + v1[0], "memory.limit_in_bytes", "memory.max_usage_in_bytes", "v1"
    raise SystemExit("no memory cgroup found (/proc/self/cgroup): cannot cap a verification run")


def mem_available() -> int:
    """MemAvailable of /proc/meminfo, in bytes."""
    with open("/proc/meminfo") as f:
        for ln in f:
            if ln.startswith("MemAvailable:"):
                return int(ln.split()[1]) * 1024
    return 0


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def verify(fn: Callable[[], dict], name: str, cap_bytes: float, expect_bytes: float, args: argparse.Namespace) -> dict:
    """Run fn() in a fresh child cgroup capped at cap_bytes, once MemAvailable exceeds the expected use
    (expect_bytes, at most the cap) plus args.headroom_gib; {"verified", "result" | "error", cgroup facts}."""
    need = min(cap_bytes, expect_bytes) + args.headroom_gib * GIB
    waited = []
    for attempt in range(args.retries + 1):
        avail = mem_available()
        waited.append(round(avail / GIB, 1))
        if avail >= need:
            break
        if attempt < args.retries:
            time.sleep(args.retry_wait_s)
    else:
        return {
            "verified": False,
            "error": "not run: MemAvailable stayed below the expected use + headroom",
            "avail_gib": waited,
        }
    parent, limit_file, peak_file, version = _own_cgroup()
    folder = os.path.join(parent, name)
    os.mkdir(folder)
    out: dict = {"cgroup": version, "cap_gib": round(cap_bytes / GIB, 2), "avail_gib_at_start": waited[-1]}
    try:
        _write(os.path.join(folder, limit_file), str(int(cap_bytes)))
        _write(os.path.join(folder, "cgroup.procs"), str(os.getpid()))
        try:
            out["result"] = fn()
            out["verified"] = True
        except SystemExit as e:  # memory.measure exits when the run fails (e.g. a rank OOM-killed)
            out["verified"] = False
            out["error"] = str(e)
        finally:
            _write(os.path.join(parent, "cgroup.procs"), str(os.getpid()))
        try:
            with open(os.path.join(folder, peak_file)) as f:
                out["cgroup_peak_gib"] = round(int(f.read()) / GIB, 2)  # page cache of the checkpoint included
        except OSError:
            pass
        for oom in ("memory.events", "memory.oom_control"):
            try:
                with open(os.path.join(folder, oom)) as f:
                    out["oom_kills"] = int(dict(ln.split() for ln in f if ln.strip()).get("oom_kill", 0))
                break
            except OSError:
                continue
    finally:
        for _ in range(50):  # the last killed processes may take a moment to leave
            try:
                os.rmdir(folder)
                break
            except OSError:
                time.sleep(0.2)
    return out
