"""The lean Llama/Qwen2/Mistral forward (models.lean.Lean) against the Hugging Face modules it replaces:
log-probs, values, scores and gradients, on configurations real checkpoints use (GQA, attention
biases, Llama-3 RoPE scaling), with padding on both sides."""

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from hpc_rlhf.models.forward import make_batch, response_logprobs, sequence_scores, token_values
from hpc_rlhf.models.generate import SamplingParams, sample

VARIANTS = {
    "llama": dict(model_type="llama"),
    "llama_gqa_bias": dict(model_type="llama", num_key_value_heads=2, attention_bias=True, mlp_bias=True),
    "llama3_rope": dict(
        model_type="llama",
        num_key_value_heads=1,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    ),
    "qwen2": dict(model_type="qwen2", num_key_value_heads=2),
    "mistral": dict(model_type="mistral", num_key_value_heads=2, sliding_window=None),  # as Mistral v0.2+
}


def config(kw):
    kw = dict(kw)
    mt = kw.pop("model_type")
    return AutoConfig.for_model(
        mt,
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=False,
        **kw,
    )


def hf_only(model):
    """The same model object, forced onto the Hugging Face path."""
    model.__dict__.pop("_hpc_lean", None)
    model._hpc_lean_ok = False
    return model


def lean_on(model):
    model.__dict__.pop("_hpc_lean", None)
    model.__dict__.pop("_hpc_lean_ok", None)
    return model


def batch():
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 50, n) for n in (3, 7, 5, 1)]
    resps = [rng.integers(3, 50, n) for n in (4, 1, 6, 2)]
    return make_batch(prompts, resps, 0)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logprobs_values_scores_and_grads_match_hugging_face(name):
    torch.manual_seed(0)
    conf = config(VARIANTS[name])
    b = batch()
    lm = AutoModelForCausalLM.from_config(conf).eval()
    lp_lean, _ = response_logprobs(lean_on(lm), b, 0.8, (0,))
    from hpc_rlhf.models.lean import Lean

    assert Lean.of(lm) is not None, f"{name} should take the lean path"
    lp_lean.sum().backward()
    g_lean = {k: p.grad.clone() for k, p in lm.named_parameters() if p.grad is not None}
    lm.zero_grad()
    lp_hf, _ = response_logprobs(hf_only(lm), b, 0.8, (0,))
    lp_hf.sum().backward()
    assert torch.allclose(lp_lean, lp_hf, atol=2e-5), (lp_lean - lp_hf).abs().max()
    for k, p in lm.named_parameters():
        if p.grad is not None and k in g_lean:
            assert torch.allclose(g_lean[k], p.grad, atol=1e-4, rtol=1e-3), k
    conf.num_labels = 1
    cls = AutoModelForSequenceClassification.from_config(conf).eval()
    with torch.no_grad():
        v_lean, s_lean = token_values(lean_on(cls), b), sequence_scores(cls, b)
        v_hf, s_hf = token_values(hf_only(cls), b), sequence_scores(cls, b)
    assert torch.allclose(v_lean, v_hf, atol=2e-5) and torch.allclose(s_lean, s_hf, atol=2e-5)


def test_a_sliding_window_keeps_the_hugging_face_path():
    from hpc_rlhf.models.lean import Lean

    lm = AutoModelForCausalLM.from_config(config(dict(model_type="mistral", sliding_window=16)))
    assert Lean.of(lm) is None


@pytest.mark.parametrize("name", ["llama_gqa_bias", "qwen2", "mistral"])
def test_cached_decoding_matches_the_hugging_face_forward(name):
    torch.manual_seed(1)
    lm = AutoModelForCausalLM.from_config(config(VARIANTS[name])).eval()
    rng = np.random.default_rng(1)
    prompts = [rng.integers(3, 50, n).astype(np.int32) for n in (2, 6, 4)]
    out = sample(lean_on(lm), prompts, [5, 6, 7], SamplingParams(max_new_tokens=6), 1, 0)
    b = make_batch(prompts, out.responses, 0)
    with torch.no_grad():
        lp, _ = response_logprobs(hf_only(lm), b, 1.0, (0,))
    for i, r in enumerate(out.logprobs):
        assert np.allclose(lp[i, : len(r)].numpy(), r, atol=2e-5)
