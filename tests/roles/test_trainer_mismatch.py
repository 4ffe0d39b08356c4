"""algo.behavior_logprobs=recompute and algo.tis_cap in a real run: the trainer recomputes the old
policy's log-probs (split over the train ranks, gathered), weights the policy loss by TIS and logs the
mismatch against the sampler. With the native engine the sampler's log-probs are the training
forward's, so the mismatch is ~0 and no token is capped."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY, cli

pytestmark = [pytest.mark.mpi]


def test_recompute_and_tis_log_the_mismatch_which_is_nil_with_the_native_engine(tiny_rm, mpiexec, tmp_path):
    run = tmp_path / "run"
    over = ["algo.behavior_logprobs=recompute", "algo.tis_cap=2.0", "layout.train=2", "total_steps=2"]
    cli("train", TINY, *tiny_rm["overrides"], f"run_dir={run}", *over, timeout=600)
    lines = [json.loads(x) for x in open(run / "metrics.jsonl") if x.strip()]
    assert [x["step"] for x in lines] == [0, 1]
    for m in lines:
        assert 0 <= m["mismatch/kl"] < 1e-6 and abs(m["mismatch/k1"]) < 1e-5
        assert abs(m["mismatch/ratio_mean"] - 1) < 1e-5 and abs(m["mismatch/ratio_max"] - 1) < 1e-4
        assert m["mismatch/capped_frac"] == 0


def test_the_sampler_default_logs_no_mismatch(tiny_rm, mpiexec, tmp_path):
    run = tmp_path / "run"
    cli("train", TINY, *tiny_rm["overrides"], f"run_dir={run}", "total_steps=1", timeout=600)
    m = json.loads(open(run / "metrics.jsonl").readline())
    assert not any(k.startswith("mismatch/") for k in m)
