"""LoRA (models/lora.py): the optimizer holds the adapters only, published state is adapters + base hash,
the reference view is the base bit for bit, and both exports reload (transformers / peft) with the
trained model's logits."""

from __future__ import annotations

import dataclasses
import json
import os

import peft
import pytest
import torch
from transformers import AutoModelForCausalLM

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import GoldTask, build_tokenizer
from hpc_rlhf.errors import UserError
from hpc_rlhf.models import lora
from hpc_rlhf.models.build import build_policy, build_reference, load_tokenizer
from hpc_rlhf.models.export import export_policy
from hpc_rlhf.models.forward import make_batch, response_logprobs
from hpc_rlhf.parallel.dp import DataParallel
from hpc_rlhf.roles.trainer_context import build_context
from hpc_rlhf.weights.publish import cpu_state, load_state
from tests.conftest import TINY


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny base policy saved as a Hugging Face folder, its tokenizer, and a config training LoRA on it."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("lora")
    build_tokenizer(32, str(d / "tok"))
    cfg = load_config(TINY, [f"model.tokenizer_path={d}/tok", "model.lora.r=4", "model.lora.alpha=8"])
    tok = load_tokenizer(cfg)
    build_policy(cfg, tok).save_pretrained(d / "base")
    cfg = load_config(TINY, [f"model.tokenizer_path={d}/tok", f"model.policy_path={d}/base", "model.lora.r=4"])
    return cfg, tok, d


def _trained(cfg, tok) -> torch.nn.Module:
    """A LoRA policy whose adapters moved away from their init (B != 0), as training leaves them."""
    model = lora.apply(build_policy(cfg, tok), cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lora.trainable(model):
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def _batch(tok):
    task = GoldTask(0, 32, 3, 6)
    prompts = [task.prompt(i) for i in range(4)]
    return make_batch(prompts, [task.prompt(i + 10) for i in range(4)], tok.pad_token_id)


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def test_only_adapters_train_and_are_published(base):
    cfg, tok, d = base
    tr = build_context(cfg, str(d / "run"), torch.device("cpu"), DataParallel(0, 1))
    held = {id(p) for g in tr.opt_policy.param_groups for p in g["params"]}
    named = dict(tr.policy.named_parameters())
    assert held == {id(p) for n, p in named.items() if "lora_" in n} and len(held) == 2 * 7  # A, B of 7 modules
    state = cpu_state(tr.policy)
    assert set(state) == {n for n in named if "lora_" in n} | {lora.BASE_KEY}
    other = lora.apply(build_policy(cfg, tok), cfg)
    load_state(other, state, "adapters")  # same base: fits
    moved = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, policy_path=None, init_seed=99))
    stranger = lora.apply(build_policy(moved, tok), moved)  # another base (model.arch, another init)
    with pytest.raises(RuntimeError, match="another base"):
        load_state(stranger, state, "adapters")


def test_reference_view_is_the_base_bit_for_bit(base):
    cfg, tok, _ = base
    policy, ref, batch = _trained(cfg, tok), build_reference(cfg, tok), _batch(tok)
    with torch.no_grad():
        want, _ = response_logprobs(ref, batch)
        got, _ = response_logprobs(lora.BaseView(policy), batch)
        adapted, _ = response_logprobs(policy, batch)
        with lora.base_only(policy):  # the Hugging Face forward with the adapters off
            hf_base, _ = response_logprobs(policy, batch)
    assert torch.equal(got, want)
    assert float((hf_base - want).abs().max()) < 1e-5
    assert float((adapted - want).abs().max()) > 1e-3  # the adapters do change the policy


@pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)  # peft 0.21 on transformers 5
@pytest.mark.parametrize("mode", ["merged", "adapter"])
def test_exports_reload_with_the_trained_logits(base, mode, tmp_path):
    cfg, tok, d = base
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, lora=dataclasses.replace(cfg.model.lora, export=mode))
    )
    policy, batch = _trained(cfg, tok), _batch(tok)
    want = _logits(policy, batch)
    folder = export_policy(str(tmp_path), policy, tok)
    if mode == "merged":
        assert "model.safetensors" in os.listdir(folder) and "adapter_config.json" not in os.listdir(folder)
        loaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    else:
        with open(os.path.join(folder, "adapter_config.json")) as f:
            assert json.load(f)["base_model_name_or_path"] == str(d / "base")  # the note of the base
        plain = AutoModelForCausalLM.from_pretrained(d / "base", local_files_only=True)
        loaded = peft.PeftModel.from_pretrained(plain, folder, local_files_only=True)
    assert float((_logits(loaded, batch) - want).abs().max()) < 1e-5
    assert torch.equal(_logits(policy, batch), want)  # exporting left the trained model as it was


def test_target_modules_the_policy_lacks_fail_before_the_run(base, tmp_path):
    cfg, _, _ = base
    bad = dataclasses.replace(cfg.model.lora, target_modules=["q_proj", "c_attn"])
    bad_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, lora=bad))
    with pytest.raises(UserError, match=r"model.lora.target_modules.*c_attn.*q_proj"):
        lora.check_targets(bad_cfg, str(tmp_path))


@pytest.mark.gpu
def test_lora_on_cuda_in_bf16_trains_adapters_and_keeps_the_base_as_reference(base):
    """The GPU path (runtime.bf16 places every model in bf16 on CUDA): the reference view is still the
    base bit for bit, and a backward pass reaches the adapters only."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from hpc_rlhf.models.build import place

    cfg, tok, _ = base
    dev = torch.device("cuda")
    policy = place(_trained(cfg, tok), dev, True)
    ref = place(build_reference(cfg, tok), dev, True)
    batch = _batch(tok).to(dev)
    with torch.no_grad():
        want, _ = response_logprobs(ref, batch)
        got, _ = response_logprobs(lora.BaseView(policy), batch)
    assert torch.equal(got, want)
    lp, _ = response_logprobs(policy, batch)
    lp.sum().backward()
    assert all((p.grad is not None) == ("lora_" in n) for n, p in policy.named_parameters())
