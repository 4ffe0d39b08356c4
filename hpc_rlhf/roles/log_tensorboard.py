"""TensorBoard event files under RUN_DIR/tb (logging.tensorboard=true): a sink of roles/metrics_log.py.

sink = TensorBoardSink(run_dir)
sink.log(step, {"ppo/policy_loss": 0.1, ...})
sink.close()
"""

from __future__ import annotations

from hpc_rlhf.rundir import RunDir


class TensorBoardSink:
    def __init__(self, run_dir: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(RunDir(run_dir).tensorboard)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()
