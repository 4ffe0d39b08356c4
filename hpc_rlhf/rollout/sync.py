"""Rollout durability at checkpoints: the shards of the steps a checkpoint covers are fsynced before it commits.

    sync = ShardSync(run_dir, cfg.checkpoint.sync_rollouts, start_step)
    sync.upto(next_step)      # before committing the checkpoint of next_step

With `checkpoint.sync_rollouts=checkpoint` (the default) the shard writers do not fsync; the train
lead fsyncs every shard of steps [last synced, next_step) here. fsync through any descriptor flushes
the file's pages on a local filesystem; NFS writers flush on close and Lustre on the lock revoked
when this rank read them. With `every_shard` the writers sync each shard and this does nothing.
"""

from __future__ import annotations

import os

from hpc_rlhf.rollout.plan import step_dir
from hpc_rlhf.rundir import fsync_dir, sync_paths


class ShardSync:
    def __init__(self, run_dir: str, mode: str, start_step: int):
        self.run_dir, self.on = run_dir, mode == "checkpoint"
        self.synced_upto = start_step  # shards of earlier steps were synced by their checkpoint

    def upto(self, next_step: int) -> None:
        """Make every shard of steps [last synced, next_step) durable, with the rollouts folder."""
        if not self.on:
            return
        paths = []
        for s in range(self.synced_upto, next_step):
            d = step_dir(self.run_dir, s)
            if os.path.isdir(d):
                paths += [e.path for e in os.scandir(d) if e.name.endswith(".h5") and not e.name.startswith(".")]
        sync_paths(paths)
        if paths:
            fsync_dir(os.path.dirname(step_dir(self.run_dir, 0)))
        self.synced_upto = next_step
