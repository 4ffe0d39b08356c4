"""The whole recipe on the dev cluster: SFT, reward model and RL as three jobs chained with afterok; the SFT job
is preempted by a `high` job, requeues itself and resumes, and the chain goes on to the end without restarting."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.launch import slurm_events
from hpc_rlhf.launch import slurm_runs as slurm_cmds
from hpc_rlhf.launch.recipe import recipe_status, submit_recipe
from tests.conftest import TINY
from tests.launch.slurm.test_dev_cluster import DONE, job_info, start_requeued_now, wait_for, wait_state
from tests.stages.stage_data import demo_tokenizer, sft_jsonl

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

SFT_STEPS = 4800  # 48 examples, batch 4, 400 epochs (~50 s on a quiet machine): still running when the preemption lands


def _preempt(job_id: str, tmp_path: Path, jobs: list) -> None:
    """A `high` job that wants the whole node of `job_id` preempts it (GraceTime 30 s, REQUEUE)."""
    node = wait_for(lambda: job_info(job_id).get("BatchHost"), f"the node of job {job_id}")
    r = subprocess.run(
        ["sbatch", "--parsable", "-p", "high", "-w", node, "--exclusive", f"--chdir={tmp_path}", "-o", "/dev/null"]
        + ["--wrap", "sleep 1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    jobs.append(r.stdout.strip().split(";")[0])


def test_recipe_runs_as_three_chained_jobs_through_a_preemption(tmp_path, jobs):
    root = tmp_path / "recipe"
    cfg = load_config(
        TINY,
        [
            f"run_dir={root}",
            f"sft.data_path={sft_jsonl(tmp_path / 'sft.jsonl', 48)}",
            f"model.tokenizer_path={demo_tokenizer(tmp_path)}",
            "sft.epochs=400",
            "sft.batch_size=4",
            "checkpoint.every_steps=1000",
            "slurm.timeout_min=10",
        ],
    )
    ids = submit_recipe(cfg, out=io.StringIO())
    jobs.extend(ids.values())
    sft = root / "sft"
    wait_for(lambda: (slurm_cmds.progress(sft)["step"] or 0) >= 1, "the first SFT step", timeout=180)
    _preempt(ids["sft"], tmp_path, jobs)
    start_requeued_now(ids["sft"], timeout=120)
    stopped_at = slurm_cmds.progress(sft)["checkpoint"]
    assert stopped_at is not None and int(stopped_at.split("_")[1]) < SFT_STEPS, stopped_at
    done = wait_state(ids["rl"], DONE, timeout=600)
    assert done["JobState"] == "COMPLETED", done
    assert int(job_info(ids["sft"])["Restarts"]) >= 1
    assert [e["n"] for e in slurm_events.read_events(sft) if e["event"] == "requeue"] == [1]
    for stage in ("rm", "rl"):  # each ran once, as the job the chain submitted
        assert int(job_info(ids[stage])["Restarts"]) == 0
    assert slurm_cmds.progress(sft)["checkpoint"] == f"step_{SFT_STEPS:06d}"
    assert (root / "rm" / "reward_model" / "rm_report.json").exists()
    assert (root / "rl" / "final" / "policy" / "model.safetensors").exists()
    rl_cfg = load_config(str(root / "rl" / "config.yaml"))
    assert rl_cfg.model.policy_path == str(sft / "final" / "policy")
    shown = io.StringIO()
    rows = recipe_status(root, out=shown)
    assert [r["state"] for r in rows] == ["COMPLETED"] * 3, shown.getvalue()
    assert json.loads((root / "recipe.json").read_text())["stages"][0]["job_id"] == ids["sft"]
