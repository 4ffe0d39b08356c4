"""The CUDA paths of issue 16 (marker `gpu`; skipped where no CUDA device is visible, as CI has none):
FSDP2 over NCCL and activation checkpointing on the GPU give the unsharded / un-checkpointed numbers;
bf16 mixed precision (autocast, FSDP2 MixedPrecisionPolicy) keeps fp32 weights and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as tdist
from transformers import AutoModelForCausalLM

from hpc_rlhf.models.forward import checkpoint_layers, response_logprobs
from hpc_rlhf.parallel import fsdp
from tests.models.test_lean_forward import VARIANTS, batch, config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def step(model, b) -> torch.Tensor:
    """One AdamW step on the response log-probs' sum; returns the loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    loss = response_logprobs(model, b, 1.0, (0,))[0].sum()
    loss.backward()
    opt.step()
    return loss.detach()


def test_fsdp_over_nccl_matches_the_unsharded_model(tmp_path):
    dev = torch.device("cuda", 0)
    tdist.init_process_group("nccl", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = AutoModelForCausalLM.from_config(config(VARIANTS["llama"])).to(dev).eval()
        sharded = fsdp.shard_model(copy.deepcopy(plain), fsdp.train_mesh(1, dev))
        b = batch().to(dev)
        assert torch.allclose(step(plain, b), step(sharded, b), atol=1e-5)
        full = fsdp.full_model_state(sharded)
        for k, v in plain.state_dict().items():
            assert torch.allclose(v.cpu(), full[k], atol=1e-5), k
    finally:
        tdist.destroy_process_group()


def test_activation_checkpointing_on_the_gpu_gives_the_same_gradients():
    dev = torch.device("cuda", 0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config(VARIANTS["llama"])).to(dev).eval()
    ckpt = copy.deepcopy(model)
    checkpoint_layers(ckpt)
    b = batch().to(dev)
    for m in (model, ckpt):
        response_logprobs(m, b, 1.0, (0,))[0].sum().backward()
    for (k, p), q in zip(model.named_parameters(), ckpt.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), k


def mixed_precision_matches_fp32(dev: torch.device, backend: str, store: str) -> None:
    """train.precision=bf16 on `dev`: autocast forward/backward on fp32 weights (fp32 gradients), and
    FSDP2's MixedPrecisionPolicy (bf16 params, fp32 reduce) over `backend`, both near the fp32 step."""
    torch.manual_seed(0)
    plain = AutoModelForCausalLM.from_config(config(VARIANTS["llama"])).to(dev).eval()
    b = batch().to(dev)
    ref = response_logprobs(plain, b, 1.0, (0,))[0]
    auto = copy.deepcopy(plain)
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        lp = response_logprobs(auto, b, 1.0, (0,))[0]
    lp.sum().backward()
    assert lp.dtype == torch.float32 and not torch.equal(lp, ref)  # bf16 matmuls did run
    assert torch.allclose(lp, ref, atol=0.1), float((lp - ref).abs().max())
    assert {p.dtype for p in auto.parameters()} == {p.grad.dtype for p in auto.parameters()} == {torch.float32}
    tdist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    try:
        sharded = fsdp.shard_model(copy.deepcopy(plain), fsdp.train_mesh(1, dev), bf16=True)
        lp16 = response_logprobs(sharded, b, 1.0, (0,))[0]
        lp16.sum().backward()
        assert torch.allclose(lp16, ref, atol=0.1), float((lp16 - ref).abs().max())
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in sharded.parameters())
    finally:
        tdist.destroy_process_group()


def test_bf16_mixed_precision_on_the_gpu(tmp_path):
    mixed_precision_matches_fp32(torch.device("cuda", 0), "nccl", f"{tmp_path}/store")
