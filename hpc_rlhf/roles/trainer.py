"""Optimization role: one PPO step of policy and value on a step's scored shards, data-parallel.

    tr = Trainer(cfg, run_dir, device, dp)
    metrics = tr.train_step(step, scored_paths)     # -> policy version step + 1

A step: read the scored shards (shard order), lay out the batch, compute old values (rows split
over the train ranks, then all-gathered), per-token rewards (-beta*KL + score on the last token),
GAE advantages (whitened over the whole batch) and returns; then `ppo.epochs` passes over
minibatches drawn by a permutation seeded from (seed, step, epoch). Each train rank takes an equal
slice of every minibatch; losses are normalised by the minibatch's global token count and
gradients summed, so any number of trainers computes the single-rank update (up to float order).
Old log-probs are the generation-time ones from the shard (docs/ppo_details.md).
"""

from __future__ import annotations

import math
import time
from typing import Optional

import numpy as np
import torch

from hpc_rlhf.algo import (
    explained_variance,
    gae,
    kl_penalty,
    make_kl_controller,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from hpc_rlhf.config import Config
from hpc_rlhf.dist.dp import DataParallel
from hpc_rlhf.dist.faults import maybe_fail
from hpc_rlhf.models.build import build_policy, build_value, load_tokenizer, place
from hpc_rlhf.models.forward import Batch, make_batch, response_logprobs, run_pair, token_values
from hpc_rlhf.models.generate import banned_tokens
from hpc_rlhf.roles.timing import PhaseTimer
from hpc_rlhf.rollout.prompts import PromptSet
from hpc_rlhf.rollout.shard import read_shard, unpack_ragged


def _schedule(kind: str, warmup: int, total: int):
    def f(n: int) -> float:
        if n < warmup:
            return (n + 1) / warmup
        frac = min(1.0, (n - warmup) / max(1, total - warmup))
        if kind == "linear":
            return 1.0 - frac
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * frac))
        return 1.0

    return f


def _flat(data: dict, name: str, offsets: np.ndarray, batch: Batch) -> torch.Tensor:
    """Per-token flat array -> (B, R) aligned with the batch's response columns."""
    out = torch.zeros(batch.response_mask.shape, dtype=torch.float32)
    out[batch.response_mask.cpu().bool()] = torch.as_tensor(data[name])
    return out


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


class Trainer:
    def __init__(self, cfg: Config, run_dir: str, device, dp: DataParallel):
        self.cfg, self.run_dir, self.device, self.dp = cfg, run_dir, device, dp
        self.tok = load_tokenizer(cfg, run_dir)
        self.policy = place(build_policy(cfg, self.tok), device, cfg.runtime.bf16)
        self.value = place(build_value(cfg, self.tok), device, cfg.runtime.bf16)
        p = cfg.ppo
        # fused AdamW: one kernel per tensor instead of a dozen (4x faster per step on CPU)
        fused = {"fused": True} if torch.device(device).type in ("cpu", "cuda") else {}
        self.opt_policy = torch.optim.AdamW(self.policy.parameters(), lr=p.lr, weight_decay=p.weight_decay, **fused)
        self.opt_value = torch.optim.AdamW(self.value.parameters(), lr=p.value_lr, weight_decay=p.weight_decay, **fused)
        batch = cfg.generate.prompts_per_step * cfg.generate.samples_per_prompt
        updates = cfg.total_steps * p.epochs * (batch // p.minibatch_size)
        sched = _schedule(p.lr_schedule, p.warmup_steps, updates)
        self.sched_policy = torch.optim.lr_scheduler.LambdaLR(self.opt_policy, sched)
        self.sched_value = torch.optim.lr_scheduler.LambdaLR(self.opt_value, sched)
        self.kl_ctl = make_kl_controller(p.kl.adaptive, p.kl.init_coef, p.kl.target, p.kl.horizon)
        self.banned = banned_tokens(self.tok.pad_token_id, self.tok.eos_token_id, cfg.generate.stop_at_eos)
        self.prompts = PromptSet(cfg, self.tok)
        self.timer = PhaseTimer(run_dir, "train", dp.rank)
        self._opt_s = [0.0, 0.0]  # optimizer seconds of the last update: policy, value
        self.version = 0  # optimizer steps applied = PPO steps done

    # -- the math of one step -------------------------------------------------------------------
    @torch.no_grad()
    def _old_values(self, sd: StepData) -> torch.Tensor:
        counts = [len(c) for c in np.array_split(np.arange(sd.size), self.dp.size)]
        lo = sum(counts[: self.dp.rank])
        idx = torch.arange(lo, lo + counts[self.dp.rank], device=self.device)
        if len(idx) >= 2 and torch.get_num_threads() >= 2:  # two halves of the rows side by side
            half = len(idx) // 2
            a, b = run_pair(
                lambda: token_values(self.value, sd.batch.select(idx[:half])),
                lambda: token_values(self.value, sd.batch.select(idx[half:])),
            )
            local = torch.cat([a, b])
        else:
            local = token_values(self.value, sd.batch.select(idx))
        return self.dp.all_gather_rows(local, counts)

    def _advantages(self, sd: StepData, values: torch.Tensor):
        p, mask = self.cfg.ppo, sd.batch.response_mask
        kl = kl_penalty(sd.gen_logprobs, sd.ref_logprobs, p.kl.estimator) * mask
        rewards = token_rewards(sd.score, kl, mask, self.kl_ctl.value, p.reward_clip)
        adv, returns = gae(rewards, values, mask, p.gamma, p.lam)
        if p.whiten_advantages:
            adv = masked_whiten(adv, mask)
        return kl, rewards, adv, returns

    def train_step(self, step: int, paths: list[str], parts: Optional[list] = None) -> dict[str, float]:
        """One PPO step on the scored shards at `paths` (read here), or on `parts`, their fields as
        a read would give them, when the caller holds them (the single-rank loop)."""
        maybe_fail("train")
        t0 = time.perf_counter()
        cfg, p = self.cfg, self.cfg.ppo
        if parts is None:
            parts = [read_shard(path)[0] for path in paths]
        t_read = time.perf_counter() - t0
        sd = StepData(parts, self.tok.pad_token_id, self.device)
        t_layout = time.perf_counter() - t0 - t_read
        values = self._old_values(sd)
        t_value = time.perf_counter() - t0 - t_read - t_layout
        kl, rewards, adv, returns = self._advantages(sd, values)
        mask = sd.batch.response_mask
        t_prep = time.perf_counter() - t0 - t_read  # layout + old values + advantages
        t_opt = 0.0
        sums: dict[str, float] = {}
        n_mb = 0
        m, share = p.minibatch_size, p.minibatch_size // self.dp.size
        for epoch in range(p.epochs):
            perm = np.random.default_rng([cfg.seed, step, epoch, 0xB47C]).permutation(sd.size)
            for start in range(0, sd.size, m):
                mb = perm[start : start + m]
                mine = torch.as_tensor(
                    np.sort(mb[self.dp.rank * share : (self.dp.rank + 1) * share]), device=self.device
                )
                n_tok = mask[torch.as_tensor(mb, device=self.device)].sum().clamp(min=1.0)
                metrics = self._update(sd.batch.select(mine), sd, mine, adv, values, returns, n_tok)
                t_opt += max(self._opt_s)  # the two models step side by side
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_mb += 1
        t_update = time.perf_counter() - t0 - t_read - t_prep
        self.version += 1
        kl_seq = (kl.sum(-1)).mean()
        self.kl_ctl.update(float(kl_seq), sd.size)
        out = {k: v / n_mb for k, v in sums.items()}
        if self.dp.size > 1:  # average the per-rank minibatch metrics
            vec = self.dp.allreduce_sum(torch.tensor([out[k] for k in sorted(out)], dtype=torch.float64))
            out = {k: float(v) / self.dp.size for k, v in zip(sorted(out), vec)}
        resp_len = mask.sum(-1)
        out.update(
            {
                "ppo/kl_coef": float(self.kl_ctl.value),
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
                "time/train_read_s": t_read,
                "time/train_prep_s": t_prep,
                "time/value_fwd_s": t_value,
                "time/train_update_s": t_update,
                "time/train_optim_s": t_opt,
                "time/train_s": time.perf_counter() - t0,
            }
        )
        tm = self.timer
        tm.add("io/read_shards", t_read)
        tm.add("compute/value_fwd", t_value)
        tm.add("compute/layout", t_layout)
        tm.add("compute/advantages", t_prep - t_layout - t_value)
        tm.add("compute/train_fwd_bwd", t_update - t_opt)
        tm.add("compute/optimizer", t_opt)
        task = self.prompts.task
        if task is not None:
            eos = self.tok.eos_token_id
            out["gen/gold_reward_mean"] = float(np.mean([task.gold_reward(r, eos) for r in sd.responses]))
        self.last_step_data = sd
        return out

    def _update(self, mb: Batch, sd: StepData, idx, adv, values, returns, n_tok) -> dict[str, float]:
        """One optimizer step of each model on this rank's share of a minibatch. The policy and the
        value model share nothing, so their forward/backward/step run side by side (run_pair); the
        gradient all-reduce, when there are several trainers, stays on this thread in a fixed order."""
        p = self.cfg.ppo
        local = self.dp.size == 1

        def policy_part():
            logp, ent = response_logprobs(
                self.policy, mb, self.cfg.generate.temperature, self.banned, with_entropy=p.entropy_coef > 0
            )
            loss, m = policy_loss(logp, sd.gen_logprobs[idx], adv[idx], mb.response_mask, p.clip_ratio, n_tok)
            if ent is not None:
                loss = loss - p.entropy_coef * (ent * mb.response_mask).sum() / n_tok
            self.opt_policy.zero_grad(set_to_none=True)
            loss.backward()
            out = {"ppo/policy_loss": float(loss.detach()), **{k: float(v) for k, v in m.items()}}
            if local:
                out.update(self._step(self.policy, self.opt_policy, self.sched_policy, "policy"))
            return out

        def value_part():
            v = token_values(self.value, mb)
            loss, m = value_loss(v, values[idx], returns[idx], mb.response_mask, p.value_clip, n_tok)
            self.opt_value.zero_grad(set_to_none=True)
            loss.backward()
            out = {"ppo/value_loss": float(loss.detach()), **{k: float(v) for k, v in m.items()}}
            if local:
                out.update(self._step(self.value, self.opt_value, self.sched_value, "value"))
            return out

        pol, val = run_pair(policy_part, value_part)
        out = {**pol, **val}
        if not local:
            t0 = time.perf_counter()
            self.dp.allreduce_grads(self.policy.parameters())
            self.dp.allreduce_grads(self.value.parameters())
            self.timer.add("wait/allreduce", time.perf_counter() - t0)
            a, b = run_pair(
                lambda: self._step(self.policy, self.opt_policy, self.sched_policy, "policy"),
                lambda: self._step(self.value, self.opt_value, self.sched_value, "value"),
            )
            out.update({**a, **b})
        out["ppo/lr"] = self.sched_policy.get_last_lr()[0]
        return out

    def _step(self, model, opt, sched, name: str) -> dict[str, float]:
        t0 = time.perf_counter()
        out = {}
        if self.cfg.ppo.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.ppo.max_grad_norm, foreach=True)
            out[f"ppo/{name}_grad_norm"] = float(norm)
        opt.step()
        sched.step()
        self._opt_s[0 if name == "policy" else 1] = time.perf_counter() - t0
        return out

    # -- state for checkpoints ------------------------------------------------------------------
    def optim_state(self) -> dict:
        return {
            "opt_policy": self.opt_policy.state_dict(),
            "opt_value": self.opt_value.state_dict(),
            "sched_policy": self.sched_policy.state_dict(),
            "sched_value": self.sched_value.state_dict(),
            "kl_ctl": self.kl_ctl.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_optim_state(self, st: dict) -> None:
        for opt, key in ((self.opt_policy, "opt_policy"), (self.opt_value, "opt_value")):
            fused = [g.get("fused") for g in opt.param_groups]
            opt.load_state_dict(st[key])
            for g, f in zip(opt.param_groups, fused):  # keep this build's kernel choice
                g["fused"] = f
        self.sched_policy.load_state_dict(st["sched_policy"])
        self.sched_value.load_state_dict(st["sched_value"])
        self.kl_ctl.load_state_dict(st["kl_ctl"])
        torch.set_rng_state(st["torch_rng"])
