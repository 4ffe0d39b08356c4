"""Evaluation during training (`eval.*`): the generation ranks sample the eval prompts with a policy version,
score them with the eval's reward functions and write eval shards; the train lead logs `eval/*` metrics.

    eval_versions(cfg)                          # the versions evaluated: V % eval.every == 0, 1 <= V <= total_steps
    ev = Evaluator(cfg, run_dir, tok, rank)     # a generation rank's side: eval prompts, reward functions
    path = ev.run(engine, version, shard)       # eval shard J of version V (reused when identical on disk)
    eval_metrics(cfg, parts)                    # eval/* of one evaluation from its shards' fields
    inbox = EvalInbox(cfg, start_step)          # the train lead's side: waits for the announced eval shards
    inbox.collect(ctl, topo, upto, log)         # log eval/* of every evaluated version <= upto
    EvalHook(cfg, run_dir, gen, topo, ctl)(msg) # a generation rank: evaluate the version of a weights notice
    LocalEvals(cfg, run_dir, gen, start).upto(v, tensors_of, log)   # the single-rank loop: both sides in turn

Version V is the policy after step V-1; its metrics are logged at step V-1 (a line {"step": V-1, "eval/...": ...}
of metrics.jsonl). Eval shard J holds the J-th contiguous part of the eval prompts (eval.shards parts), each
with eval.samples_per_prompt responses; generation rank J % layout.generate samples it as one batch, so the
results do not depend on the layout. Sample k of eval prompt i under version V draws from the seed
hash(run seed, 'eval', V, i, k); greedy sampling (eval.temperature=0) takes the most likely token (top-k 1).
The rewards are computed where the samples are (the generation rank), which keeps the scoring ranks' step
pipeline untouched: reward functions of the text, and a `kind: model` source with the run's reward model,
which a generation rank then loads too (models/reward_scores.py; the single-rank loop shares its scorer's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from math import comb
from typing import Any, Optional

import numpy as np

from hpc_rlhf.cluster.control import EVAL, Control
from hpc_rlhf.cluster.topology import Topology
from hpc_rlhf.config import Config, fingerprint
from hpc_rlhf.config.schema import RewardConfig
from hpc_rlhf.generation.base import Engine
from hpc_rlhf.models.forward import make_batch
from hpc_rlhf.models.generate import SamplingParams
from hpc_rlhf.models.reward_scores import RewardScorer
from hpc_rlhf.rewards import RewardSources, reward_batch
from hpc_rlhf.rollout.prompts import PromptSet
from hpc_rlhf.rollout.shard import normalize, read_shard, reusable, sample_fields, write_shard
from hpc_rlhf.rundir import RunDir

EVAL_SEED_TAG = 0xE7A1  # the 'eval' in the seed of an eval sample


def eval_versions(cfg: Config) -> list[int]:
    """The policy versions evaluated, in order (none with eval.every=0)."""
    e = cfg.eval.every
    return [] if e <= 0 else list(range(e, cfg.total_steps + 1, e))


def eval_seed(run_seed: int, version: int, prompt_index: int, sample_index: int) -> int:
    """A 63-bit seed from the identity of an eval sample (never from rank or history)."""
    ss = np.random.SeedSequence([run_seed, EVAL_SEED_TAG, version, prompt_index, sample_index])
    return int(ss.generate_state(1, np.uint64)[0] & np.uint64(0x7FFFFFFFFFFFFFFF))


def eval_config(cfg: Config) -> Config:
    """The config the eval's prompt source and reward functions see: eval.task as `task`, eval.sources as
    `reward.sources`, eval.max_new_tokens as generate.max_new_tokens."""
    e = cfg.eval
    gen = dataclasses.replace(cfg.generate, max_new_tokens=e.max_new_tokens)
    return dataclasses.replace(cfg, task=e.task, reward=RewardConfig(sources=list(e.sources)), generate=gen)


def sampling(cfg: Config) -> SamplingParams:
    """eval.* as sampling settings: temperature 0 is greedy (top-k 1 at temperature 1)."""
    e, g = cfg.eval, cfg.generate
    if e.temperature == 0:
        return SamplingParams(e.max_new_tokens, 1.0, 1, 1.0, g.stop_at_eos)
    return SamplingParams(e.max_new_tokens, e.temperature, g.top_k, g.top_p, g.stop_at_eos)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one prompt with n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n (n={n})")
    return 1.0 - comb(n - c, k) / comb(n, k)


def pass_ks(n: int) -> list[int]:
    """k = 1, 2, 4, ... <= n."""
    return [1 << i for i in range(n.bit_length()) if 1 << i <= n]


def eval_metrics(cfg: Config, parts: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """`eval/reward_mean`, `eval/reward/NAME` (each source's mean), `eval/response_len_mean`, and with
    eval.pass_source `eval/pass_at_K` (the mean over prompts of pass_at_k) from one evaluation's shards."""
    e = cfg.eval
    names = [s.name for s in e.sources]
    values = np.concatenate([np.asarray(p["reward_sources"], dtype=np.float64) for p in parts])
    out = {"eval/reward_mean": float(np.concatenate([p["reward"] for p in parts]).astype(np.float64).mean())}
    out.update({f"eval/reward/{n}": float(values[:, j].mean()) for j, n in enumerate(names)})
    lens = np.concatenate([p["response_len"] for p in parts]).astype(np.float64)
    out["eval/response_len_mean"] = float(lens.mean())
    if e.pass_source:
        ok = values[:, names.index(e.pass_source)] > 0
        prompts = np.concatenate([p["prompt_index"] for p in parts])
        order = np.argsort(prompts, kind="stable")
        _, starts, counts = np.unique(prompts[order], return_index=True, return_counts=True)
        correct = np.add.reduceat(ok[order].astype(np.int64), starts)
        for k in pass_ks(e.samples_per_prompt):
            out[f"eval/pass_at_{k}"] = float(np.mean([pass_at_k(int(n), int(c), k) for n, c in zip(counts, correct)]))
    return out


def shard_prompts(cfg: Config, n_prompts: int, shard: int) -> np.ndarray:
    """The eval prompt indices of eval shard `shard`: its contiguous part of the first eval.num_prompts."""
    n = n_prompts if cfg.eval.num_prompts == 0 else min(n_prompts, cfg.eval.num_prompts)
    return np.array_split(np.arange(n, dtype=np.int64), cfg.eval.shards)[shard]


def check_eval_inputs(cfg: Config, run_dir: str) -> None:
    """Before any rank starts (launch/prepare.py): the eval prompts are read (a bad file is a one-line
    UserError) and the longest + eval.max_new_tokens fits the policy's context."""
    from hpc_rlhf.models.build import load_tokenizer
    from hpc_rlhf.models.context import check_context

    prompts = PromptSet(eval_config(cfg), load_tokenizer(cfg, run_dir))
    n = len(prompts) if cfg.eval.num_prompts == 0 else min(len(prompts), cfg.eval.num_prompts)
    longest = max((len(prompts[i]) for i in range(n)), default=0)
    what = f"the longest eval prompt ({longest} tokens) + eval.max_new_tokens={cfg.eval.max_new_tokens}"
    check_context(
        cfg, longest + cfg.eval.max_new_tokens, what, "use shorter eval prompts or a lower eval.max_new_tokens"
    )


class Evaluator:
    """A generation rank's evaluations: the eval prompts and reward functions, loaded once."""

    def __init__(self, cfg: Config, run_dir: str, tok: Any, rank: int, device=None, rm: Optional[RewardScorer] = None):
        """device: where a `kind: model` eval source's reward model runs; rm: that model already loaded
        (the single-rank loop's scorer's), else it is loaded here when a source needs it."""
        self.cfg, self.run_dir, self.tok, self.rank = cfg, run_dir, tok, rank
        ecfg = eval_config(cfg)
        self.prompts = PromptSet(ecfg, tok)
        self.sources = RewardSources(ecfg)
        self.rm = (rm or RewardScorer(cfg, tok, device or "cpu")) if self.sources.needs_model else None
        self.params = sampling(cfg)
        self.fp = fingerprint(cfg)

    def expected(self, version: int, shard: int) -> dict:
        """The metadata that identifies eval shard `shard` of `version` (what `reusable` compares)."""
        return {
            "kind": "eval",
            "step": version - 1,
            "shard_index": shard,
            "policy_version": version,
            "eval_shards": self.cfg.eval.shards,
            "config_fingerprint": self.fp,
        }

    def run(self, engine: Engine, version: int, shard: int) -> str:
        """Sample, score and write eval shard `shard` of `version` with `engine` (holding that version: the
        generation rank's engine, native or vllm, with the eval's sampling settings);
        an identical shard on disk is reused. Returns its path."""
        path = RunDir(self.run_dir).eval_shard(version - 1, shard)
        expect = self.expected(version, shard)
        if reusable(path, expect):
            return path
        e = self.cfg.eval
        pi = np.repeat(shard_prompts(self.cfg, len(self.prompts), shard), e.samples_per_prompt)
        si = np.tile(np.arange(e.samples_per_prompt, dtype=np.int32), len(pi) // e.samples_per_prompt)
        greedy = e.temperature == 0
        seeds = [0 if greedy else eval_seed(self.cfg.seed, version, int(a), int(b)) for a, b in zip(pi, si)]
        prompts = [self.prompts[int(i)] for i in pi]
        out = engine.sample(prompts, seeds, self.params)
        where = f"eval of policy v{version} shard {shard}"
        labels = [self.prompts.label(int(i)) for i in pi]
        rb = reward_batch(self.tok, prompts, out.responses, labels, pi, si, where)
        reward, values = self.sources.compute(self._model_scores(prompts, out.responses, pi), rb)
        data = sample_fields(prompts, out, pi, si, np.asarray(seeds, dtype=np.int64), version, version - 1)
        data.update(reward=reward, reward_sources=values)
        attrs = {
            **expect,
            "run_id": f"{self.fp}-s{self.cfg.seed}",
            "producer_role": "generate",
            "producer_rank": self.rank,
            "num_samples": len(pi),
            "reward_sources": self.sources.names,
            "reward_weights": self.sources.weights,
        }
        return write_shard(path, normalize(data, "eval"), attrs)

    def _model_scores(self, prompts: list, responses: list, pi: np.ndarray) -> Optional[np.ndarray]:
        """The reward model's scores of the samples (None when no eval source is the model)."""
        if self.rm is None:
            return None
        batch = make_batch(prompts, responses, self.tok.pad_token_id).to(self.rm.device)
        return self.rm.scores(self.rm.batch(batch, prompts, responses, self.prompts, pi))


def my_eval_shards(cfg: Config, topo: Topology, rank: int) -> list[int]:
    """The eval shards generation rank `rank` samples (shard J: generator J % layout.generate)."""
    return [j for j in range(cfg.eval.shards) if topo.generator_rank(j) == rank]


def evaluate_and_announce(ev: Evaluator, engine: Engine, version: int, mine: list[int], ctl: Control, to: int) -> None:
    """A generation rank: run its eval shards `mine` of `version`, announcing each to `to` (the train
    lead) as (version, shard, path)."""
    for j in mine:
        ctl.send(to, EVAL, (version, j, ev.run(engine, version, j)))


class EvalHook:
    """A generation rank's hook on each ("weights", version, path) notice it takes: when `version` is
    evaluated, load it (unless loaded) and run this rank's eval shards of it, announcing each to the lead."""

    def __init__(self, cfg: Config, run_dir: str, gen: Any, topo: Topology, ctl: Control):
        self.gen, self.ctl, self.lead = gen, ctl, topo.trainer0
        self.versions = set(eval_versions(cfg))
        self.mine = my_eval_shards(cfg, topo, ctl.rank)
        self.ev = Evaluator(cfg, run_dir, gen.tok, ctl.rank, gen.device) if self.versions and self.mine else None

    def __call__(self, msg: tuple) -> None:
        if self.ev is None or msg[0] != "weights" or msg[1] not in self.versions:
            return
        if self.gen.version != msg[1]:
            self.gen.load_version(msg[1], msg[2])
        with self.gen.timer.phase("compute/eval"):
            evaluate_and_announce(self.ev, self.gen.engine, msg[1], self.mine, self.ctl, self.lead)


def log_evaluation(cfg: Config, log: Any, version: int, paths: Sequence[str]) -> None:
    """Read an evaluation's shards and log its eval/* at step version - 1 (once: MetricsLog.write_eval)."""
    log.write_eval(version - 1, eval_metrics(cfg, [read_shard(p)[0] for p in paths]))


class EvalInbox:
    """The train lead's side: the evaluations the generators will announce after a start at `start_step`
    (every evaluated version from the first one they load: start_step - max_policy_lag)."""

    def __init__(self, cfg: Config, start_step: int):
        self.cfg = cfg
        self.pending = [v for v in eval_versions(cfg) if v >= max(1, start_step - cfg.max_policy_lag)]

    def wants(self, version: int) -> bool:
        """Whether `version` is still to be evaluated (the final version's weights must reach the generators)."""
        return version in self.pending

    def collect(self, ctl: Control, topo: Topology, upto: int, log: Any) -> None:
        """Receive and log every pending evaluation of a version <= upto, in version order."""
        while self.pending and self.pending[0] <= upto:
            v = self.pending.pop(0)
            paths = []
            for j in range(self.cfg.eval.shards):
                src = topo.generator_rank(j)
                got_v, got_j, path = ctl.wait(src, EVAL, f"eval shard {j} of policy v{v}")
                if (got_v, got_j) != (v, j):
                    raise RuntimeError(
                        f"train lead expected eval shard ({v},{j}) from rank {src}, got ({got_v},{got_j})"
                    )
                paths.append(path)
            log_evaluation(self.cfg, log, v, paths)


class LocalEvals:
    """The single-rank loop's evaluations (launch/single.py): the same versions, shards and log lines as
    the ranks' EvalHook + EvalInbox, run in turn with the generator of the process."""

    def __init__(self, cfg: Config, run_dir: str, gen: Any, start_step: int, rm: Optional[RewardScorer] = None):
        """rm: the scorer's reward model, shared with a `kind: model` eval source."""
        self.cfg, self.gen = cfg, gen
        self.inbox = EvalInbox(cfg, start_step)
        self.ev = Evaluator(cfg, run_dir, gen.tok, 0, gen.device, rm) if self.inbox.pending else None

    def upto(self, version: int, tensors_of: Callable[[int], dict], log: Any) -> None:
        """Evaluate and log every pending version <= version (tensors_of(v): the tensors of version v)."""
        pending = self.inbox.pending
        while self.ev is not None and pending and pending[0] <= version:
            v = pending.pop(0)
            if self.gen.version != v:
                self.gen.load_state(v, tensors_of(v))
            with self.gen.timer.phase("compute/eval"):
                paths = [self.ev.run(self.gen.engine, v, j) for j in range(self.cfg.eval.shards)]
            log_evaluation(self.cfg, log, v, paths)
