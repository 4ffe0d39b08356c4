"""train.precision=bf16 is mixed precision: the trainer keeps fp32 weights, gradients and AdamW state
while its matmuls run in bf16 (autocast), and the generator's and scorer's models are held in bf16,
the trainer's fp32 weights cast on load. Real Trainer, Generator and Scorer on the tiny config (CPU)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hpc_rlhf.config import load_config, resume_diff
from hpc_rlhf.errors import UserError
from hpc_rlhf.parallel.dp import DataParallel
from hpc_rlhf.roles.generator import Generator
from hpc_rlhf.roles.scorer import Scorer
from hpc_rlhf.roles.trainer import train_step
from hpc_rlhf.roles.trainer_context import build_context, policy_state
from hpc_rlhf.roles.trainer_step import Norms, StepData, advantages, old_values, policy_objective
from hpc_rlhf.weights.publish import load_state
from tests.conftest import TINY
from tests.roles.test_trainer_groups import part, samples

MATMULS = {"mm", "addmm", "bmm", "baddbmm", "_scaled_dot_product_flash_attention_for_cpu"}


class MatmulDtypes(TorchDispatchMode):
    """The dtypes of the matmul inputs dispatched while active (after autocast has cast them)."""

    def __init__(self):
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in MATMULS:
            self.seen |= {a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()}
        return func(*args, **(kwargs or {}))


def test_bf16_trains_fp32_masters_in_bf16_compute_and_serves_bf16(tiny_rm, tmp_path):
    cfg = load_config(TINY, [*tiny_rm["overrides"], f"run_dir={tmp_path}", "generate.samples_per_prompt=4"])
    cfg16 = load_config(
        TINY, [*tiny_rm["overrides"], f"run_dir={tmp_path}", "generate.samples_per_prompt=4", "train.precision=bf16"]
    )
    tr = build_context(cfg16, str(tmp_path), torch.device("cpu"), DataParallel(0, 1))
    assert tr.value is not None  # PPO: the value model is trained in mixed precision too
    rows = samples()
    sd = StepData([part(rows)], tr.tok.pad_token_id, "cpu")
    tg = advantages(sd, old_values(tr, sd), cfg16, tr.algorithm, 0.05)
    assert tg.values.dtype == torch.float32
    norms = Norms(sd.batch.response_mask.sum(), torch.tensor(16.0), 8.0)
    idx = torch.arange(16)
    for trainer, want in (
        (tr, {torch.bfloat16}),
        (build_context(cfg, str(tmp_path), "cpu", DataParallel(0, 1)), {torch.float32}),
    ):
        with MatmulDtypes() as rec:
            loss, _ = policy_objective(trainer, sd.batch.select(idx), sd, idx, tg, norms)
        assert rec.seen == want and loss.dtype == torch.float32
    loss.backward()  # (the fp32 trainer's: its gradients are fp32 as well)

    whole = {**part(rows), "reward_sources": part(rows)["reward"][:, None]}  # one source (the RM)
    train_step(tr, 0, [], parts=[whole])  # a whole step: autocast forwards, fp32 AdamW
    for model, opt in ((tr.policy, tr.opt_policy), (tr.value, tr.opt_value)):
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.float32}
        state = [t for s in opt.state.values() for t in s.values() if t.is_floating_point() and t.dim() > 0]
        assert state and {t.dtype for t in state} == {torch.float32}

    gen = Generator(cfg16, str(tmp_path), torch.device("cpu"), 0)
    sc = Scorer(cfg16, str(tmp_path), torch.device("cpu"), 0)
    for model in (gen.policy, sc.reference, sc.reward):
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    weights = policy_state(tr)  # what the trainer publishes: fp32
    assert {t.dtype for t in weights.values()} == {torch.float32}
    load_state(gen.policy, weights, "published weights")
    got = gen.policy.state_dict()
    for k, v in weights.items():
        assert got[k].dtype == torch.bfloat16 and torch.equal(got[k], v.to(torch.bfloat16)), k
    # fp32 (the default) keeps every model in fp32
    assert {p.dtype for p in Generator(cfg, str(tmp_path), "cpu", 0).policy.parameters()} == {torch.float32}


def test_bf16_with_lora_is_refused_in_one_line_and_precision_is_not_resume_safe():
    assert resume_diff(load_config(TINY, []), load_config(TINY, ["train.precision=bf16"])) == [
        "train.precision: 'fp32' -> 'bf16'"
    ]
    with pytest.raises(UserError, match=r"train\.precision.*LoRA.*train\.precision=fp32"):
        load_config(TINY, ["model.lora.r=4", "train.precision=bf16"])
