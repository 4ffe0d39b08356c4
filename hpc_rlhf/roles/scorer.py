"""Scoring role: the rewards (`reward.sources`) and per-token reference log-probs for a generated shard.

    sc = Scorer(cfg, run_dir, device, rank)
    scored_path, seconds = sc.score_shard(gen_path)

The scored shard is a new, self-contained file (every generated field plus `ref_logprobs`, `reward`,
`group_id` and `reward_sources`: each source's value, hpc_rlhf/rewards); the generated shard is never
modified. The reward model is loaded only when a source is the model; reward functions run here, on
the shard's samples, with the prompts' labels from the prompt source. A reward model with a tokenizer of its
own scores the samples decoded and re-encoded (models/retokenize.py). `run_scorer` is the rank loop: for each step it
takes its shards (shard j -> scorer j % n_score) from their generators in plan order, scores them and
announces each to every trainer; with algo.dynamic_sampling a generator may send a refill round of the step
before (shards r*S + j, rollout/refill.py) first, which it scores the same way.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from hpc_rlhf.cluster.control import CTRL, SCORED, SHARD, Control, Stopped
from hpc_rlhf.cluster.topology import Topology
from hpc_rlhf.config import Config, fingerprint
from hpc_rlhf.models.build import build_reference, load_tokenizer, place
from hpc_rlhf.models.forward import make_batch, response_logprobs, run_pair
from hpc_rlhf.models.generate import banned_tokens
from hpc_rlhf.models.reward_scores import RewardScorer
from hpc_rlhf.rewards import RewardBatch, RewardSources, reward_batch
from hpc_rlhf.roles.timing import PhaseTimer
from hpc_rlhf.rollout.plan import shard_path
from hpc_rlhf.rollout.prompts import PromptSet
from hpc_rlhf.rollout.refill import group_ids
from hpc_rlhf.rollout.shard import normalize, read_shard, reusable, unpack_ragged, write_shard
from hpc_rlhf.runtime.faults import maybe_fail


class Scorer:
    def __init__(self, cfg: Config, run_dir: str, device, rank: int, reference=None):
        """reference: the reference model to use instead of building one (the single-rank loop's LoRA base,
        models/lora.BaseView: no second copy)."""
        self.cfg, self.run_dir, self.rank, self.device = cfg, run_dir, rank, device
        self.tok = load_tokenizer(cfg, run_dir)
        self.sources = RewardSources(cfg)
        self.rm = RewardScorer(cfg, self.tok, device) if self.sources.needs_model else None
        self.reward = None if self.rm is None else self.rm.model
        raw = self.rm is not None and self.rm.wants_raw  # the RM's chat template takes the prompts as written
        self.prompts = PromptSet(cfg, self.tok, run_dir) if self.sources.needs_text or raw else None  # the labels
        if reference is None:  # the initial policy; with LoRA that is the base (adapters start at zero)
            reference = place(build_reference(cfg, self.tok, device, compute=True), device, cfg.runtime.bf16)
        self.reference = reference
        self.banned = banned_tokens(self.tok.pad_token_id, self.tok.eos_token_id, cfg.generate.stop_at_eos)
        self.fp = fingerprint(cfg)
        self.durable = cfg.checkpoint.sync_rollouts == "every_shard"
        self.timer = PhaseTimer(run_dir, "score", rank)

    def score_shard(self, gen_path: str) -> tuple[str, float]:
        out, seconds, _ = self.score(gen_path)
        return out, seconds

    @torch.no_grad()
    def score(self, gen_path: str, generated: Optional[tuple[dict, dict]] = None):
        """Score the generated shard at gen_path (its (fields, attrs) when the caller holds them: the
        single-rank loop) and write the scored shard. Returns (scored path, seconds, scored fields or
        None when an identical scored shard on disk was reused)."""
        maybe_fail("score")
        t0 = time.perf_counter()
        if generated is None:
            with self.timer.phase("io/read_shard"):
                data, attrs = read_shard(gen_path)
        else:
            data, attrs = dict(generated[0]), generated[1]
        step, shard = int(attrs["step"]), int(attrs["shard_index"])
        out = shard_path(self.run_dir, step, shard, "scored")
        expect = {"kind": "scored", "step": step, "shard_index": shard, "config_fingerprint": self.fp}
        if reusable(out, {**expect, "policy_version": int(attrs["policy_version"])}):
            return out, time.perf_counter() - t0, None
        prompts = unpack_ragged(data["prompt_tokens"], data["prompt_offsets"])
        responses = unpack_ragged(data["response_tokens"], data["response_offsets"])
        with self.timer.phase("compute/score"):
            batch = make_batch(prompts, responses, self.tok.pad_token_id).to(self.device)

            def ref():
                return response_logprobs(self.reference, batch, self.cfg.generate.temperature, self.banned)

            if self.rm is not None:  # two independent models: side by side
                rm_batch = self.rm.batch(batch, prompts, responses, self.prompts, data["prompt_index"])
                (ref_lp, _), model_scores = run_pair(ref, lambda: self.rm.scores(rm_batch))
            else:
                (ref_lp, _), model_scores = ref(), None
            mask = batch.response_mask.bool().cpu()
            data["ref_logprobs"] = ref_lp.float().cpu()[mask].numpy().astype(np.float32)
        with self.timer.phase("compute/reward_sources"):
            rb = self._reward_batch(data, prompts, responses, f"step {step} shard {shard}")
            data["reward"], data["reward_sources"] = self.sources.compute(model_scores, rb)
        data["group_id"] = group_ids(data["prompt_index"], int(attrs.get("refill_round", 0)))
        new_attrs = {**dict(attrs), **expect, "producer_role": "score", "producer_rank": self.rank}
        new_attrs.update(reward_sources=self.sources.names, reward_weights=self.sources.weights)
        new_attrs.pop("created_unix", None)
        data = normalize(data, "scored")
        with self.timer.phase("io/write_shard"):
            write_shard(out, data, new_attrs, durable=self.durable)
        return out, time.perf_counter() - t0, data

    def _reward_batch(self, data: dict, prompts: list, responses: list, where: str) -> RewardBatch:
        """What the reward functions are called with (texts decoded only when there is a function)."""
        pi = data["prompt_index"]
        labels = [self.prompts.label(int(i)) for i in pi] if self.prompts is not None else [None] * len(pi)
        text = self.sources.needs_text
        return reward_batch(self.tok, prompts, responses, labels, pi, data["sample_index"], where, text)


def run_scorer(cfg: Config, run_dir: str, topo: Topology, ctl: Control, device, start_step: int) -> str:
    """The scoring rank loop. Returns the final CTRL verb: 'done' or 'stop'."""
    sc = Scorer(cfg, run_dir, device, ctl.rank)
    mine = [j for j in range(cfg.generate.shards_per_step) if topo.scorer_rank(j) == ctl.rank]
    refills = cfg.algo.dynamic_sampling  # a refill round's shards may come before the next step's
    try:
        step = start_step
        while mine and (step < cfg.total_steps or refills):
            end = ("done",) if step >= cfg.total_steps else ()  # after the last step: a refill or the end
            s, rnd = _score_round(sc, ctl, topo, mine, step, end)
            if s < 0:
                return "done"
            if rnd == 0:
                step += 1
    except Stopped:
        return "stop"
    while True:
        msg = ctl.wait(topo.trainer0, CTRL, "the end of the run (done/stop)")
        if msg[0] in ("done", "stop"):
            return msg[0]


def _score_round(sc: Scorer, ctl: Control, topo: Topology, mine: list[int], step: int, end: tuple) -> tuple[int, int]:
    """Score this rank's shards of the next round its generators send: round 0 of `step`, or (dynamic
    sampling) a refill round of step - 1, which a generator sends before anything of `step`. Returns
    (its step, its round), or (-1, 0) on a CTRL verb in `end`."""
    n = sc.cfg.generate.shards_per_step
    s, rnd = step, 0
    for k, j in enumerate(mine):
        src = topo.generator_rank(j)
        with sc.timer.phase("wait/shard"):
            msg = ctl.wait(src, SHARD, f"generated shard (step {s}, shard {rnd * n + j})", end if k == 0 else ())
        if isinstance(msg[0], str):  # the end of the run
            return -1, 0
        got_s, got_j, path, gen_s = msg
        if k == 0 and got_j >= n and got_s == step - 1:  # a refill round of the step before
            s, rnd = got_s, got_j // n
        if (got_s, got_j) != (s, rnd * n + j):
            raise RuntimeError(f"scorer expected shard ({s},{rnd * n + j}) from rank {src}, got ({got_s},{got_j})")
        out, score_s = sc.score_shard(path)
        for t in topo.train:
            ctl.send(t, SCORED, (s, got_j, out, gen_s, score_s))
    sc.timer.flush(s)
    return s, rnd
