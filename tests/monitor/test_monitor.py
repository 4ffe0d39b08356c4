"""Seeing a run: `plot` draws what metrics.jsonl holds for RL, SFT and reward-model runs (the plotted points
read back from the JSON beside the PNG and from the figure's own lines), `status` shows step / total, rate,
ETA, last metrics, owner and checkpoint of a local run in progress and of a finished one, and the supervised
stages show a progress bar on rank 0 only when asked."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from hpc_rlhf.monitor.metrics import read_metrics
from hpc_rlhf.monitor.plot import WALL, draw, plot_run
from hpc_rlhf.monitor.progress import progress_lines, run_progress
from hpc_rlhf.rundir import RunDir
from tests.conftest import REPO, TINY, cli
from tests.stages.stage_data import demo_tokenizer, sft_jsonl

pytestmark = pytest.mark.mpi
ASKED = {"HPC_RLHF_PROGRESS": "1"}


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory, mpiexec) -> str:
    run = tmp_path_factory.mktemp("rl") / "run"
    cli("train", TINY, f"run_dir={run}", "total_steps=4")
    return str(run)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, mpiexec) -> tuple[str, str]:
    """An SFT run dir (12 steps) and the stderr of its command, run with the progress bar asked for."""
    d = tmp_path_factory.mktemp("sft")
    args = [f"sft.data_path={sft_jsonl(d / 'sft.jsonl', 48)}", f"model.tokenizer_path={demo_tokenizer(d)}"]
    run = d / "run"
    proc = cli("sft", TINY, *args, "sft.batch_size=4", "logging.progress=true", f"run_dir={run}", env=ASKED)
    return str(run), proc.stderr


def _check_plot(run_dir: str, expect_panels: set[str], tmp_path) -> dict:
    """plot_run's PNG exists, its JSON holds exactly metrics.jsonl's values, and the figure draws those points."""
    png, data_path = plot_run(run_dir)
    assert png == os.path.join(run_dir, "metrics.png") and os.path.getsize(png) > 10_000
    with open(data_path) as f:
        data = json.load(f)["panels"]
    assert expect_panels <= set(data), sorted(data)
    rows = read_metrics(run_dir)
    assert len(rows) > 2
    for panel, lines in data.items():
        for name, pts in lines.items():
            if name == WALL:
                want = [b["time_unix"] - a["time_unix"] for a, b in zip(rows, rows[1:])]
            else:
                want = [r[name] for r in rows if name in r]
            assert pts["value"] == pytest.approx(want, rel=1e-12), (panel, name)
    fig, drawn = draw(rows)
    assert drawn == data
    by_title = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    for panel, lines in data.items():
        got = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in by_title[panel].get_lines()}
        assert got == {name: (pts["step"], pts["value"]) for name, pts in lines.items()}, panel
    out = tmp_path / "elsewhere" / "m.png"  # --out: the PNG there and its JSON beside it, nothing in RUN_DIR
    assert plot_run(run_dir, str(out)) == (str(out), str(tmp_path / "elsewhere" / "m.json"))
    return data


def test_plot_command_and_status_of_a_finished_run(rl_run, tmp_path):
    out = tmp_path / "fig.png"
    printed = cli("plot", rl_run, "--out", str(out)).stdout
    assert printed == f"wrote {out} and {tmp_path / 'fig.json'}\n" and out.stat().st_size > 10_000
    shown = cli("status", rl_run).stdout
    assert "step:       4 / 4 (rl), finished" in shown and "checkpoint: step_000004" in shown
    assert "owner:      none" in shown, shown


def test_plot_rl_run(rl_run, tmp_path):
    data = _check_plot(
        rl_run, {"reward", "KL", "loss", "entropy", "response length", "throughput (s per step)"}, tmp_path
    )
    assert {"ppo/policy_loss", "ppo/value_loss"} <= set(data["loss"])
    assert {"time/gen_s", "time/score_s", "time/train_s", WALL} <= set(data["throughput (s per step)"])
    assert data["reward"]["score/reward_mean"]["step"] == [0, 1, 2, 3]


def test_plot_sft_run(sft_run, tmp_path):
    data = _check_plot(sft_run[0], {"loss", "gradient norm", "throughput (s per step)"}, tmp_path)
    assert set(data["loss"]) == {"sft/loss"} and len(data["loss"]["sft/loss"]["step"]) == 12


def test_plot_rm_run(tiny_rm, tmp_path):
    data = _check_plot(tiny_rm["dir"], {"loss", "gradient norm"}, tmp_path)
    assert set(data["loss"]) == {"rm/loss"}


def test_stage_progress_bar_on_rank_0_only_when_asked(sft_run, tmp_path):
    assert "sft: 100%" in sft_run[1] and "12/12" in sft_run[1]  # asked: HPC_RLHF_PROGRESS=1 (ranks write to pipes)
    rm = [TINY, "rm.num_pairs=64", "logging.progress=true"]
    two = cli("train-rm", *rm, "rm.ranks=2", f"run_dir={tmp_path / 'rm2'}", env=ASKED).stderr
    assert two.count("train-rm:   0%") == 1 and "train-rm: 100%" in two  # one bar: rank 0 of the two
    quiet = cli("train-rm", *rm, f"run_dir={tmp_path / 'rm1'}", env={"HPC_RLHF_PROGRESS": ""}).stderr
    assert "train-rm:" not in quiet and "step/s" not in quiet  # not asked, not a terminal: no bar


def test_status_of_finished_runs(rl_run, sft_run, tiny_rm):
    now = time.time()
    p = run_progress(rl_run)
    assert (p.stage, p.done, p.total, p.finished, p.checkpoint) == ("rl", 4, 4, True, "step_000004")
    assert p.eta_s == 0 and p.steps_per_hour > 0
    last = read_metrics(rl_run)[-1]
    assert p.last == {
        "reward": last["score/total_reward_mean"],
        "kl": last["score/kl_mean"],
        "entropy": last["gen/entropy_estimate"],
        "length": last["gen/response_len_mean"],
    }
    assert progress_lines(p, now)[0].startswith("step:       4 / 4 (rl), finished")
    s = run_progress(sft_run[0])
    assert (s.stage, s.done, s.total, s.finished) == ("sft", 12, 12, True)
    assert set(s.last) == {"loss", "grad_norm"}
    r = run_progress(tiny_rm["dir"])
    assert r.stage == "rm" and r.finished and r.total == r.done > 0


def test_status_of_a_run_in_progress(tmp_path, mpiexec):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "hpc_rlhf.launch.cli", "train", TINY, f"run_dir={run}", "total_steps=400"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and (len(read_metrics(str(run))) < 6 or run_progress(str(run)).checkpoint is None):
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.5)
        p = run_progress(str(run))
        assert p.stage == "rl" and p.total == 400 and 6 <= p.done < 400 and not p.finished
        assert p.steps_per_hour > 0 and p.eta_s == pytest.approx((400 - p.done) * 3600 / p.steps_per_hour)
        assert p.checkpoint.startswith("step_") and set(p.last) == {"reward", "kl", "entropy", "length"}
        line = progress_lines(p)[0]
        assert f"step:       {p.done} / 400 (rl), " in line and "steps/hour, ETA " in line
        assert all(math.isfinite(v) for v in p.last.values())
        shown = cli("status", str(run)).stdout  # the command: the same lines, the owner, no Slurm job
        assert f"run:        {run}\n" in shown and "steps/hour, ETA " in shown and "last:       reward " in shown
        assert f"owner:      pid {proc.pid} on " in shown and "(hpc-rlhf train)" in shown, shown
        assert "job:" not in shown and "attempts:" not in shown
    finally:
        proc.send_signal(signal.SIGTERM)  # a stop: a checkpoint, exit 75
        assert proc.wait(120) == 75
    stopped = run_progress(str(run))
    assert not stopped.finished and stopped.checkpoint == f"step_{stopped.done:06d}"
    assert os.path.exists(RunDir(str(run)).checkpoint(stopped.done))
