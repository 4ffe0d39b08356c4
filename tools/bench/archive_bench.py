"""Benchmark the rollout archive tools on a synthetic archive of one million samples.

    python tools/bench/archive_bench.py                       # 1000 shards x 1000 samples in a temp dir
    python tools/bench/archive_bench.py --dir /scratch/arc --keep --shards 100

Builds the archive with the project's own write_shard (hpc_rlhf.archive.synthetic: prompts of 16-32
tokens, responses of 16-64 tokens, vocab 32000), then runs each command in a child process
(`python -m hpc_rlhf.archive ...`) and reports wall seconds and the child's peak RSS (os.wait4
ru_maxrss) as JSON. The shards were just written, so they are read from the page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time


def _run(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, ru = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    err = p.stderr.read().decode() if p.stderr else ""
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err.strip()}")
    return {"seconds": round(secs, 2), "peak_rss_mib": round(ru.ru_maxrss / 1024, 1)}  # ru_maxrss: KiB on Linux


def _du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to build the archive (default: a temp dir, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the archive (and export) afterwards")
    ap.add_argument("--shards", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1000, help="samples per shard")
    ap.add_argument("--shards-per-step", type=int, default=10)
    ap.add_argument("--reuse", action="store_true", help="reuse an archive already in --dir")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each command (the fastest is reported)")
    args = ap.parse_args()

    base = args.dir or tempfile.mkdtemp(prefix="archive_bench_")
    run_dir = os.path.join(base, "run")
    result: dict = {"samples": args.shards * args.samples, "shards": args.shards}
    try:
        if not (args.reuse and os.path.isdir(os.path.join(run_dir, "rollouts"))):
            from hpc_rlhf.archive.synthetic import make_archive

            shutil.rmtree(run_dir, ignore_errors=True)
            t0 = time.perf_counter()
            steps = max(1, args.shards // args.shards_per_step)
            make_archive(run_dir, steps=steps, shards_per_step=args.shards_per_step, samples_per_shard=args.samples,
                         vocab=32000)  # fmt: skip
            result["build_seconds"] = round(time.perf_counter() - t0, 1)
        result["archive_mib"] = round(_du(os.path.join(run_dir, "rollouts")) / 2**20, 1)
        py = [sys.executable, "-m", "hpc_rlhf.archive"]
        out = os.path.join(base, "samples.parquet")
        cmds = {
            "summary": [*py, "summary", run_dir, "--format", "json"],
            "summary_no_ngram": [*py, "summary", run_dir, "--format", "json", "--no-ngram"],
            "export_parquet": [*py, "export", run_dir, "--format", "parquet", "--out", out],
            "verify": [*py, "verify", run_dir],
        }
        for name, cmd in cmds.items():
            runs = [_run(cmd) for _ in range(max(1, args.repeat))]
            result[name] = min(runs, key=lambda r: r["seconds"])
        result["export_parquet"]["out_mib"] = round(os.path.getsize(out) / 2**20, 1)
        result["machine"] = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
    finally:
        if not args.keep:
            shutil.rmtree(base if not args.dir else run_dir, ignore_errors=True)
            if args.dir and os.path.exists(os.path.join(base, "samples.parquet")):
                os.remove(os.path.join(base, "samples.parquet"))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
