"""The rollout archive: analyse a run's HDF5 shards offline (no MPI, Slurm, GPU or model weights).

    from hpc_rlhf.archive import Archive, summarize, export, plot, verify
    arc = Archive.open("runs/demo")                 # or a bare folder of *.h5 shards
    rows = summarize(arc)                           # per policy version: reward, KL, length, EOS, repetition
    df = arc.to_dataframe(["policy_version", "reward", "kl_seq", "rep_3gram"], versions=(10, 20))
    export(arc, "samples.parquet", "parquet", tokens=True)
    plot(arc, "figs/")
    verify(arc).ok

Command line: `hpc-rlhf archive ...` or `python -m hpc_rlhf.archive ...` (hpc_rlhf/archive/cli.py).
See docs/archive.md.
"""

from hpc_rlhf.archive.export import export
from hpc_rlhf.archive.plot import plot
from hpc_rlhf.archive.show import render, select
from hpc_rlhf.archive.store import Archive, Batch, Filters, ShardRef
from hpc_rlhf.archive.summary import summarize
from hpc_rlhf.archive.verify import VerifyReport, verify

__all__ = [
    "Archive",
    "Batch",
    "Filters",
    "ShardRef",
    "VerifyReport",
    "export",
    "plot",
    "render",
    "select",
    "summarize",
    "verify",
]
