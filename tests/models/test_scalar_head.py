"""PPO on decoder families for which transformers has no sequence-classification class (Granite, Cohere),
from a local policy folder the test writes (random init, hidden 32, 2 layers): the value model is the
family's base model plus a seeded scalar head; `train-rm` from the policy folder exports a reward model
folder that loads back (hpc_rlhf.models.scalar_head.load_scalar_model, and model.reward_path); a PPO step
against it trains, checkpoints and exports a policy transformers reloads; the value model reloads from the
checkpoint. Families with a transformers class keep it (today's numbers)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import GoldTask, build_tokenizer
from hpc_rlhf.models.build import build_policy, build_reward, build_value, check_folders, load_tokenizer
from hpc_rlhf.models.forward import make_batch, sequence_scores, token_values
from hpc_rlhf.models.scalar_head import has_native_classifier, load_scalar_model
from tests.conftest import TINY

FAMILIES = ["granite", "cohere"]  # no *ForSequenceClassification in transformers


def _config(family: str, tok) -> AutoConfig:
    return AutoConfig.for_model(
        family,
        vocab_size=len(tok) + 3,  # a padded vocabulary, as tests/models/test_families.py
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


@pytest.fixture(scope="module", params=FAMILIES)
def policy_folder(request, tmp_path_factory) -> dict:
    family = request.param
    root = tmp_path_factory.mktemp(family)
    tok = build_tokenizer(load_config(TINY).task.vocab_words, str(root / "policy"))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_config(family, tok)).save_pretrained(root / "policy")
    return {"family": family, "root": root, "policy": str(root / "policy")}


def _cfg(folder: dict, *overrides: str):
    return load_config(TINY, [f"model.policy_path={folder['policy']}", "model.value_init=policy", *overrides])


def test_the_family_has_no_classifier_in_transformers(policy_folder):
    assert not has_native_classifier(policy_folder["family"])
    with pytest.raises(ValueError, match="Unrecognized configuration class"):
        AutoModelForSequenceClassification.from_pretrained(policy_folder["policy"], local_files_only=True)
    assert all(has_native_classifier(f) for f in ("llama", "qwen2", "mistral", "gpt_neox", "phi3", "gemma", "gpt2"))


@torch.no_grad()
def test_value_model_is_the_base_model_with_a_seeded_scalar_head(policy_folder):
    torch.set_num_threads(1)
    cfg = _cfg(policy_folder)
    tok = load_tokenizer(cfg)
    policy, value = build_policy(cfg, tok), build_value(cfg, tok)
    assert type(value).__name__ == f"{type(policy).__name__.replace('ForCausalLM', '')}ForSequenceClassification"
    body = getattr(policy, policy.base_model_prefix).state_dict()
    assert all(torch.equal(v, body[k]) for k, v in getattr(value, value.base_model_prefix).state_dict().items())
    assert set(value.state_dict()) - {f"model.{k}" for k in body} == {"score.weight"}
    assert torch.equal(value.score.weight, build_value(cfg, tok).score.weight)  # seeded, not the global RNG
    other = build_value(_cfg(policy_folder, "model.init_seed=5"), tok)
    assert not torch.equal(value.score.weight, other.score.weight) and value.score.weight.std() > 0
    prompts = [GoldTask(0, cfg.task.vocab_words, 2, 6).prompt(i) for i in range(3)]
    responses = [np.asarray(r, dtype=np.int32) for r in ([5, 6, 7], [8], [9, 10, tok.eos_token_id])]
    batch = make_batch(prompts, responses, tok.pad_token_id)
    values, scores = token_values(value, batch), sequence_scores(value, batch)
    for i, (p, r) in enumerate(zip(prompts, responses)):  # against one unpadded row through the HF modules
        ids = torch.as_tensor(np.concatenate([p, r]).astype(np.int64))[None]
        h = value.model(input_ids=ids, use_cache=False).last_hidden_state
        assert torch.allclose(values[i, : len(r)], value.score(h)[0, len(p) - 1 : -1, 0], atol=1e-5)
        assert torch.allclose(scores[i], value(input_ids=ids).logits[0, 0], atol=1e-5)  # the class's own forward


def _train_rm(folder: dict) -> str:
    from hpc_rlhf.stages.reward_model import train_reward_model

    run = folder["root"] / "rm_run"
    if not (run / "reward_model").exists():
        cfg = _cfg(folder, f"run_dir={run}", "rm.num_pairs=128", "checkpoint.every_steps=0")
        train_reward_model(cfg)
    return str(run / "reward_model")


def test_train_rm_from_the_policy_exports_a_folder_that_loads_back(policy_folder):
    torch.set_num_threads(1)
    rm_dir = _train_rm(policy_folder)  # trains with autograd: not under no_grad
    conf = json.load(open(os.path.join(rm_dir, "config.json")))
    assert conf["model_type"] == policy_folder["family"] and AutoConfig.from_pretrained(rm_dir).num_labels == 1
    assert conf["architectures"] == [f"{type(load_scalar_model(rm_dir)).__name__}"]
    cfg = _cfg(policy_folder, f"model.reward_path={rm_dir}")
    tok = load_tokenizer(cfg)
    check_folders(cfg, tok)  # accepted before any rank starts
    loaded, reward = load_scalar_model(rm_dir, local_files_only=True), build_reward(cfg, tok)
    assert all(torch.equal(v, reward.state_dict()[k]) for k, v in loaded.state_dict().items())
    initial = build_value(_cfg(policy_folder), tok)  # the policy's backbone + a head from init_seed + 2
    assert not torch.equal(reward.model.embed_tokens.weight, initial.model.embed_tokens.weight)  # it trained
    backbone = AutoModel.from_pretrained(rm_dir, local_files_only=True)  # the backbone alone, by transformers
    assert torch.equal(backbone.embed_tokens.weight, reward.model.embed_tokens.weight)
    report = json.load(open(os.path.join(rm_dir, "rm_report.json")))
    assert math.isfinite(report["rm_final_loss"])


def test_a_ppo_step_trains_exports_and_reloads(policy_folder, tmp_path):
    from hpc_rlhf.checkpoint.store import find_latest
    from hpc_rlhf.checkpoint.train_state import load_train_state
    from hpc_rlhf.launch.prepare import prepare_run
    from hpc_rlhf.launch.signals import StopFlag
    from hpc_rlhf.launch.single import run_single
    from hpc_rlhf.rundir import CKPT_POLICY, RunDir
    from hpc_rlhf.weights.publish import load_into

    torch.set_num_threads(1)
    rm_dir = _train_rm(policy_folder)
    over = [f"run_dir={tmp_path / 'run'}", f"model.reward_path={rm_dir}", "total_steps=1", "generate.shards_per_step=1"]
    cfg, run_dir = prepare_run(_cfg(policy_folder, *over))
    assert run_single(cfg, run_dir, torch.device("cpu"), StopFlag()) == "done"
    metrics = [json.loads(x) for x in open(RunDir(run_dir).metrics)]
    assert len(metrics) == 1 and all(math.isfinite(metrics[0][k]) for k in ("ppo/policy_loss", "ppo/value_loss"))
    assert metrics[0]["ppo/value_loss"] > 0
    tok = load_tokenizer(cfg, run_dir)
    exported = AutoModelForCausalLM.from_pretrained(RunDir(run_dir).final_policy, local_files_only=True).eval()
    trained = build_policy(cfg, tok)
    load_into(trained, os.path.join(find_latest(run_dir).path, CKPT_POLICY))
    ids = torch.as_tensor(GoldTask(0, cfg.task.vocab_words, 6, 6).prompt(0).astype(np.int64))[None]
    with torch.no_grad():
        assert torch.equal(exported(input_ids=ids).logits, trained(input_ids=ids).logits)
    value = build_value(cfg, tok)  # the trained value model back from the checkpoint, every weight named
    state = load_train_state(find_latest(run_dir).path, cfg)
    initial = {k: v.clone() for k, v in value.state_dict().items()}
    value.load_state_dict(state.value, strict=True)
    assert any(not torch.equal(initial[k], v) for k, v in value.state_dict().items())
