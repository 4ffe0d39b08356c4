"""The step loop shared by the supervised stages (SFT, reward model): data-parallel ranks, an agreed stop,
exact checkpoints, metrics.

    run = StageRun(cfg, run_dir, comm, device, stop)            # comm: the MPI world (None: one process)
    start, extra = run.resume(model, opt)                        # latest committed checkpoint, or (0, {})
    for step in range(start, total):
        mine = run.share(global_indices)                         # this rank's slice of the step's batch
        ... loss normalised by the global batch, backward ...
        run.reduce_and_step(model, opt, max_grad_norm, local_empty=not len(mine))
        if run.end_step(step, total, metrics, model, opt, extra):   # True: stopped after a checkpoint
            return "stop"
    run.finish(total, model, opt, extra)                         # the final checkpoint

Every rank loads the whole data set and computes every step's global batch from (seed, epoch, step) alone,
so the data cursor is the step number: a checkpoint of step S (checkpoints/step_S, written and read by
checkpoint/checkpointer.py) holds the model and optimizer states before step S (model.safetensors,
optim.safetensors + optim.json, with the torch RNG state) and state.json (step, config, fingerprint, the
stage's `extra` values). Rank 0 writes, every rank loads. A stop signal (launch/signals.py) is agreed by all ranks at a step boundary (MPI MAX),
checkpointed, and the rank exits with runtime.requeue_exit_code. persist=False (the demo's reward model,
trained inside the PPO run dir) writes neither checkpoints nor metrics.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional

import numpy as np
import torch

from hpc_rlhf.checkpoint.checkpointer import Checkpointer
from hpc_rlhf.config import Config
from hpc_rlhf.parallel.dp import DataParallel
from hpc_rlhf.rollout.ledger import truncate_jsonl
from hpc_rlhf.rundir import RunDir


class StageRun:
    """Ranks, stop agreement, checkpoints and metrics of one supervised stage run (see the module doc)."""

    def __init__(
        self, cfg: Config, run_dir: str, comm: Any, device: torch.device, stop: Any = None, persist: bool = True
    ) -> None:
        self.cfg, self.run_dir, self.comm, self.device = cfg, run_dir, comm, device
        self.stop, self.persist = stop, persist
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        rt = cfg.runtime
        self.dp = (
            DataParallel.from_mpi(comm, device, rt.wait_timeout_s, rt.rendezvous_addr, rt.rendezvous_port)
            if comm is not None
            else DataParallel(0, 1)
        )
        self.lead = self.rank == 0
        self.ckpt = Checkpointer(run_dir, cfg)
        self.last_ckpt_step: Optional[int] = None
        self.last_ckpt_time = time.monotonic()

    # -- data ----------------------------------------------------------------------------------------------
    def share(self, indices: np.ndarray) -> np.ndarray:
        """This rank's contiguous slice of a global batch (np.array_split: sizes differ by at most one)."""
        return np.array_split(np.asarray(indices), self.size)[self.rank]

    def allreduce_sum(self, value: float) -> float:
        """The sum over ranks of a float (a metric)."""
        if self.size == 1:
            return value
        return float(self.dp.allreduce_sum(torch.tensor([value], dtype=torch.float64)).item())

    # -- the optimizer step ----------------------------------------------------------------------------------
    def reduce_and_step(
        self, model: torch.nn.Module, opt: torch.optim.Optimizer, max_grad_norm: float, local_empty: bool
    ) -> float:
        """Sum the gradients over ranks, clip, step; the gradient norm before clipping (0.0 when not clipped).
        A rank whose share of the batch is empty contributes zeros."""
        params = [p for p in model.parameters() if p.requires_grad]
        if self.size > 1:
            if local_empty:
                for p in params:
                    p.grad = torch.zeros_like(p)
            self.dp.allreduce_grads(params)
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm)) if max_grad_norm > 0 else 0.0
        opt.step()
        return norm

    # -- stop, metrics, checkpoints ----------------------------------------------------------------------------
    def _agreed_stop(self) -> bool:
        mine = int(self.stop is not None and self.stop.is_set())
        if self.size == 1:
            return bool(mine)
        from mpi4py import MPI

        return bool(self.comm.allreduce(mine, op=MPI.MAX))

    def _due(self, next_step: int) -> bool:
        c = self.cfg.checkpoint
        every = c.every_steps > 0 and next_step % c.every_steps == 0
        late = c.every_min > 0 and time.monotonic() - self.last_ckpt_time >= c.every_min * 60
        return every or late

    def end_step(self, step: int, total: int, metrics: dict, model: torch.nn.Module, opt: Any, extra: dict) -> bool:
        """After `step`: log its metrics, checkpoint when due; True when the ranks agreed to stop (checkpointed)."""
        if self.persist and self.lead:
            with open(RunDir(self.run_dir).metrics, "a") as f:
                f.write(json.dumps({"step": step, "time_unix": time.time(), **metrics}) + "\n")
        if not self.persist:
            return False
        stop = self._agreed_stop() and step + 1 < total
        if stop or (step + 1 < total and self._due(step + 1)):
            self.checkpoint(step + 1, model, opt, extra)
        return stop

    def finish(self, total: int, model: torch.nn.Module, opt: Any, extra: dict) -> None:
        """The final checkpoint (a resume of a finished run starts at its end)."""
        if self.persist and self.last_ckpt_step != total:
            self.checkpoint(total, model, opt, extra)

    def checkpoint(self, next_step: int, model: torch.nn.Module, opt: Any, extra: dict) -> None:
        """The state before `next_step`, committed by rank 0 (checkpoint/checkpointer.py)."""
        self.last_ckpt_step, self.last_ckpt_time = next_step, time.monotonic()
        if self.lead:
            self.ckpt.save_stage(next_step, model, opt, extra)

    def resume(self, model: torch.nn.Module, opt: Any) -> tuple[int, dict]:
        """Load the latest committed checkpoint into model and opt: (next step, the stage's extra values);
        (0, {}) on a fresh start. Rank 0 finds and verifies it, every rank loads the same one."""
        if not self.persist:
            return 0, {}
        info = self.ckpt.latest() if self.lead else None
        path = self.comm.bcast(info.path if info else None, root=0) if self.size > 1 else (info.path if info else None)
        start, extra = 0, {}
        if path is not None:
            start, extra = self.ckpt.load_stage(path, model, opt, self.device)
            self.last_ckpt_step = start
        if self.lead:
            truncate_jsonl(RunDir(self.run_dir).metrics, start)
        return start, extra
