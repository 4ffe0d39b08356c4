"""The math of one RL step on a step's rollouts, data-parallel: no clock, no files, no task.

    sd = StepData(parts, pad_id, device)                                # the batch, laid out
    values = old_values(ctx, sd)                                        # (B, R); None without a critic
    tg = advantages(sd, values, cfg, ctx.algorithm, ctx.kl_ctl.value)   # KL, rewards, advantages (Targets)
    means = minibatch_epochs(ctx, step, sd, tg)                         # ppo.epochs passes of updates
    metrics = close_step(ctx, sd, tg, means)                            # version + 1, KL controller

Each function takes the train rank's state, `ctx` (roles/trainer_context.TrainContext), and changes
only what its docstring says; roles/trainer.train_step calls them in this order and times them. The
advantages are those of the registered estimator algo.name names (roles/trainer_algo.py); a
critic-free one has no value model at all (`ctx.value is None`). Group statistics are taken here, on
the whole step batch, which every train rank holds (StepData): a group split over shards or train
ranks is normalised identically. `probe(name)`, a context manager, wraps the sections inside an
update that the caller may time: `optimizer/policy` and `optimizer/value` (one optimizer step of
each model, clipping included) and `wait/allreduce` (the gradient all-reduce); the default does
nothing. Shapes: B samples of the step, R response columns (right-padded).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from hpc_rlhf.algo import (
    AdvantageInputs,
    aggregate,
    explained_variance,
    masked_mean,
    token_rewards,
    uniform_groups,
    value_loss,
)
from hpc_rlhf.algo.mismatch import mismatch_metrics, tis_weights
from hpc_rlhf.config import Config
from hpc_rlhf.models.forward import Batch, make_batch, response_logprobs, run_pair, token_values
from hpc_rlhf.roles.trainer_algo import Algorithm
from hpc_rlhf.roles.trainer_context import TrainContext
from hpc_rlhf.roles.trainer_micro import accumulate, micro_batches
from hpc_rlhf.rollout.shard import unpack_ragged

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
        self.behavior = self.gen_logprobs  # the old policy's log-probs: the sampler's, or recomputed
        self.ref_logprobs = torch.zeros(mask.shape, device=device)
        self.ref_logprobs[mask] = torch.as_tensor(np.concatenate(ref_lp), device=device)
        self.score = torch.as_tensor(cat["reward"], device=device)
        self.prompt_index, self.sample_index, self.eos = cat["prompt_index"], cat["sample_index"], cat["eos"]
        # a group: the samples of one prompt at one step (the shards' group_id; rollout/refill.py renumbers them)
        self.group_id = np.concatenate([d.get("group_id", d["prompt_index"]) for d in parts])
        self.size = len(prompts)


@torch.no_grad()
def old_values(ctx: TrainContext, sd: StepData) -> Optional[torch.Tensor]:
    """(B, R) value estimates of the value model before the update: each train rank computes a slice
    of the rows (two halves side by side when it has two threads), then all ranks gather them.
    None when the algorithm has no value model."""
    dp = ctx.dp
    if ctx.value is None:
        return None
    counts = [len(c) for c in np.array_split(np.arange(sd.size), dp.size)]
    lo = sum(counts[: dp.rank])
    idx = torch.arange(lo, lo + counts[dp.rank], device=ctx.device)
    if len(idx) >= 2 and torch.get_num_threads() >= 2 and not ctx.sharded:  # two halves side by side
        half = len(idx) // 2

        def part(rows: torch.Tensor) -> torch.Tensor:
            with ctx.autocast():  # per thread
                return token_values(ctx.value, sd.batch.select(rows))

        a, b = run_pair(lambda: part(idx[:half]), lambda: part(idx[half:]))
        local = torch.cat([a, b])
    else:
        with ctx.autocast():
            local = token_values(ctx.value, sd.batch.select(idx))
    return dp.all_gather_rows(local, counts)


@torch.no_grad()
def recompute_behavior(ctx: TrainContext, sd: StepData) -> None:
    """algo.behavior_logprobs=recompute: the old policy's log-probs of the step's tokens by the training
    forward (the policy before this step's update), in sd.behavior; as old_values, each train rank
    computes a slice of the rows and all gather them. sampler: nothing (the shard's log-probs)."""
    if ctx.cfg.algo.behavior_logprobs != "recompute":
        return
    dp = ctx.dp
    counts = [len(c) for c in np.array_split(np.arange(sd.size), dp.size)]
    lo = sum(counts[: dp.rank])
    idx = torch.arange(lo, lo + counts[dp.rank], device=ctx.device)
    with ctx.autocast():
        local, _ = response_logprobs(ctx.policy, sd.batch.select(idx), ctx.cfg.generate.temperature, ctx.banned)
    sd.behavior = dp.all_gather_rows(local.float(), counts)


@dataclass
class Targets:
    """What the epochs train on (B samples, R response columns), from `advantages`."""

    kl: torch.Tensor
    """(B, R) per-token KL against the reference (masked)."""
    rewards: torch.Tensor
    """(B, R) per-token rewards: -beta*KL (algo.kl_reward) + the score on the last token."""
    adv: torch.Tensor
    """(B, R) advantages."""
    returns: Optional[torch.Tensor] = None
    """(B, R) value targets (ppo) or reward-to-go (reinforce_pp); None for grpo/rloo."""
    values: Optional[torch.Tensor] = None
    """(B, R) old values (ppo); None without a critic."""
    loss_mask: Optional[torch.Tensor] = None
    """(B, R) the response mask with the rows of dropped groups zeroed; None = the response mask."""
    metrics: dict[str, float] = field(default_factory=dict)
    """algo/ metrics of the step."""


def advantages(sd: StepData, values: Optional[torch.Tensor], cfg: Config, alg: Algorithm, kl_coef: float) -> Targets:
    """Per-token KL (ppo.kl.estimator, masked) and rewards (-kl_coef * KL when algo.kl_reward, + score on
    the last token), then the advantages of `alg`'s estimator (algo.name, roles/trainer_algo.py): ppo
    = GAE on `values`, grpo/rloo = the sequence reward against the prompt's group in this step, ...
    An estimator registered with groups=True also counts the uniform groups (and may drop them)."""
    p, a, mask = cfg.ppo, cfg.algo, sd.batch.response_mask
    kl = alg.kl_penalty(sd.behavior, sd.ref_logprobs) * mask
    rewards = token_rewards(sd.score, kl, mask, kl_coef if a.kl_reward else 0.0, p.reward_clip)
    groups = torch.as_tensor(sd.group_id, device=mask.device)
    est = alg.estimator
    inputs = AdvantageInputs(rewards, mask, sd.score, groups, values, p.gamma, p.lam, p.whiten_advantages, a.group_std)
    adv, returns = est.fn(inputs)
    tg = Targets(kl, rewards, adv, returns, values if est.critic else None)
    if est.groups:
        uniform, n_uniform = uniform_groups(sd.score, groups)
        tg.metrics["algo/uniform_groups"] = float(n_uniform)
        if a.drop_uniform_groups:
            tg.loss_mask = mask * (~uniform).to(mask.dtype).unsqueeze(-1)
            tg.metrics["algo/dropped_samples"] = float(uniform.sum())
    if a.overlong_filter:
        cut = torch.as_tensor(sd.eos == 0, device=mask.device) & (mask.sum(-1) >= cfg.generate.max_new_tokens)
        tg.loss_mask = (mask if tg.loss_mask is None else tg.loss_mask) * (~cut).to(mask.dtype).unsqueeze(-1)
        tg.metrics["algo/overlong_filtered"] = float(cut.sum())
    return tg


@dataclass(frozen=True)
class Norms:
    """The global minibatch's normalisers of the loss aggregation (algo/aggregate.py)."""

    n_tok: torch.Tensor
    n_seq: torch.Tensor
    horizon: float

    def agg(self, x: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
        return aggregate(x, mask, mode, self.n_tok, self.n_seq, self.horizon)


def minibatch_epochs(ctx: TrainContext, step: int, sd: StepData, tg: Targets, probe: Probe = no_probe) -> dict:
    """`ppo.epochs` passes over minibatches drawn by a permutation seeded from (seed, step, epoch);
    this rank updates on its equal slice of each. Returns this rank's minibatch metrics, averaged."""
    p, dp = ctx.cfg.ppo, ctx.dp
    mask = sd.batch.response_mask if tg.loss_mask is None else tg.loss_mask
    horizon = float(ctx.cfg.algo.loss_agg_norm or ctx.cfg.generate.max_new_tokens)
    sums: dict[str, float] = {}
    n_mb = 0
    m, share = p.minibatch_size, p.minibatch_size // dp.size
    for epoch in range(p.epochs):
        perm = np.random.default_rng([ctx.cfg.seed, step, epoch, 0xB47C]).permutation(sd.size)
        for start in range(0, sd.size, m):
            mb = perm[start : start + m]
            mine = torch.as_tensor(np.sort(mb[dp.rank * share : (dp.rank + 1) * share]), device=ctx.device)
            mb_mask = mask[torch.as_tensor(mb, device=ctx.device)]
            n_tok = mb_mask.sum().clamp(min=1.0)
            norms = Norms(n_tok, (mb_mask.sum(-1) > 0).to(n_tok.dtype).sum().clamp(min=1.0), horizon)
            parts = micro_batches(sd.batch, mine, ctx.cfg.train.max_tokens_per_microbatch)
            metrics = update(ctx, parts, sd, tg, norms, probe)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            n_mb += 1
    return {k: v / n_mb for k, v in sums.items()}


def loss_mask(mb: Batch, idx, tg: Targets) -> torch.Tensor:
    """The mask the losses of rows `idx` (laid out as `mb`, maybe on fewer response columns) sum over."""
    return mb.response_mask if tg.loss_mask is None else tg.loss_mask[idx][:, : mb.response_width]


def policy_objective(ctx: TrainContext, mb: Batch, sd: StepData, idx, tg: Targets, norms: Norms):
    """The policy's loss on rows `idx` of a minibatch, laid out as `mb` (with grad), and its metrics:
    the clipped surrogate (ppo.clip_ratio, or algo.clip_low/clip_high, and algo.dual_clip), minus the
    entropy bonus (ppo.entropy_coef), plus the KL loss term (algo.kl_loss)."""
    p, a = ctx.cfg.ppo, ctx.cfg.algo
    mask, w = loss_mask(mb, idx, tg), mb.response_width
    with ctx.autocast():  # train.precision=bf16: bf16 matmuls, fp32 log-softmax (logits cast back)
        logp, ent = response_logprobs(
            ctx.policy, mb, ctx.cfg.generate.temperature, ctx.banned, with_entropy=p.entropy_coef > 0
        )
    alg = ctx.algorithm
    adv = tg.adv[idx][:, :w]
    if a.tis_cap > 0:  # TIS: w * max(-A r, -A clip(r)) = max(-(wA) r, -(wA) clip(r)) for the detached w >= 0
        adv = adv * tis_weights(sd.behavior[idx][:, :w], sd.gen_logprobs[idx][:, :w], mask, a.tis_cap)
    loss, m = alg.policy_loss(
        logp,
        sd.behavior[idx][:, :w],
        adv,
        mask,
        a.clip_low or p.clip_ratio,
        norms.n_tok,
        a.loss_agg,
        norms.n_seq,
        norms.horizon,
        clip_high=a.clip_high or None,
        dual_clip=a.dual_clip,
    )
    if ent is not None:
        loss = loss - p.entropy_coef * norms.agg(ent, mask, a.loss_agg)
    if alg.kl_loss is not None:
        kl_term = norms.agg(alg.kl_loss(logp, sd.ref_logprobs[idx][:, :w]), mask, a.loss_agg)
        loss = loss + a.kl_loss_coef * kl_term
        m["algo/kl_loss"] = kl_term.detach()
    return loss, m


def value_objective(ctx: TrainContext, mb: Batch, idx, tg: Targets, norms: Norms):
    """The value model's clipped loss on rows `idx` of a minibatch, laid out as `mb` (with grad)."""
    w = mb.response_width
    with ctx.autocast():
        v = token_values(ctx.value, mb)
    return value_loss(
        v, tg.values[idx][:, :w], tg.returns[idx][:, :w], loss_mask(mb, idx, tg), ctx.cfg.ppo.value_clip, norms.n_tok
    )


def update(ctx: TrainContext, parts: list, sd: StepData, tg: Targets, norms: Norms, probe: Probe = no_probe) -> dict:
    """One optimizer step of each model on this rank's share of a minibatch, given as micro-batches
    `parts` ([(Batch, rows)], roles/trainer_micro.py; one part unless train.max_tokens_per_microbatch)
    whose gradients accumulate. The policy and the value model share nothing, so their
    forward/backward/step run side by side (run_pair); the gradient all-reduce, when there are several
    trainers, stays on this thread in a fixed order. Without a critic (ctx.value is None) only the policy steps."""
    local = ctx.dp.size == 1
    critic = ctx.value is not None

    def weight(mb: Batch, idx) -> float:
        return float(loss_mask(mb, idx, tg).sum())

    def policy_part():
        ctx.opt_policy.zero_grad(set_to_none=True)
        loss, m = accumulate(parts, lambda mb, idx: policy_objective(ctx, mb, sd, idx, tg, norms), weight)
        out = {"ppo/policy_loss": loss, **m}
        if local:
            out.update(optimizer_step(ctx, "policy", probe))
        return out

    def value_part():
        ctx.opt_value.zero_grad(set_to_none=True)
        loss, m = accumulate(parts, lambda mb, idx: value_objective(ctx, mb, idx, tg, norms), weight)
        out = {"ppo/value_loss": loss, **m}
        if local:
            out.update(optimizer_step(ctx, "value", probe))
        return out

    # FSDP (ctx.sharded) runs collectives inside forward, backward and clipping: one model at a time,
    # in the same order on every rank; its backward has reduce-scattered the gradients already
    pair = run_pair if not ctx.sharded else lambda f, g: (f(), g())
    if critic:
        pol, val = pair(policy_part, value_part)
        out = {**pol, **val}
    else:
        out = policy_part()
    if not local:
        if not ctx.sharded:
            with probe("wait/allreduce"):
                ctx.dp.allreduce_grads(ctx.policy.parameters())
                if critic:
                    ctx.dp.allreduce_grads(ctx.value.parameters())
        if critic:
            a, b = pair(lambda: optimizer_step(ctx, "policy", probe), lambda: optimizer_step(ctx, "value", probe))
            out.update({**a, **b})
        else:
            out.update(optimizer_step(ctx, "policy", probe))
    out["ppo/lr"] = ctx.sched_policy.get_last_lr()[0]
    return out


def optimizer_step(ctx: TrainContext, name: str, probe: Probe = no_probe) -> dict[str, float]:
    """Clip the gradient norm of model `name` ('policy' or 'value'), step its optimizer and scheduler."""
    model, opt, sched = (
        (ctx.policy, ctx.opt_policy, ctx.sched_policy)
        if name == "policy"
        else (ctx.value, ctx.opt_value, ctx.sched_value)
    )
    with probe(f"optimizer/{name}"):
        out = {}
        if ctx.cfg.ppo.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), ctx.cfg.ppo.max_grad_norm, foreach=True)
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a DTensor
            out[f"ppo/{name}_grad_norm"] = float(norm)
        opt.step()
        sched.step()
    return out


def close_step(ctx: TrainContext, sd: StepData, tg: Targets, means: dict) -> dict[str, float]:
    """After the epochs: count the new policy version, update the KL controller, average the
    minibatch metrics over the train ranks, add the step's ppo/, algo/, score/ and gen/ metrics."""
    mask = sd.batch.response_mask
    ctx.version += 1
    kl_seq = (tg.kl.sum(-1)).mean()
    ctx.kl_ctl.update(float(kl_seq), sd.size)
    out = means
    if ctx.dp.size > 1:  # average the per-rank minibatch metrics
        vec = ctx.dp.allreduce_sum(torch.tensor([out[k] for k in sorted(out)], dtype=torch.float64))
        out = {k: float(v) / ctx.dp.size for k, v in zip(sorted(out), vec)}
    resp_len = mask.sum(-1)
    out.update({"ppo/kl_coef": float(ctx.kl_ctl.value), "ppo/advantages_mean": float(masked_mean(tg.adv, mask))})
    if tg.returns is not None:
        out["ppo/returns_mean"] = float(masked_mean(tg.returns, mask))
    if tg.values is not None:
        out["ppo/explained_variance"] = float(explained_variance(tg.values, tg.returns, mask))
    out.update(tg.metrics)
    if ctx.cfg.algo.behavior_logprobs == "recompute":  # the sampler against the training forward
        mm = mismatch_metrics(sd.behavior, sd.gen_logprobs, mask, ctx.cfg.algo.tis_cap)
        out.update({k: float(v) for k, v in mm.items()})
    out.update(
        {
            "score/reward_mean": float(sd.score.mean()),
            "score/reward_std": float(sd.score.std()),
            "score/kl_mean": float(kl_seq),
            "score/total_reward_mean": float(tg.rewards.sum(-1).mean()),
            "gen/response_len_mean": float(resp_len.float().mean()),
            "gen/eos_rate": float(sd.eos.mean()),
            "gen/entropy_estimate": float(-(sd.gen_logprobs.sum() / mask.sum())),
        }
    )
    return out
