"""Regenerate docs/img/archive_example.png: the `plot` overview of a synthetic archive.

    python tools/archive/make_example.py [--out docs/img/archive_example.png]

The archive (30 versions x 1024 samples) comes from hpc_rlhf.archive.synthetic and is deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

from hpc_rlhf.archive import Archive
from hpc_rlhf.archive.plot import plot_table
from hpc_rlhf.archive.summary import load_table
from hpc_rlhf.archive.synthetic import make_archive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img/archive_example.png")
    ap.add_argument("--dpi", type=int, default=72)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="archive_example_")
    try:
        run = os.path.join(tmp, "run")
        make_archive(run, steps=30, shards_per_step=4, samples_per_shard=256, seed=0, vocab=32000)
        paths = plot_table(load_table(Archive.open(run)), os.path.join(tmp, "figs"), dpi=args.dpi)
        overview = next(p for p in paths if p.endswith("overview.png"))
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        shutil.copyfile(overview, args.out)
        print(f"{args.out}: {os.path.getsize(args.out) // 1024} KiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
