"""The train group's loop and its session: resume, publish, ledger, metrics, checkpoints, final export.

    sess = TrainSession(cfg, run_dir, device, dp, lead=True)   # resumes from the latest checkpoint
    for v, path in sess.publish_initial(): ...                 # versions generators need first
    metrics = sess.train_step(step, paths)                     # the RL step (roles/trainer.py)
    v, path = sess.end_step(step, metrics, t0, paths, ...)     # ledger, publish v, metrics, maybe ckpt
    if sess.stop_at(step, stop): ...                           # an agreed stop: checkpoint, leave the loop
    sess.close(verdict)                                        # 'done': final checkpoint + final/policy

`run_trainer` is the multi-rank loop of a train rank; launch/single.py drives the same session in a
world of one rank. Only the lead (train rank 0) writes files; every train rank holds identical
weights and optimizer state (gradients are all-reduced), except with train.sharding=fsdp, where each
train rank holds a shard and writes it into the checkpoint itself. The session composes one piece per
concern: roles/trainer_context.py (the rank's state, `sess.ctx`), checkpoint/checkpointer.py (every
checkpoint save and load), weights/versions.py (the behaviour versions and weight publishing),
rollout/ledger.py (the step ledger), rollout/sync.py (rollout fsync before a checkpoint),
roles/metrics_log.py (metrics.jsonl, progress, TensorBoard), models/export.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any, Optional

from hpc_rlhf.checkpoint.checkpointer import Checkpointer
from hpc_rlhf.checkpoint.train_state import TrainState, data_cursor
from hpc_rlhf.cluster.control import CTRL, SCORED, Control
from hpc_rlhf.cluster.topology import Topology
from hpc_rlhf.config import Config
from hpc_rlhf.models.export import export_policy
from hpc_rlhf.parallel.dp import DataParallel
from hpc_rlhf.roles.evaluator import EvalInbox
from hpc_rlhf.roles.metrics_log import MetricsLog, StepMetricHooks
from hpc_rlhf.roles.refill import step_rollouts
from hpc_rlhf.roles.trainer import train_step
from hpc_rlhf.roles.trainer_context import build_context, load_policy, value_state
from hpc_rlhf.roles.trainer_step import StepData
from hpc_rlhf.rollout.ledger import StepLedger, ledger_entry
from hpc_rlhf.rollout.plan import behaviour_version
from hpc_rlhf.rollout.prompt_store import check_same_prompts
from hpc_rlhf.rollout.prompts import PromptSet
from hpc_rlhf.rollout.refill import rounds_used
from hpc_rlhf.rollout.sync import ShardSync
from hpc_rlhf.rundir import clean_temporaries
from hpc_rlhf.weights.versions import PolicyVersions

FIND = object()  # TrainSession(start=FIND): look for the latest valid checkpoint itself


class TrainSession:
    """A train rank's state (`ctx`) and what surrounds its steps; the lead also writes the run's files."""

    def __init__(
        self,
        cfg: Config,
        run_dir: str,
        device,
        dp: DataParallel,
        lead: bool,
        publish_files: bool = True,
        start: object = FIND,
    ):
        self.cfg, self.run_dir, self.lead = cfg, run_dir, lead
        self.ckpt = Checkpointer(run_dir, cfg)
        self.ctx = build_context(cfg, run_dir, device, dp)
        prompts = PromptSet(cfg, self.ctx.tok, run_dir)
        self.n_prompts = len(prompts)  # for the data cursor of checkpoints
        self.prompt_set = prompts.sha256  # the identity of a prompt file's set: kept with the cursor, checked on resume
        self.data_metrics = prompts.stats  # data/* counts of the prompt set, logged with every step
        # publish_files=False: the generator is in this process (takes the versions' tensors)
        # only the lead checkpoints: the other train ranks hold no version tensors
        self.versions = PolicyVersions(run_dir, cfg.max_policy_lag, self.ctx.policy, lead and publish_files, hold=lead)
        self.ledger = StepLedger(run_dir)
        if lead:  # no rank of this attempt writes before the lead publishes weights: safe to sweep
            clean_temporaries(run_dir)
        self.start_step = self._resume(start)
        self.sync = ShardSync(run_dir, cfg.checkpoint.sync_rollouts, self.start_step)
        self.last_ckpt_time = time.monotonic()
        self.last_ckpt_step = self.start_step
        self.last_step: Optional[StepData] = None  # the rollouts of the last step (ledger, hooks)
        if lead:
            self.ledger.truncate(self.start_step)
            self.log = MetricsLog(cfg, run_dir, self.start_step)
            self.hooks = StepMetricHooks(cfg, self.ctx.tok)

    def _ranks(self) -> tuple[int, int]:
        """(rank, ranks) of this rank's layout: its train rank of all when sharded, else (0, 1)."""
        dp = self.ctx.dp
        return (dp.rank, dp.size) if self.ctx.sharded else (0, 1)

    def _resume(self, info: Any = FIND) -> int:
        """Load checkpoint `info` (None: a fresh start; FIND: the latest valid one). Returns the step
        to continue from."""
        if info is FIND:
            info = self.ckpt.latest()
        ctx = self.ctx
        if info is None:
            self.versions.keep_live(0)
            return 0
        # sharded models, or a sharded checkpoint: one tensor at a time into this rank's layout
        st = self.ckpt.read_train(info.path, lazy=ctx.sharded)
        check_same_prompts(
            st.data_cursor.get("prompt_set_sha256"), self.prompt_set, info.path, self.cfg.task.prompts_path
        )
        self.ckpt.restore_train(info.path, st, ctx, *self._ranks(), partial(load_policy, ctx))
        ctx.version = st.version
        for v, tensors in st.behaviour.items():
            self.versions.keep(v, tensors)
        self.versions.keep_live(st.version)
        if self.lead:
            self.ledger.restore(st.ledger)
        return st.step

    def train_step(self, step: int, paths: list[str], parts: Optional[list] = None) -> dict[str, float]:
        """The RL step on the scored shards at `paths` (or their fields `parts`): roles/trainer.train_step."""
        metrics, self.last_step = train_step(self.ctx, step, paths, parts)
        return metrics

    def publish_initial(self) -> list[tuple[int, str]]:
        """Versions max(0, start-k) .. start, which the generators need before the next update."""
        return self.versions.publish_initial(self.start_step)

    def end_step(
        self,
        step: int,
        metrics: dict,
        t0: float,
        paths: list[str],
        gen_s: float,
        score_s: float,
        wait_s: Optional[float] = None,
    ) -> tuple[int, str]:
        """The end of a step, after its update: the step's time/* metrics (t0: its perf_counter start;
        wait_s: seconds the lead waited for scored shards, None when nothing was awaited), its ledger
        line, the new version published, metrics logged, maybe a checkpoint; the trainer's phase log
        is flushed. The lead adds the metrics of the logging.step_metrics hooks first. Returns
        (version, weights path)."""
        sd = self.last_step
        assert sd is not None, "end_step follows train_step"
        if self.lead:
            metrics.update(self.hooks(sd.responses))
            metrics.update(self.data_metrics)
        waited = 0.0 if wait_s is None else wait_s
        metrics.update({"time/train_wait_s": waited, "time/gen_s": gen_s, "time/score_s": score_s})
        metrics["time/step_s"] = time.perf_counter() - t0
        v = behaviour_version(step, self.cfg.max_policy_lag)
        entry = ledger_entry(v, paths, sd.prompt_index, sd.sample_index, rounds_used(self.cfg, paths))
        timer = self.ctx.timer  # tools/bench phase log (HPC_RLHF_TIMING=1)
        if wait_s is not None:
            timer.add("wait/scored", wait_s)
        with timer.phase("io/publish"):
            out = self.after_step(step, metrics, entry)
        timer.flush(step)
        return out

    def after_step(self, step: int, metrics: dict, entry: dict) -> tuple[int, str]:
        """Publish the new version, record the ledger line and the metrics, maybe checkpoint."""
        v = self.ctx.version
        path = self.versions.add(v)
        if self.lead:
            self.ledger.append(step, entry)
            self.log.write(step, metrics)
        c = self.cfg.checkpoint
        due = (c.every_steps > 0 and (step + 1) % c.every_steps == 0) or (
            c.every_min > 0 and time.monotonic() - self.last_ckpt_time >= 60 * c.every_min
        )
        if c.every_min > 0 and self.ctx.sharded:  # every FSDP rank writes: all follow the lead's clock
            due = self.ctx.dp.all_gather_bytes(b"1" if due else b"0", self.ctx.device)[0] == b"1"
        if due and step + 1 < self.cfg.total_steps:
            self.checkpoint(step + 1)
        return v, path

    def stop_at(self, step: int, stop: bool) -> bool:
        """Whether the loop ends after `step` on a stop the train ranks agreed on; the state before
        step + 1 is then checkpointed (unless it just was). A stop after the last step is no stop."""
        if not stop or step + 1 >= self.cfg.total_steps:
            return False
        if self.last_ckpt_step != step + 1:
            self.checkpoint(step + 1)
        return True

    def checkpoint(self, next_step: int) -> None:
        """Checkpoint the state before `next_step` (checkpoint/checkpointer.py: with train.sharding=fsdp
        every train rank writes its own shards, then the lead commits; every rank notes the time)."""
        self.last_ckpt_time, self.last_ckpt_step = time.monotonic(), next_step
        ctx, st = self.ctx, None
        if self.lead:
            self.sync.upto(next_step)
            v = ctx.version
            st = TrainState(
                step=next_step,
                version=v,
                policy=None if ctx.sharded else self.versions[v],
                value=value_state(ctx),
                behaviour={b: self.versions[b] for b in self.versions.older_than(v)},
                ledger=self.ledger.read(),
                data_cursor=data_cursor(next_step, self.n_prompts, self.cfg.generate.prompts_per_step, self.prompt_set),
            )
        gather = partial(ctx.dp.all_gather_bytes, device=ctx.device)
        self.ckpt.save_train(next_step, ctx, st, *self._ranks(), gather)

    def finish(self) -> None:
        """Final checkpoint and the exported policy (RUN_DIR/final/policy, a Hugging Face folder)."""
        if self.last_ckpt_step != self.cfg.total_steps:
            self.checkpoint(self.cfg.total_steps)
        if self.lead:  # the last published version's file linked in, where there is one (sharded: always)
            export_policy(self.run_dir, self.ctx.policy, self.ctx.tok, self.versions.published(self.ctx.version))

    def close(self, verdict: str) -> None:
        """End the session: 'done' finishes the run (finish()); the metrics log is closed."""
        if verdict == "done":
            self.finish()
        if self.lead:
            self.log.close()

    @contextmanager
    def closing_on_error(self) -> Iterator[None]:
        """Around the step loop: a step that raises still closes the metrics log (its sinks write out what
        they hold: W&B's run file, MLflow's batch), then the error goes on. A SIGKILL closes nothing."""
        try:
            yield
        except BaseException:
            if self.lead:
                with suppress(Exception):
                    self.log.close()
            raise


def _scored_shards(
    ctl: Control, topo: Topology, cfg: Config, step: int, rnd: int = 0
) -> tuple[list[str], float, float]:
    """Wait for the step's scored shards of refill round `rnd` (0: the plan's), in shard order. Returns
    (paths, generate s, score s)."""
    paths, gen_s, score_s = [], 0.0, 0.0
    n = cfg.generate.shards_per_step
    for j in range(rnd * n, (rnd + 1) * n):
        src = topo.scorer_rank(j % n)
        s, sh, path, g_s, s_s = ctl.wait(src, SCORED, f"scored shard (step {step}, shard {j})")
        if (s, sh) != (step, j):
            raise RuntimeError(f"trainer expected scored shard ({step},{j}) from rank {src}, got ({s},{sh})")
        paths.append(path)
        gen_s, score_s = gen_s + g_s, score_s + s_s
    return paths, gen_s, score_s


def _round(ctl: Control, topo: Topology, cfg: Config, step: int, rnd: int) -> tuple[list[str], None, float, float]:
    """roles/refill.step_rollouts's `produce`: wait for round `rnd`'s scored shards (the trainer reads them)."""
    paths, gen_s, score_s = _scored_shards(ctl, topo, cfg, step, rnd)
    return paths, None, gen_s, score_s


def _announce_refill(ctl: Control, topo: Topology, lead: bool, step: int, rnd: int) -> None:
    """The lead tells every generator to generate its shards of refill round `rnd` of `step`."""
    if lead:
        for g in topo.generate:
            ctl.send(g, CTRL, ("refill", step, rnd))


def run_trainer(
    cfg: Config, run_dir: str, topo: Topology, ctl: Control, device, train_comm, stop_flag, start: object = FIND
) -> str:
    """A train rank's loop, resuming from checkpoint `start` (None: fresh; FIND: look it up). Returns
    'done' or 'stop'."""
    rt = cfg.runtime
    dp = DataParallel.from_mpi(train_comm, device, rt.wait_timeout_s, rt.rendezvous_addr, rt.rendezvous_port)
    lead = ctl.rank == topo.trainer0
    sess = TrainSession(cfg, run_dir, device, dp, lead, start=start)
    others = [r for r in range(topo.world_size) if r not in topo.train]
    evals = EvalInbox(cfg, sess.start_step)  # eval.every (roles/evaluator.py): the lead receives and logs them
    for v, path in sess.publish_initial():
        if lead:
            for g in topo.generate:
                ctl.send(g, CTRL, ("weights", v, path))
    verdict = "done"
    with sess.closing_on_error():
        for step in range(sess.start_step, cfg.total_steps):
            t0 = time.perf_counter()
            paths, parts, refill, gen_s, score_s = step_rollouts(
                cfg, step, partial(_round, ctl, topo, cfg, step), partial(_announce_refill, ctl, topo, lead, step)
            )
            wait_s = time.perf_counter() - t0
            if lead:  # evaluated before this step's rollouts were sampled (no wait); logged before a checkpoint
                evals.collect(ctl, topo, behaviour_version(step, cfg.max_policy_lag), sess.log)
            metrics = sess.train_step(step, paths, parts)
            metrics.update(refill)  # algo/refill_* (dynamic sampling)
            v, wpath = sess.end_step(step, metrics, t0, paths, gen_s, score_s, wait_s)
            stop = None  # the stop is agreed before the next weights go out: no step is generated in vain
            if lead:
                reqs = ctl.stop_requests()
                stop = bool(stop_flag.is_set() or reqs)
            stop = train_comm.bcast(stop, root=0) if train_comm.Get_size() > 1 else stop
            if lead and (step + 1 < cfg.total_steps or evals.wants(v)) and not stop:
                for g in topo.generate:
                    ctl.send(g, CTRL, ("weights", v, wpath))
            if sess.stop_at(step, bool(stop)):
                verdict = "stop"
                break
    if lead and verdict == "done":
        evals.collect(ctl, topo, cfg.total_steps, sess.log)
    sess.close(verdict)
    if lead:
        for r in others:
            ctl.send(r, CTRL, (verdict, cfg.total_steps if verdict == "done" else step))
    dp.close()
    return verdict
