"""tools/bench/run_all.py keeps what it does not measure: a skipped part, a part added from its script's
JSON and the notes survive a rewrite of docs/performance.md, and every section renders from the JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

BENCH = os.path.join(REPO, "tools", "bench")
sys.path.insert(0, BENCH)
import run_all  # noqa: E402


def _grpo_trl() -> dict:
    arch = {"hidden_size": 64, "num_layers": 2, "epochs": 1}
    run = {"samples_per_s": 100.0, "step_s": [0.16] * 10}
    return {
        "rounds": 1,
        "prompts_per_step": 4,
        "samples_per_prompt": 4,
        "command": "python tools/bench/compare_trl_grpo.py --rounds 1",
        "machine": {"date": "2026-11-30 05:00:00 UTC", "loadavg_at_start": [1.0, 1.0, 1.0]},
        "sizes": {
            "small": {
                "arch": arch,
                "samples_per_s_median": {"ours": 300.0, "trl": 100.0},
                "step_s_median": {"ours": 0.053, "trl": 0.16},
                "ratio_vs_trl": 3.0,
                "ratio_per_round": [3.0],
                "ratio_per_round_median": 3.0,
                "phases_median": {
                    "ours": {"time/gen_s": 0.01, "time/score_s": 0.01, "time/train_s": 0.03},
                    "trl": {"generate_s": 0.05, "generate_and_score_s": 0.07},
                },
                "runs": {"ours": [{**run, "samples_per_s": 300.0}], "trl": [run]},
            }
        },
    }


def _algos() -> dict:
    row = {"peak_rss_mib": 600.0, "rss_after_build_mib": 450.0, "train_s_median": 1.0, "train_s_best": 0.9}
    return {
        "size": "large",
        "machine": {"date": "2026-11-30 03:51:47 UTC"},
        "summary": {
            "ppo": {**row, "value_fwd_s_median": 0.05, "update_s_median": 0.8},
            "grpo": {
                **row,
                "peak_rss_mib": 500.0,
                "train_s_median": 0.6,
                "value_fwd_s_median": 0.0,
                "update_s_median": 0.5,
            },
        },
    }


def test_a_skipped_part_and_the_notes_are_kept_and_added_parts_render(tmp_path):
    out = tmp_path / "docs"
    out.mkdir()
    machine = {"cpu": "x", "cores": 2, "python": "3", "torch": "2", "torch_cpu_capability": "AVX512"}
    machine.update(loadavg_at_start=[1.0, 1.0, 1.0], date="2026-11-27 12:54:10 UTC")
    earlier = {"machine": machine, "algos": _algos(), "notes": "**Kept notes.**"}
    (out / "performance.json").write_text(json.dumps(earlier))
    res = {"machine": {"date": "now"}}
    run_all.keep_earlier(res, earlier)
    assert res["algos"] == earlier["algos"] and res["notes"] == "**Kept notes.**"
    assert res["carried"] == {"algos": "2026-11-30 03:51:47 UTC"}  # the part's own date, not the page's

    grpo = tmp_path / "grpo.json"
    grpo.write_text(json.dumps(_grpo_trl()))
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "run_all.py"), "--out-dir", str(out)]
        + ["--from-json", str(out / "performance.json"), "--add", f"grpo_trl={grpo}"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    md = (out / "performance.md").read_text()
    for heading in ("## Against TRL's GRPOTrainer", "## PPO against the critic-free algorithms", "## Notes"):
        assert md.count(heading) == 1, heading
    assert "**Kept notes.**" in md and "| hidden 64 / 2 layers | 1 | 300.00 | 100.00 | **3.00x** |" in md
    assert "python tools/bench/compare_trl_grpo.py --rounds 1" in md
    assert "Without the value model a train rank holds 100 MiB less" in md and "hidden 256 / 4 layers / 4 epochs" in md
    saved = json.loads((out / "performance.json").read_text())
    assert saved["grpo_trl"]["rounds"] == 1 and saved["notes"] == "**Kept notes.**"  # the next rewrite keeps them
