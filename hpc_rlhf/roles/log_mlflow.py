"""MLflow (logging.mlflow.enabled; pip install 'hpc-rlhf[mlflow]'): a sink of roles/metrics_log.py.

    sink = MLflowSink(cfg, run_dir, run_id, config, identity)   # run_id None: a new MLflow run
    sink.run_id                                                 # kept by the caller in RUN_DIR/tracking.json
    sink.log(step, {"ppo/policy_loss": 0.1, ...})
    sink.close()

Without logging.mlflow.tracking_uri the store is a file store in RUN_DIR/mlruns (no server, no network;
MLflow 3 wants MLFLOW_ALLOW_FILE_STORE=true for it, set here). The resolved config goes in as the run's
params (flattened keys; a resume adds keys it lacks, MLflow params never change) and as the artifact
config.yaml (replaced on every attempt); the run's identity as tags `hpc_rlhf.*`. A resumed or requeued
run continues the stored run; steps it has logged already (those a resume repeats after its checkpoint)
are not logged twice.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from hpc_rlhf.config import Config, flatten
from hpc_rlhf.errors import UserError
from hpc_rlhf.rundir import CONFIG, RunDir

_BATCH = 100  # params per log_batch call (MLflow's limit)


def tracking_uri(cfg: Config, run_dir: str) -> str:
    """logging.mlflow.tracking_uri, else the file store RUN_DIR/mlruns."""
    return cfg.logging.mlflow.tracking_uri or "file://" + os.path.abspath(RunDir(run_dir).mlruns)


class MLflowSink:
    def __init__(self, cfg: Config, run_dir: str, run_id: Optional[str], config: dict, identity: dict[str, Any]):
        m = cfg.logging.mlflow
        uri = tracking_uri(cfg, run_dir)
        if uri.startswith("file:"):
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        if run_id is None:
            exp = self.client.get_experiment_by_name(m.experiment)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(m.experiment)
            name = m.run_name or os.path.basename(os.path.abspath(run_dir))
            run_id = self.client.create_run(exp_id, run_name=name).info.run_id
        else:
            self._check_exists(run_id, uri)
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        run = self.client.get_run(run_id)
        have = run.data.params
        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items() if k not in have]
        for i in range(0, len(params), _BATCH):
            self.client.log_batch(run_id, params=params[i : i + _BATCH])
        for k, v in identity.items():
            self.client.set_tag(run_id, f"hpc_rlhf.{k}", str(v))
        self.done = max((self._last_step(k) for k in run.data.metrics), default=-1)

    def _check_exists(self, run_id: str, uri: str) -> None:
        try:
            self.client.get_run(run_id)
        except Exception:  # noqa: BLE001 - MLflow raises its own exception types per store
            raise UserError(
                f"MLflow run {run_id} (RUN_DIR/tracking.json) is not in the tracking store '{uri}'; set "
                "logging.mlflow.tracking_uri back, or delete the file's mlflow entry to start a new MLflow run"
            ) from None

    def _last_step(self, key: str) -> int:
        return max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=-1)

    def log_config_text(self, text: str) -> None:
        self.client.log_text(self.run_id, text, CONFIG)  # named as in the run directory

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if step <= self.done:  # logged by an attempt before this resume
            return
        self.log_eval(step, scalars)

    def log_eval(self, step: int, scalars: dict[str, float]) -> None:
        """Metrics at `step` whatever the steps logged so far (eval/* come after later steps'; metrics.jsonl's
        eval lines keep a resume from sending an evaluation twice)."""
        from mlflow.entities import Metric

        ms = int(time.time() * 1000)
        metrics = [Metric(k, v, ms, step) for k, v in scalars.items()]
        for i in range(0, len(metrics), _BATCH * 10):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + _BATCH * 10])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)
