"""`hpc-rlhf plot RUN_DIR`: metrics.jsonl drawn as one figure of panels, for an RL, SFT or reward-model run.

    png, data = plot_run("runs/demo")              # RUN_DIR/metrics.png + RUN_DIR/metrics_plot.json
    png, data = plot_run("runs/demo", out="/tmp/m.png")   # the JSON beside it: /tmp/m.json
    fig, data = draw(rows)                         # the figure and {panel: {label: {"step": [...], "value": [...]}}}

Panels (each drawn when the run logged one of its metrics): rewards, KL, losses, entropy, response length,
gradient norms, and throughput (seconds per step: the phases an RL step logs, or the wall time between
two logged steps of any run). The JSON beside the PNG holds exactly the plotted points, so the figure can
be checked or redrawn without reading the image. matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import fnmatch
import json
import os
from typing import Any, Optional

from hpc_rlhf.errors import UserError
from hpc_rlhf.monitor.metrics import read_metrics, series, stage_of, step_seconds
from hpc_rlhf.rundir import METRICS_PLOT, METRICS_PLOT_DATA, RunDir, write_atomic

WALL = "wall s per step"  # the label of the time between two logged steps (every stage)

# panel title -> metric name patterns (fnmatch), drawn in this order; a panel without any match is left out
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("score/total_reward_mean", "score/reward_mean", "score/reward/*", "gen/gold_reward_mean")),
    ("KL", ("score/kl_mean", "ppo/approx_kl")),
    ("loss", ("ppo/policy_loss", "ppo/value_loss", "ppo/kl_loss", "sft/loss", "rm/loss")),
    ("entropy", ("gen/entropy_estimate",)),
    ("response length", ("gen/response_len_mean",)),
    ("gradient norm", ("ppo/policy_grad_norm", "ppo/value_grad_norm", "sft/grad_norm", "rm/grad_norm")),
    ("throughput (s per step)", ("time/step_s", "time/gen_s", "time/score_s", "time/train_s")),
)


def panels(rows: list[dict]) -> dict[str, dict[str, dict[str, list]]]:
    """{panel: {metric: {"step": [...], "value": [...]}}} of the metrics the rows hold, in PANELS order."""
    names = sorted(set().union(*rows)) if rows else []
    out: dict[str, dict[str, dict[str, list]]] = {}
    for title, patterns in PANELS:
        panel: dict[str, dict[str, list]] = {}
        for pat in patterns:
            for name in fnmatch.filter(names, pat):
                steps, values = series(rows, name)
                if steps and name not in panel:
                    panel[name] = {"step": steps, "value": values}
        if title.startswith("throughput"):
            steps, secs = step_seconds(rows)
            if steps:
                panel[WALL] = {"step": steps, "value": secs}
        if panel:
            out[title] = panel
    return out


def draw(rows: list[dict], title: str = "") -> tuple[Any, dict]:
    """The figure of `rows` (one axis per panel, two columns) and the plotted data (see panels())."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = panels(rows)
    n = max(1, len(data))
    cols = 2 if n > 1 else 1
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 3.2 * nrows), squeeze=False)
    for ax, (panel, lines) in zip(axes.flat, data.items()):
        for label, pts in lines.items():
            ax.plot(pts["step"], pts["value"], label=label, marker="." if len(pts["step"]) < 30 else None)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(data) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, data


def plot_run(run_dir: str, out: Optional[str] = None) -> tuple[str, str]:
    """Draw RUN_DIR/metrics.jsonl into `out` (default RUN_DIR/metrics.png) and write the plotted points as
    JSON beside it (RUN_DIR/metrics_plot.json, or OUT with .json); returns (png path, json path)."""
    rd = RunDir(run_dir)
    if not os.path.isdir(run_dir):
        raise UserError(f"run dir '{run_dir}' does not exist")
    rows = read_metrics(run_dir)
    if not rows:
        raise UserError(f"'{rd.metrics}' has no logged step yet: nothing to plot (is '{run_dir}' a run dir?)")
    png = out or os.path.join(run_dir, METRICS_PLOT)
    data_path = os.path.splitext(png)[0] + ".json" if out else os.path.join(run_dir, METRICS_PLOT_DATA)
    if os.path.isdir(png):
        raise UserError(f"--out '{png}' is a folder; name the PNG file to write")
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    stage = stage_of(rows)
    fig, data = draw(rows, f"{os.path.basename(os.path.abspath(run_dir))} ({stage}, {len(rows)} steps)")
    fig.savefig(png, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    write_atomic(data_path, (json.dumps({"stage": stage, "panels": data}, indent=1) + "\n").encode())
    return png, data_path
