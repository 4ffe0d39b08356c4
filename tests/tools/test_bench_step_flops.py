"""The physical limit docs/performance.md states for the GRPO workload (tools/bench/compare_trl_grpo.py
step_flops): its count of a forward's model FLOPs against torch's own FLOP counter on the real model of
each size, and the limit's arithmetic."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

from tests.conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tools", "bench"))
import common  # noqa: E402
import compare_trl_grpo as grpo  # noqa: E402


@pytest.mark.parametrize("size", list(common.SIZES))
def test_a_forward_counts_what_torch_counts_on_the_workload_model(size):
    a = common.arch(size)
    conf = LlamaConfig(
        vocab_size=4 + common.VOCAB_WORDS,
        hidden_size=a["hidden_size"],
        num_hidden_layers=a["num_layers"],
        num_attention_heads=a["num_heads"],
        intermediate_size=a["intermediate_size"],
        max_position_embeddings=a["max_position"],
        tie_word_embeddings=False,
        attn_implementation="eager",  # attention as two matmuls, which the counter sees (not SDPA's CPU kernel)
    )
    model = LlamaForCausalLM(conf).eval()
    seq = common.PROMPT_LEN + common.NEW_TOKENS
    ids = torch.randint(4, conf.vocab_size, (grpo.SAMPLES, seq))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, logits_to_keep=common.NEW_TOKENS, use_cache=False)
    counted = counter.get_total_flops()  # matmuls and attention; norms and activations are not model FLOPs
    assert grpo.step_flops(size)["reference"] == pytest.approx(counted, rel=1e-9)


def test_the_limit_and_what_2x_needs():
    f = grpo.step_flops("large")
    assert f["updates"] == 3 * common.arch("large")["epochs"] * f["reference"]
    lim = grpo.physical_limit("large", 200.0, {"ours": 2.0, "trl": 3.0})
    total = sum(f.values())
    assert lim["limit_s"] == pytest.approx(total / 200e9)
    assert lim["distance"] == pytest.approx({"ours": 2.0 * 200e9 / total, "trl": 3.0 * 200e9 / total})
    assert lim["target_step_s"] == 1.5 and lim["target_share_of_peak"] == pytest.approx(lim["limit_s"] / 1.5)
