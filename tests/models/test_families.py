"""Any Hugging Face decoder family as the policy, from a local folder the test writes with `save_pretrained`
(random init, hidden 32, 2 layers): load, generate, a real PPO step, export, reload.

Per family: the KV-cache sampler's recorded log-probs equal a no-cache forward's; the padded batch
forward equals a plain per-row forward of the unpadded sequence (log-probs, values, scores); a
one-step run in this process (roles, trainer step, checkpoint, export) whose exported folder reloads
with transformers to the checkpoint's logits exactly. Lean path: llama, qwen2, mistral; transformers'
forward: gpt_neox, phi3, gemma, gemma2, gemma3_text. Every policy has a padded vocabulary (3 rows more
than its tokenizer), the value model is the policy folder loaded as a classifier, the reward model a
classifier folder of the same family.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import GoldTask, build_tokenizer
from hpc_rlhf.models.build import build_policy, build_reward, build_value, load_tokenizer
from hpc_rlhf.models.forward import make_batch, response_logprobs, sequence_scores, token_values
from hpc_rlhf.models.generate import SamplingParams, banned_tokens, sample
from hpc_rlhf.models.lean import Lean
from tests.conftest import TINY

FAMILIES = {  # model_type -> config keys beyond the shared tiny shape
    "llama": {},
    "qwen2": {},
    "mistral": {"sliding_window": None},
    "gpt_neox": {"num_key_value_heads": None},
    "phi3": {},
    "gemma": {"head_dim": 8},
    "gemma2": {"head_dim": 8, "sliding_window": 4},  # soft-capping and a sliding window the responses cross
    "gemma3_text": {"head_dim": 8, "sliding_window": 4},  # QK-norm, sliding-window layers
}
LEAN = {"llama", "qwen2", "mistral"}


def family_config(family: str, tok, **extra) -> AutoConfig:
    kw = dict(
        vocab_size=len(tok) + 3,  # a padded vocabulary: rows no token decodes to (never sampled)
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    kw.update(FAMILIES[family], **extra)
    return AutoConfig.for_model(family, **{k: v for k, v in kw.items() if v is not None or k == "sliding_window"})


@pytest.fixture(scope="module", params=list(FAMILIES))
def folders(request, tmp_path_factory) -> dict:
    """A policy folder (causal LM + the demo tokenizer) and a reward-model folder of one family."""
    family = request.param
    root = tmp_path_factory.mktemp(family)
    tok = build_tokenizer(load_config(TINY).task.vocab_words, str(root / "policy"))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(family_config(family, tok)).save_pretrained(root / "policy")
    AutoModelForSequenceClassification.from_config(family_config(family, tok, num_labels=1)).save_pretrained(
        root / "rm"
    )
    return {"family": family, "policy": str(root / "policy"), "rm": str(root / "rm")}


def family_cfg(folders: dict, *overrides: str):
    return load_config(
        TINY,
        [
            f"model.policy_path={folders['policy']}",
            f"model.reward_path={folders['rm']}",
            "model.value_init=policy",
            *overrides,
        ],
    )


def _row_reference(model, prompt: np.ndarray, response: np.ndarray, banned) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow reference on one unpadded row: response log-probs from the HF forward, and the hidden states."""
    ids = torch.as_tensor(np.concatenate([prompt, response]).astype(np.int64))[None]
    logits = model(input_ids=ids, use_cache=False).logits[0, :, : model.config.vocab_size - 3].float()
    logits[:, list(banned)] = -math.inf
    lp = torch.log_softmax(logits, -1)[len(prompt) - 1 : -1]
    return lp.gather(-1, torch.as_tensor(response.astype(np.int64))[:, None])[:, 0], ids


@torch.no_grad()
def test_generate_logprobs_values_scores(folders):
    torch.set_num_threads(1)
    cfg = family_cfg(folders)
    tok = load_tokenizer(cfg)
    policy = build_policy(cfg, tok)
    assert policy.config.model_type == folders["family"] and policy.dtype == torch.float32
    for model in (policy, build_value(cfg, tok)):  # dropout off, whatever the family calls it
        assert not [k for k, v in model.config.to_dict().items() if "drop" in k and isinstance(v, float) and v > 0]
    assert (Lean.of(policy) is not None) == (folders["family"] in LEAN)
    task = GoldTask(0, cfg.task.vocab_words, 2, 7)
    prompts = [task.prompt(i) for i in range(5)]
    banned = banned_tokens(tok.pad_token_id, tok.eos_token_id, True)
    params = SamplingParams(max_new_tokens=8, temperature=0.9)
    out = sample(policy, prompts, list(range(5)), params, tok.eos_token_id, tok.pad_token_id)
    batch = make_batch(prompts, out.responses, tok.pad_token_id)
    lp, _ = response_logprobs(policy, batch, 1.0, banned)
    lp_t, _ = response_logprobs(policy, batch, 0.9, banned)
    assert max(int(r.max()) for r in out.responses) < len(tok)
    for i, r in enumerate(out.logprobs):  # the KV-cache path against a no-cache forward
        assert np.allclose(lp_t[i, : len(r)].numpy(), r, atol=1e-5), folders["family"]
    assert float(lp[batch.response_mask > 0].std()) > 1e-3  # not a degenerate (uniform) model
    value, reward = build_value(cfg, tok), build_reward(cfg, tok)
    assert torch.equal(value.score.weight, build_value(cfg, tok).score.weight)  # a seeded head, not the global RNG
    values, scores = token_values(value, batch), sequence_scores(reward, batch)
    for i, (p, r) in enumerate(zip(prompts, out.responses)):
        ref_lp, ids = _row_reference(policy, p, r, banned)
        assert torch.allclose(lp[i, : len(r)], ref_lp, atol=1e-5), (i, (lp[i, : len(r)] - ref_lp).abs().max())
        h = getattr(value, value.base_model_prefix)(input_ids=ids, use_cache=False).last_hidden_state
        assert torch.allclose(values[i, : len(r)], value.score(h)[0, len(p) - 1 : -1, 0], atol=1e-5)
        h = getattr(reward, reward.base_model_prefix)(input_ids=ids, use_cache=False).last_hidden_state
        assert torch.allclose(scores[i], reward.score(h)[0, -1, 0], atol=1e-5)


def test_a_ppo_step_exports_a_folder_transformers_reloads(folders, tmp_path):
    from hpc_rlhf.checkpoint.store import find_latest
    from hpc_rlhf.launch.prepare import prepare_run
    from hpc_rlhf.launch.signals import StopFlag
    from hpc_rlhf.launch.single import run_single
    from hpc_rlhf.rundir import CKPT_POLICY, RunDir
    from hpc_rlhf.weights.publish import load_into

    torch.set_num_threads(1)
    cfg = family_cfg(folders, f"run_dir={tmp_path / 'run'}", "total_steps=1", "generate.shards_per_step=1")
    cfg, run_dir = prepare_run(cfg)
    assert run_single(cfg, run_dir, torch.device("cpu"), StopFlag()) == "done"
    metrics = [json.loads(x) for x in open(RunDir(run_dir).metrics)]
    assert len(metrics) == 1 and all(math.isfinite(metrics[0][k]) for k in ("ppo/policy_loss", "ppo/value_loss"))
    exported = AutoModelForCausalLM.from_pretrained(RunDir(run_dir).final_policy, local_files_only=True).eval()
    trained = build_policy(cfg, load_tokenizer(cfg, run_dir))
    initial = {k: v.clone() for k, v in trained.state_dict().items()}
    load_into(trained, os.path.join(find_latest(run_dir).path, CKPT_POLICY))
    assert any(not torch.equal(initial[k], v) for k, v in trained.state_dict().items())  # the step moved it
    ids = torch.as_tensor(GoldTask(0, cfg.task.vocab_words, 6, 6).prompt(0).astype(np.int64))[None]
    with torch.no_grad():
        assert torch.equal(exported(input_ids=ids).logits, trained(input_ids=ids).logits)
    assert exported.config.model_type == folders["family"]


def test_a_folder_that_does_not_fit_is_a_one_line_error(tmp_path):
    from hpc_rlhf.errors import UserError
    from hpc_rlhf.launch.prepare import prepare_run

    tok = build_tokenizer(load_config(TINY).task.vocab_words, str(tmp_path / "small"))
    AutoModelForSequenceClassification.from_config(
        family_config("llama", tok, num_labels=1, tie_word_embeddings=False)
    ).save_pretrained(tmp_path / "rm")
    AutoModelForCausalLM.from_config(family_config("gpt_neox", tok, vocab_size=len(tok) - 1)).save_pretrained(
        tmp_path / "small"
    )
    for folder, words in (("rm", ["lacks weights lm_head.weight", "CausalLM"]), ("small", ["tokenizer has"])):
        cfg = load_config(
            TINY, [f"model.policy_path={tmp_path / folder}", f"model.tokenizer_path={tmp_path / 'small'}"]
        )
        with pytest.raises(UserError) as e:
            build_policy(cfg, load_tokenizer(cfg))
        msg = str(e.value)
        assert "\n" not in msg and "model.policy_path" in msg and all(w in msg for w in words), msg
    with pytest.raises(UserError, match="tokenizer has"):  # before any rank starts (config.json only)
        prepare_run(dataclasses.replace(cfg, run_dir=str(tmp_path / "run")))


@pytest.mark.parametrize("family", ["mistral", "gpt_neox", "phi3", "gemma"])
@torch.no_grad()
def test_built_from_model_arch(family, tmp_path):
    """model.arch.model_type: a small random-init model of the family (no folder), its value model on
    the policy's backbone, sampling equal to a no-cache forward."""
    torch.set_num_threads(1)
    cfg = load_config(TINY, [f"model.arch.model_type={family}", "model.value_init=policy"])
    tok = build_tokenizer(cfg.task.vocab_words, str(tmp_path))
    policy, value = build_policy(cfg, tok), build_value(cfg, tok)
    assert policy.config.model_type == family and (Lean.of(policy) is not None) == (family in LEAN)
    backbone = getattr(policy, policy.base_model_prefix).state_dict()
    assert all(torch.equal(v, backbone[k]) for k, v in getattr(value, value.base_model_prefix).state_dict().items())
    prompts = [GoldTask(0, cfg.task.vocab_words, 2, 6).prompt(i) for i in range(3)]
    out = sample(policy, prompts, [0, 1, 2], SamplingParams(max_new_tokens=6), tok.eos_token_id, tok.pad_token_id)
    lp, _ = response_logprobs(policy, make_batch(prompts, out.responses, tok.pad_token_id), 1.0, (tok.pad_token_id,))
    for i, r in enumerate(out.logprobs):
        assert np.allclose(lp[i, : len(r)].numpy(), r, atol=1e-5)
