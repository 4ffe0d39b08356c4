"""The math of one PPO step on a step's rollouts, data-parallel: no clock, no files, no task.

    sd = StepData(parts, pad_id, device)                          # the batch, laid out
    values = old_values(tr, sd)                                   # (B, R), rows split over train ranks
    kl, rewards, adv, returns = advantages(sd, values, cfg.ppo, tr.kl_ctl.value)
    means = minibatch_epochs(tr, step, sd, values, adv, returns)  # ppo.epochs passes of updates
    metrics = close_step(tr, sd, kl, rewards, adv, returns, values, means)   # version + 1, KL controller

`tr` is the roles.trainer.Trainer that holds the models, optimizers and LR schedulers; its
`train_step` composes these functions and times them. `probe(name)`, a context manager, wraps the
sections inside an update that the caller may time: `optimizer/policy` and `optimizer/value` (one
optimizer step of each model, clipping included) and `wait/allreduce` (the gradient all-reduce);
the default does nothing. Shapes: B samples of the step, R response columns (right-padded).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import numpy as np
import torch

from hpc_rlhf.algo import (
    explained_variance,
    gae,
    kl_penalty,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from hpc_rlhf.config import PPOConfig
from hpc_rlhf.models.forward import Batch, make_batch, response_logprobs, run_pair, token_values
from hpc_rlhf.rollout.shard import unpack_ragged

if TYPE_CHECKING:
    from hpc_rlhf.roles.trainer import Trainer

Probe = Callable[[str], AbstractContextManager]


def no_probe(name: str) -> AbstractContextManager:
    return nullcontext()


class StepData:
    """A step's rollouts, concatenated in shard order, as tensors laid out like models.forward."""

    def __init__(self, parts: list[dict[str, np.ndarray]], pad_id: int, device):
        cat = {k: np.concatenate([d[k] for d in parts]) for k in ("prompt_index", "sample_index", "reward", "eos")}
        prompts, responses, gen_lp, ref_lp = [], [], [], []
        for d in parts:
            prompts += unpack_ragged(d["prompt_tokens"], d["prompt_offsets"])
            responses += unpack_ragged(d["response_tokens"], d["response_offsets"])
            gen_lp.append(d["gen_logprobs"])
            ref_lp.append(d["ref_logprobs"])
        self.prompts, self.responses = prompts, responses
        self.batch = make_batch(prompts, responses, pad_id).to(device)
        mask = self.batch.response_mask.bool()
        self.gen_logprobs = torch.zeros(mask.shape, device=device)
        self.gen_logprobs[mask] = torch.as_tensor(np.concatenate(gen_lp), device=device)
        self.ref_logprobs = torch.zeros(mask.shape, device=device)
        self.ref_logprobs[mask] = torch.as_tensor(np.concatenate(ref_lp), device=device)
        self.score = torch.as_tensor(cat["reward"], device=device)
        self.prompt_index, self.sample_index, self.eos = cat["prompt_index"], cat["sample_index"], cat["eos"]
        self.size = len(prompts)


@torch.no_grad()
def old_values(tr: Trainer, sd: StepData) -> torch.Tensor:
    """(B, R) value estimates of the value model before the update: each train rank computes a slice
    of the rows (two halves side by side when it has two threads), then all ranks gather them."""
    dp = tr.dp
    counts = [len(c) for c in np.array_split(np.arange(sd.size), dp.size)]
    lo = sum(counts[: dp.rank])
    idx = torch.arange(lo, lo + counts[dp.rank], device=tr.device)
    if len(idx) >= 2 and torch.get_num_threads() >= 2:  # two halves of the rows side by side
        half = len(idx) // 2
        a, b = run_pair(
            lambda: token_values(tr.value, sd.batch.select(idx[:half])),
            lambda: token_values(tr.value, sd.batch.select(idx[half:])),
        )
        local = torch.cat([a, b])
    else:
        local = token_values(tr.value, sd.batch.select(idx))
    return dp.all_gather_rows(local, counts)


def advantages(sd: StepData, values: torch.Tensor, p: PPOConfig, kl_coef: float):
    """Per-token KL (masked), rewards (-kl_coef * KL + score on the last token), GAE advantages
    (whitened over the batch when ppo.whiten_advantages) and returns; each (B, R)."""
    mask = sd.batch.response_mask
    kl = kl_penalty(sd.gen_logprobs, sd.ref_logprobs, p.kl.estimator) * mask
    rewards = token_rewards(sd.score, kl, mask, kl_coef, p.reward_clip)
    adv, returns = gae(rewards, values, mask, p.gamma, p.lam)
    if p.whiten_advantages:
        adv = masked_whiten(adv, mask)
    return kl, rewards, adv, returns


def minibatch_epochs(tr: Trainer, step: int, sd: StepData, values, adv, returns, probe: Probe = no_probe) -> dict:
    """`ppo.epochs` passes over minibatches drawn by a permutation seeded from (seed, step, epoch);
    this rank updates on its equal slice of each. Returns this rank's minibatch metrics, averaged."""
    p, dp, mask = tr.cfg.ppo, tr.dp, sd.batch.response_mask
    sums: dict[str, float] = {}
    n_mb = 0
    m, share = p.minibatch_size, p.minibatch_size // dp.size
    for epoch in range(p.epochs):
        perm = np.random.default_rng([tr.cfg.seed, step, epoch, 0xB47C]).permutation(sd.size)
        for start in range(0, sd.size, m):
            mb = perm[start : start + m]
            mine = torch.as_tensor(np.sort(mb[dp.rank * share : (dp.rank + 1) * share]), device=tr.device)
            n_tok = mask[torch.as_tensor(mb, device=tr.device)].sum().clamp(min=1.0)
            metrics = update(tr, sd.batch.select(mine), sd, mine, adv, values, returns, n_tok, probe)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            n_mb += 1
    return {k: v / n_mb for k, v in sums.items()}


def update(tr: Trainer, mb: Batch, sd: StepData, idx, adv, values, returns, n_tok, probe: Probe = no_probe) -> dict:
    """One optimizer step of each model on this rank's share of a minibatch. The policy and the
    value model share nothing, so their forward/backward/step run side by side (run_pair); the
    gradient all-reduce, when there are several trainers, stays on this thread in a fixed order."""
    p = tr.cfg.ppo
    local = tr.dp.size == 1

    def policy_part():
        logp, ent = response_logprobs(
            tr.policy, mb, tr.cfg.generate.temperature, tr.banned, with_entropy=p.entropy_coef > 0
        )
        loss, m = policy_loss(logp, sd.gen_logprobs[idx], adv[idx], mb.response_mask, p.clip_ratio, n_tok)
        if ent is not None:
            loss = loss - p.entropy_coef * (ent * mb.response_mask).sum() / n_tok
        tr.opt_policy.zero_grad(set_to_none=True)
        loss.backward()
        out = {"ppo/policy_loss": float(loss.detach()), **{k: float(v) for k, v in m.items()}}
        if local:
            out.update(optimizer_step(tr, "policy", probe))
        return out

    def value_part():
        v = token_values(tr.value, mb)
        loss, m = value_loss(v, values[idx], returns[idx], mb.response_mask, p.value_clip, n_tok)
        tr.opt_value.zero_grad(set_to_none=True)
        loss.backward()
        out = {"ppo/value_loss": float(loss.detach()), **{k: float(v) for k, v in m.items()}}
        if local:
            out.update(optimizer_step(tr, "value", probe))
        return out

    pol, val = run_pair(policy_part, value_part)
    out = {**pol, **val}
    if not local:
        with probe("wait/allreduce"):
            tr.dp.allreduce_grads(tr.policy.parameters())
            tr.dp.allreduce_grads(tr.value.parameters())
        a, b = run_pair(lambda: optimizer_step(tr, "policy", probe), lambda: optimizer_step(tr, "value", probe))
        out.update({**a, **b})
    out["ppo/lr"] = tr.sched_policy.get_last_lr()[0]
    return out


def optimizer_step(tr: Trainer, name: str, probe: Probe = no_probe) -> dict[str, float]:
    """Clip the gradient norm of model `name` ('policy' or 'value'), step its optimizer and scheduler."""
    model, opt, sched = (
        (tr.policy, tr.opt_policy, tr.sched_policy) if name == "policy" else (tr.value, tr.opt_value, tr.sched_value)
    )
    with probe(f"optimizer/{name}"):
        out = {}
        if tr.cfg.ppo.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tr.cfg.ppo.max_grad_norm, foreach=True)
            out[f"ppo/{name}_grad_norm"] = float(norm)
        opt.step()
        sched.step()
    return out


def close_step(tr: Trainer, sd: StepData, kl, rewards, adv, returns, values, means: dict) -> dict[str, float]:
    """After the epochs: count the new policy version, update the KL controller, average the
    minibatch metrics over the train ranks, add the step's ppo/, score/ and gen/ metrics."""
    mask = sd.batch.response_mask
    tr.version += 1
    kl_seq = (kl.sum(-1)).mean()
    tr.kl_ctl.update(float(kl_seq), sd.size)
    out = means
    if tr.dp.size > 1:  # average the per-rank minibatch metrics
        vec = tr.dp.allreduce_sum(torch.tensor([out[k] for k in sorted(out)], dtype=torch.float64))
        out = {k: float(v) / tr.dp.size for k, v in zip(sorted(out), vec)}
    resp_len = mask.sum(-1)
    out.update(
        {
            "ppo/kl_coef": float(tr.kl_ctl.value),
            "ppo/advantages_mean": float(masked_mean(adv, mask)),
            "ppo/returns_mean": float(masked_mean(returns, mask)),
            "ppo/explained_variance": float(explained_variance(values, returns, mask)),
            "score/reward_mean": float(sd.score.mean()),
            "score/reward_std": float(sd.score.std()),
            "score/kl_mean": float(kl_seq),
            "score/total_reward_mean": float(rewards.sum(-1).mean()),
            "gen/response_len_mean": float(resp_len.float().mean()),
            "gen/eos_rate": float(sd.eos.mean()),
            "gen/entropy_estimate": float(-(sd.gen_logprobs.sum() / mask.sum())),
        }
    )
    return out
