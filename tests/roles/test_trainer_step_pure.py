"""The PPO step's math (roles/trainer_step.py) holds no clock and knows no task; roles/timing.Spans
times the sections it names."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

from hpc_rlhf.roles import trainer_step
from hpc_rlhf.roles.timing import PhaseTimer, Spans


def test_the_ppo_math_imports_no_clock_and_no_demo():
    tree = ast.parse(Path(trainer_step.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert not {m for m in imported if m in ("time", "timeit") or m.startswith("hpc_rlhf.demo")}, imported
    assert "hpc_rlhf.roles.timing" not in imported
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
    }
    assert not names & {"perf_counter", "monotonic", "time", "gold_reward", "read_shard"}


def test_spans_keep_named_sections_and_send_waits_to_the_phase_timer(tmp_path, monkeypatch):
    monkeypatch.setenv("HPC_RLHF_TIMING", "1")
    timer = PhaseTimer(str(tmp_path), "train", 0)
    spans = Spans(timer)

    def run(name: str, s: float) -> None:
        with spans(name):
            time.sleep(s)

    for a, b in ((0.02, 0.001), (0.001, 0.03)):  # two minibatches, policy and value side by side
        threads = [
            threading.Thread(target=run, args=(n, s)) for n, s in (("optimizer/policy", a), ("optimizer/value", b))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    run("wait/allreduce", 0.005)
    assert len(spans.seconds["optimizer/policy"]) == len(spans.seconds["optimizer/value"]) == 2
    assert 0.05 <= spans.paired_max("optimizer/policy", "optimizer/value") < 0.2  # 0.02 + 0.03
    # a critic-free step has no value optimizer: the policy's own time, not 0
    assert 0.02 <= spans.paired_max("optimizer/policy", "optimizer/critic-free") < 0.2
    assert set(timer.phases) == {"wait/allreduce"} and timer.phases["wait/allreduce"] >= 0.005
    with trainer_step.no_probe("anything"):  # the default probe does nothing
        pass
