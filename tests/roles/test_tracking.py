"""W&B (offline) and MLflow (its file store) with the real libraries, from a real `hpc-rlhf train` run of one
rank: every step's metrics arrive with metrics.jsonl's values, the resolved config and the run's identity
too; a run that crashed after a checkpoint and was started again (what a requeue does) continues the same
W&B run and MLflow run, the steps it repeats not logged twice in MLflow; nothing is written outside RUN_DIR."""

from __future__ import annotations

import glob
import json
import os

import pytest

from tests.conftest import TINY, cli, eval_series, tiny_eval

wandb = pytest.importorskip("wandb", reason="pip install 'hpc-rlhf[wandb]'")
mlflow = pytest.importorskip("mlflow", reason="pip install 'hpc-rlhf[mlflow]'")

from tests.roles.wandb_file import history, run_info  # noqa: E402 (needs wandb)

STEPS = 4
TRACKERS = ["logging.wandb.enabled=true", "logging.mlflow.enabled=true", "logging.wandb.tags=[t1]"]


def _mlflow_runs(run: str) -> tuple[object, list]:
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    client = MlflowClient(tracking_uri=f"file://{run}/mlruns")
    exp = client.get_experiment_by_name("hpc-rlhf")
    return client, client.search_runs([exp.experiment_id])


def _comparable(line: dict) -> dict:
    """A metrics.jsonl line without what differs between a step's first run and its repeat after a resume."""
    return {k: v for k, v in line.items() if k not in ("step", "time_unix") and not k.startswith("time/")}


@pytest.fixture(scope="module")
def crashed_and_resumed(tmp_path_factory) -> dict:
    """Attempt 1 crashes in its 4th step (injected fault) after the checkpoint at step 2, having logged steps
    0-2; attempt 2, the same command, resumes at step 2 and ends. HOME and TMPDIR point at empty folders."""
    root = tmp_path_factory.mktemp("tracking")
    run, home, tmp = str(root / "run"), root / "home", root / "tmp"
    home.mkdir(), tmp.mkdir()
    env = {"HOME": str(home), "TMPDIR": str(tmp), "XDG_CACHE_HOME": "", "XDG_CONFIG_HOME": "", "WANDB_DIR": ""}
    env = {**{k: v for k, v in env.items() if v}, "HPC_RLHF_FAULT": "train:4"}
    args = ["train", TINY, f"run_dir={run}", f"total_steps={STEPS}", "runtime.launcher=none", *TRACKERS, *tiny_eval(2)]
    first = cli(*args, check=False, env=env)
    assert first.returncode != 0 and "injected fault" in first.stderr, first.stderr[-2000:]
    ids_first = json.load(open(f"{run}/tracking.json"))
    logged_first = sorted(int(k) for k in history(glob.glob(f"{run}/wandb/offline-run-*/run-*.wandb")[0]))
    env.pop("HPC_RLHF_FAULT")
    cli(*args, env=env)
    return {"run": run, "home": home, "tmp": tmp, "ids_first": ids_first, "logged_first": logged_first}


def test_the_same_wandb_run_continues_with_every_step(crashed_and_resumed):
    run = crashed_and_resumed["run"]
    ids = json.load(open(f"{run}/tracking.json"))
    assert ids == crashed_and_resumed["ids_first"]  # drawn once, kept across attempts
    assert crashed_and_resumed["logged_first"][:2] == [0, 1]  # on disk before the crash (flushed every second)
    files = sorted(glob.glob(f"{run}/wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2, files  # one per attempt, of one run id: `wandb sync` uploads them as one run
    seen: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    for f in files:
        run_id, config = run_info(f)
        assert run_id == ids["wandb"]["run_id"]
        assert config["seed"] == 0 and config["total_steps"] == STEPS and config["logging"]["wandb"]["enabled"]
        assert config["hpc_rlhf"]["run_dir"] == run and len(config["hpc_rlhf"]["config_fingerprint"]) == 16
        for step, values in history(f).items():
            if "eval/step" in values:  # an evaluation: on its own axis, in the row after its step's
                evals.setdefault(values["eval/step"], {k: v for k, v in values.items() if k.startswith("eval/")})
            if "time/step_s" in values:
                seen.setdefault(step, values)  # W&B keeps a step's first values
    lines = [json.loads(x) for x in open(f"{run}/metrics.jsonl") if "time_unix" in x]
    assert sorted(seen) == [x["step"] for x in lines] == list(range(STEPS))
    want = eval_series(run)
    assert sorted(want) == [1, 3] and {s: {**v, "eval/step": s} for s, v in want.items()} == evals
    for line in lines:
        want = _comparable(line)
        assert {k: seen[line["step"]][k] for k in want} == pytest.approx(want, rel=1e-6), line["step"]


def test_the_same_mlflow_run_continues_and_repeated_steps_are_logged_once(crashed_and_resumed):
    run = crashed_and_resumed["run"]
    client, runs = _mlflow_runs(run)
    assert [r.info.run_id for r in runs] == [json.load(open(f"{run}/tracking.json"))["mlflow"]["run_id"]]
    r = runs[0]
    assert r.info.status == "FINISHED" and r.info.run_name == "run"
    assert r.data.params["seed"] == "0" and r.data.params["generate.max_new_tokens"] == "8"
    assert r.data.tags["hpc_rlhf.run_dir"] == run and r.data.tags["hpc_rlhf.algo"] == "ppo"
    assert "config.yaml" in [a.path for a in client.list_artifacts(r.info.run_id)]
    lines = [json.loads(x) for x in open(f"{run}/metrics.jsonl") if "time_unix" in x]
    for key in _comparable(lines[0]):
        hist = client.get_metric_history(r.info.run_id, key)
        assert [m.step for m in hist] == list(range(STEPS)), key  # step 2 once, though it ran twice
        assert [m.value for m in hist] == pytest.approx([x[key] for x in lines], rel=1e-6), key
    evals = eval_series(run)  # version 2's eval ran again on the resume: logged once
    hist = client.get_metric_history(r.info.run_id, "eval/pass_at_1")
    assert [(m.step, m.value) for m in hist] == [
        (s, pytest.approx(e["eval/pass_at_1"])) for s, e in sorted(evals.items())
    ]


def test_offline_trackers_write_inside_run_dir_only(crashed_and_resumed):
    assert os.listdir(crashed_and_resumed["home"]) == []
    assert set(os.listdir(crashed_and_resumed["tmp"])) <= {"torchinductor_root"}  # torch's own (empty), not theirs
    run = crashed_and_resumed["run"]
    assert sorted(e for e in os.listdir(run) if e in ("wandb", "mlruns", "tracking.json")) == [
        "mlruns",
        "tracking.json",
        "wandb",
    ]


def test_an_enabled_tracker_needs_its_package(monkeypatch):
    import importlib.util

    from hpc_rlhf.config import load_config
    from hpc_rlhf.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"logging.mlflow.enabled.*pip install 'hpc-rlhf\[mlflow\]'"):
        load_config(TINY, ["logging.mlflow.enabled=true"])
