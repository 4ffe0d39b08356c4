"""Generation role: sample responses with the policy version the plan names, write a shard, announce it.

    gen = Generator(cfg, run_dir, device, rank)
    gen.load_version(v, weights_file)          # from trainer 0's CTRL ("weights", v, path) notice
    path, seconds = gen.generate_shard(step, shard)

`run_generator` is the rank loop: for each step it waits (if needed) for its policy version, then
generates its shards (shard j of every step belongs to generator j % n_generate) and sends each to
its scorer; at the end it waits for trainer 0's final "done" or "stop". Each policy version it receives is
evaluated when eval.every asks for it (roles/evaluator.py), before the step that samples with it. A
("refill", step, r) notice (algo.dynamic_sampling, rollout/refill.py) has it generate its shards of that
refill round first.
"""

from __future__ import annotations

import time
from typing import Optional

from hpc_rlhf.cluster.control import CTRL, SHARD, Control
from hpc_rlhf.cluster.topology import Topology
from hpc_rlhf.config import Config, fingerprint
from hpc_rlhf.generation import make_engine
from hpc_rlhf.models.build import load_tokenizer
from hpc_rlhf.roles.evaluator import EvalHook
from hpc_rlhf.roles.timing import PhaseTimer
from hpc_rlhf.rollout.plan import behaviour_version, shard_path, shard_plan
from hpc_rlhf.rollout.prompts import PromptSet
from hpc_rlhf.rollout.refill import round_attrs
from hpc_rlhf.rollout.shard import normalize, reusable, sample_fields, write_shard
from hpc_rlhf.runtime.faults import maybe_fail


class Generator:
    def __init__(self, cfg: Config, run_dir: str, device, rank: int, policy=None):
        """policy: a model to sample with instead of building one (the single-rank loop's LoRA policy;
        native engine only)."""
        self.cfg, self.run_dir, self.rank, self.device = cfg, run_dir, rank, device
        self.tok = load_tokenizer(cfg, run_dir)
        self.engine = make_engine(cfg, run_dir, device, rank, self.tok, policy)  # generate.engine
        self.policy = getattr(self.engine, "policy", None)  # the native engine's model
        self.prompts = PromptSet(cfg, self.tok, run_dir)
        self.fp = fingerprint(cfg)
        self.durable = cfg.checkpoint.sync_rollouts == "every_shard"
        self.timer = PhaseTimer(run_dir, "generate", rank)

    @property
    def version(self) -> int:
        """The policy version loaded (-1: none yet; trainer 0 publishes every version a generator uses)."""
        return self.engine.version

    def load_version(self, version: int, path: str) -> None:
        with self.timer.phase("io/load_weights"):
            self.engine.load_file(version, path)

    def expected_attrs(self, step: int, shard: int, kind: str) -> dict:
        return {
            "kind": kind,
            "step": step,
            "shard_index": shard,
            "config_fingerprint": self.fp,
            **round_attrs(self.cfg, shard),
        }

    def load_state(self, version: int, tensors: dict) -> None:
        """The single-rank loop: take the trainer's tensors of `version` directly (no file)."""
        with self.timer.phase("io/load_weights"):
            self.engine.load_tensors(version, tensors)

    def generate_shard(self, step: int, shard: int) -> tuple[str, float]:
        """Write the generated shard (step, shard) (or reuse an identical one on disk)."""
        path, seconds, _ = self.generate(step, shard)
        return path, seconds

    def generate(self, step: int, shard: int) -> tuple[str, float, Optional[tuple[dict, dict]]]:
        """generate_shard, also returning (fields, attrs) exactly as a read of the new shard gives them
        (None when an identical shard on disk was reused)."""
        maybe_fail("generate")
        t0 = time.perf_counter()
        plan = shard_plan(self.cfg, len(self.prompts), step, shard)
        path = shard_path(self.run_dir, step, shard, "generated")
        if reusable(path, {**self.expected_attrs(step, shard, "generated"), "policy_version": plan.version}):
            return path, time.perf_counter() - t0, None
        if plan.version != self.version:
            raise RuntimeError(f"generator has policy v{self.version}, step {step} needs v{plan.version}")
        prompts = [self.prompts[int(i)] for i in plan.prompt_indices]
        with self.timer.phase("compute/generate"):
            out = self.engine.sample(prompts, plan.seeds.tolist())
        data = sample_fields(prompts, out, plan.prompt_indices, plan.sample_indices, plan.seeds, plan.version, step)
        attrs = {
            **self.expected_attrs(step, shard, "generated"),
            "run_id": f"{self.fp}-s{self.cfg.seed}",
            "producer_role": "generate",
            "producer_rank": self.rank,
            "policy_version": plan.version,
            "num_samples": len(prompts),
        }
        data = normalize(data, "generated")
        with self.timer.phase("io/write_shard"):
            write_shard(path, data, attrs, durable=self.durable)
        return path, time.perf_counter() - t0, (data, attrs)


def my_shards(cfg: Config, topo: Topology, rank: int) -> list[int]:
    return [j for j in range(cfg.generate.shards_per_step) if topo.generator_rank(j) == rank]


def run_generator(cfg: Config, run_dir: str, topo: Topology, ctl: Control, device, start_step: int) -> str:
    """The generation rank loop. Returns the final CTRL verb: 'done' or 'stop'."""
    gen = Generator(cfg, run_dir, device, ctl.rank)
    mine = my_shards(cfg, topo, ctl.rank)
    evals = EvalHook(cfg, run_dir, gen, topo, ctl)  # eval.every: roles/evaluator.py
    for step in range(start_step, cfg.total_steps):
        need = behaviour_version(step, cfg.max_policy_lag)
        while gen.version < need:
            with gen.timer.phase("wait/weights"):
                msg = ctl.wait(topo.trainer0, CTRL, f"policy weights v{need}")
            if msg[0] == "stop":
                return "stop"
            if msg[0] == "refill":  # more shards of the step before (algo.dynamic_sampling)
                _send_round(gen, ctl, topo, mine, msg[1], msg[2])
            if msg[0] == "weights" and msg[1] == need:  # older notices (a resume's burst) are skipped
                gen.load_version(msg[1], msg[2])
                evals(msg)
        _send_round(gen, ctl, topo, mine, step, 0)
    while True:  # everything generated: wait for the end of training
        msg = ctl.wait(topo.trainer0, CTRL, "the end of the run (done/stop)")
        if msg[0] == "refill":
            _send_round(gen, ctl, topo, mine, msg[1], msg[2])
        if msg[0] in ("done", "stop"):
            return msg[0]
        evals(msg)  # versions after the last one a step samples with: evaluated when due


def _send_round(gen: Generator, ctl: Control, topo: Topology, mine: list[int], step: int, rnd: int) -> None:
    """Generate this rank's shards of round `rnd` of `step` (shard rnd*S + j for each of its j) and send each
    to its scorer (that of shard j)."""
    n = gen.cfg.generate.shards_per_step
    for j in mine:
        path, seconds = gen.generate_shard(step, rnd * n + j)
        ctl.send(topo.scorer_rank(j), SHARD, (step, rnd * n + j, path, seconds))
    gen.timer.flush(step)
