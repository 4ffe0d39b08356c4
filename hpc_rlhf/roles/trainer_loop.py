"""The train group's bookkeeping around Trainer.train_step: resume, publish, ledger, metrics, checkpoints.

    sess = TrainSession(cfg, run_dir, device, dp, lead=True)   # resumes from the latest checkpoint
    for v, path in sess.publish_initial(): ...                 # versions generators need first
    version, path = sess.after_step(step, metrics, paths)      # publish v+1, ledger, metrics, maybe ckpt
    sess.finish()                                              # final checkpoint + RUN_DIR/final/policy

`run_trainer` is the multi-rank loop of a train rank. Only the lead (train rank 0) writes files;
every train rank holds identical weights and optimizer state (gradients are all-reduced).

A checkpoint (RUN_DIR/checkpoints/step_S, see docs/checkpointing.md) holds: policy.safetensors and
value.safetensors; behaviour_vN.safetensors (the policy versions that steps >= S still sample with,
max_policy_lag > 0); optim.safetensors + optim.pt (both AdamW states, both LR schedulers, the KL
controller, the lead's torch RNG state: the tensors, and the rest with placeholders naming them);
state.json (next step, policy version, data cursor, config and its fingerprint); ledger.jsonl (what
steps < S consumed); shards.json (the shard ledger: which shards of which step were generated, scored
and consumed when it was written); config.yaml.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict

import torch
from safetensors.torch import load_file

from hpc_rlhf.checkpoint.store import (
    clean_temporaries,
    find_latest,
    load_json,
    remove_tree,
    save_checkpoint,
    write_atomic,
)
from hpc_rlhf.checkpoint.tensorfile import join_tensors, split_tensors, write_tensors
from hpc_rlhf.config import Config, check_resumable, fingerprint, from_dict, to_dict, to_yaml
from hpc_rlhf.dist.control import CTRL, SCORED, Control
from hpc_rlhf.dist.dp import DataParallel
from hpc_rlhf.dist.topology import Topology
from hpc_rlhf.dist.weights import cpu_state, load_into, prune, publish, weights_path
from hpc_rlhf.errors import CheckpointError
from hpc_rlhf.roles.trainer import Trainer
from hpc_rlhf.rollout.plan import step_dir
from hpc_rlhf.rollout.shard import fsync_dir, sync_paths


class MetricsLog:
    """RUN_DIR/metrics.jsonl (one line per step), a progress bar, optional TensorBoard."""

    def __init__(self, cfg: Config, run_dir: str, start_step: int):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        _truncate_jsonl(self.path, start_step)
        self.bar = None
        if cfg.logging.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=cfg.total_steps, initial=start_step, desc="ppo", unit="step", dynamic_ncols=True)
        self.tb = None
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(os.path.join(run_dir, "tb"))

    def write(self, step: int, metrics: dict) -> None:
        line = {"step": step, "time_unix": time.time(), **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                reward=f"{metrics.get('score/reward_mean', 0):.3f}", kl=f"{metrics.get('score/kl_mean', 0):.3f}"
            )
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def _truncate_jsonl(path: str, before_step: int) -> None:
    """Drop lines of steps >= before_step (left by an attempt that died after its last checkpoint),
    and a torn last line (an attempt killed in the middle of an append)."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        raw = f.read()
    lines = [ln for ln in raw.split(b"\n") if ln.strip()]
    keep = []
    for ln in lines:
        try:
            step = json.loads(ln)["step"]
        except (ValueError, KeyError, TypeError):
            continue
        if step < before_step:
            keep.append(ln + b"\n")
    if len(keep) != len(lines) or (raw and not raw.endswith(b"\n")):
        write_atomic(path, b"".join(keep))


FIND = object()  # TrainSession(start=FIND): look for the latest valid checkpoint itself


class TrainSession:
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
        self.publish_files = publish_files  # False: the generator is in this process (takes self.recent)
        # what every checkpoint writes of the config, rendered once (OmegaConf takes ~15 ms per render)
        self.cfg_text = {"fingerprint": fingerprint(cfg), "dict": to_dict(cfg), "yaml": to_yaml(cfg)}
        self.tr = Trainer(cfg, run_dir, device, dp)
        self.recent: OrderedDict[int, dict] = OrderedDict()  # behaviour versions a checkpoint must keep
        if lead:  # no rank of this attempt writes before the lead publishes weights: safe to sweep
            clean_temporaries(run_dir)
        self.start_step = self._resume(start)
        self.synced_upto = self.start_step  # shards of earlier steps were synced by their checkpoint
        self.last_ckpt_time = time.monotonic()
        self.last_ckpt_step = self.start_step
        self.ledger_path = os.path.join(run_dir, "ledger.jsonl")
        if lead:
            _truncate_jsonl(self.ledger_path, self.start_step)
            self.log = MetricsLog(cfg, run_dir, self.start_step)

    # -- resume -----------------------------------------------------------------------------------
    def _resume(self, info: object = FIND) -> int:
        """Load checkpoint `info` (None: a fresh start; FIND: the latest valid one). Returns the step
        to continue from."""
        if info is FIND:
            info = find_latest(self.run_dir)
        if info is None:
            self.recent[0] = cpu_state(self.tr.policy)
            return 0
        st = load_json(info.path, "state.json")
        check_resumable(from_dict(st["config"]), self.cfg, info.path)
        try:
            load_into(self.tr.policy, os.path.join(info.path, "policy.safetensors"))
            self.tr.value.load_state_dict(load_file(os.path.join(info.path, "value.safetensors")), strict=False)
            skeleton = torch.load(os.path.join(info.path, "optim.pt"), weights_only=False)
            moments = os.path.join(info.path, "optim.safetensors")  # checkpoints of 0.1.0 hold all in optim.pt
            tensors = load_file(moments) if os.path.exists(moments) else {}
            self.tr.load_optim_state(join_tensors(skeleton, tensors))
        except (OSError, RuntimeError, KeyError) as e:
            raise CheckpointError(f"checkpoint '{info.path}' could not be loaded: {str(e).splitlines()[0]}") from None
        self.tr.version = st["version"]
        for v in st["behaviour_versions"]:
            self.recent[v] = load_file(os.path.join(info.path, f"behaviour_v{v:06d}.safetensors"))
        self.recent[st["version"]] = cpu_state(self.tr.policy)
        if self.lead:
            with open(os.path.join(info.path, "ledger.jsonl"), "rb") as f:
                write_atomic(os.path.join(self.run_dir, "ledger.jsonl"), f.read())
        return int(st["step"])

    # -- publishing ---------------------------------------------------------------------------------
    def publish_initial(self) -> list[tuple[int, str]]:
        """Versions max(0, start-k) .. start, which the generators need before the next update."""
        k = self.cfg.max_policy_lag
        out = []
        for v in range(max(0, self.start_step - k), self.start_step + 1):
            path = weights_path(self.run_dir, v)
            if self.lead and self.publish_files:
                publish(self.run_dir, v, self.recent[v])
            out.append((v, path))
        return out

    def after_step(self, step: int, metrics: dict, ledger_entry: dict) -> tuple[int, str]:
        """Publish the new version, log, maybe checkpoint. Returns (version, weights path)."""
        v = self.tr.version
        self.recent[v] = cpu_state(self.tr.policy)
        while len(self.recent) > self.cfg.max_policy_lag + 1:
            self.recent.popitem(last=False)
        path = weights_path(self.run_dir, v)
        if self.lead and self.publish_files:
            publish(self.run_dir, v, self.recent[v])
            prune(self.run_dir, v - self.cfg.max_policy_lag - 1)
        if self.lead:
            with open(self.ledger_path, "a") as f:
                f.write(json.dumps({"step": step, **ledger_entry}) + "\n")
            self.log.write(step, metrics)
        c = self.cfg.checkpoint
        due = (c.every_steps > 0 and (step + 1) % c.every_steps == 0) or (
            c.every_min > 0 and time.monotonic() - self.last_ckpt_time >= 60 * c.every_min
        )
        if due and step + 1 < self.cfg.total_steps:
            self.checkpoint(step + 1)
        return v, path

    # -- checkpoints --------------------------------------------------------------------------------
    def checkpoint(self, next_step: int) -> None:
        self.last_ckpt_time, self.last_ckpt_step = time.monotonic(), next_step
        if not self.lead:
            return
        tr, behaviour = self.tr, [v for v in self.recent if v < self.tr.version]

        self._sync_rollouts(next_step)

        def write(folder: str) -> dict[str, tuple[str, int]]:
            skeleton, moments = split_tensors(tr.optim_state())
            tensor_files = {
                "policy.safetensors": self.recent[tr.version],
                "value.safetensors": cpu_state(tr.value, copy=False),
                "optim.safetensors": moments,
                **{f"behaviour_v{v:06d}.safetensors": self.recent[v] for v in behaviour},
            }
            hashed = {name: write_tensors(os.path.join(folder, name), t) for name, t in tensor_files.items()}
            torch.save(skeleton, os.path.join(folder, "optim.pt"))
            state = {
                "step": next_step,
                "version": tr.version,
                "data_cursor": self._cursor(next_step),
                "behaviour_versions": behaviour,
                "config_fingerprint": self.cfg_text["fingerprint"],
                "config": self.cfg_text["dict"],
                "saved_unix": time.time(),
            }
            with open(os.path.join(folder, "state.json"), "w") as f:
                json.dump(state, f, indent=1)
            with open(os.path.join(folder, "config.yaml"), "w") as f:
                f.write(self.cfg_text["yaml"])
            ledger = b""
            if os.path.exists(self.ledger_path):
                with open(self.ledger_path, "rb") as src:
                    ledger = src.read()
            with open(os.path.join(folder, "ledger.jsonl"), "wb") as f:
                f.write(ledger)
            with open(os.path.join(folder, "shards.json"), "w") as f:
                json.dump(self._shard_ledger(ledger), f)
            return hashed

        save_checkpoint(self.run_dir, next_step, write, self.cfg.checkpoint.keep_last)

    def _sync_rollouts(self, next_step: int) -> None:
        """Make every shard of steps [last synced, next_step) durable before the checkpoint that
        covers them commits (checkpoint.sync_rollouts=checkpoint; the writers did not fsync them).
        fsync through any descriptor flushes the file's pages on a local filesystem; NFS writers
        flush on close and Lustre on the lock revoked when this rank read them."""
        if self.cfg.checkpoint.sync_rollouts != "checkpoint":
            return
        paths = []
        for s in range(self.synced_upto, next_step):
            d = step_dir(self.run_dir, s)
            if os.path.isdir(d):
                paths += [e.path for e in os.scandir(d) if e.name.endswith(".h5") and not e.name.startswith(".")]
        sync_paths(paths)
        if paths:
            fsync_dir(os.path.dirname(step_dir(self.run_dir, 0)))
        self.synced_upto = next_step

    def _cursor(self, next_step: int) -> dict:
        """Where the prompt stream stands: steps < next_step consumed positions [0, next_step * P)."""
        n, per = len(self.tr.prompts), self.cfg.generate.prompts_per_step
        pos = next_step * per
        return {"next_step": next_step, "prompt_position": pos, "pass": pos // n, "within_pass": pos % n}

    def _shard_ledger(self, ledger: bytes) -> dict:
        """{step: {generated: [j..], scored: [j..], consumed: [j..]}} for every step with a shard on disk
        or in the ledger. Shards of steps >= the checkpoint's step are ones written ahead of it: a resume
        reuses them when intact (they are identical to what it would write) and rewrites them if not."""
        out: dict[str, dict[str, list[int]]] = {}
        for ln in ledger.splitlines():
            if ln.strip():
                e = json.loads(ln)
                out.setdefault(str(e["step"]), {})["consumed"] = [int(n.split("_")[1][:4]) for n in e["shards"]]
        root = os.path.dirname(step_dir(self.run_dir, 0))
        if os.path.isdir(root):
            for d in os.scandir(root):
                if not (d.name.startswith("step_") and d.name[5:].isdigit()):
                    continue
                entry = out.setdefault(str(int(d.name[5:])), {})
                for f in os.scandir(d.path):
                    for prefix, kind in (("gen_", "generated"), ("scored_", "scored")):
                        if f.name.startswith(prefix) and f.name.endswith(".h5"):
                            entry.setdefault(kind, []).append(int(f.name[len(prefix) : -3]))
        for entry in out.values():
            for k in ("generated", "scored", "consumed"):
                entry[k] = sorted(entry.get(k, []))
        return dict(sorted(out.items(), key=lambda kv: int(kv[0])))

    def finish(self) -> None:
        """Final checkpoint and the exported policy (RUN_DIR/final/policy, a Hugging Face folder)."""
        if self.last_ckpt_step != self.cfg.total_steps:
            self.checkpoint(self.cfg.total_steps)
        if self.lead:  # written aside, then renamed: a kill never leaves a half-written final policy
            parent = os.path.join(self.run_dir, "final")
            out, tmp = os.path.join(parent, "policy"), os.path.join(parent, f".tmp-policy-{os.getpid()}")
            self.tr.policy.save_pretrained(tmp, safe_serialization=True)
            self.tr.tok.save_pretrained(tmp)
            remove_tree(out)
            os.replace(tmp, out)


def ledger_entry(sd, version: int, paths: list[str]) -> dict:
    return {
        "version": version,
        "shards": [os.path.basename(p) for p in paths],
        "prompt_index": sd.prompt_index.tolist(),
        "sample_index": sd.sample_index.tolist(),
    }


def run_trainer(
    cfg: Config, run_dir: str, topo: Topology, ctl: Control, device, train_comm, stop_flag, start: object = FIND
) -> str:
    """A train rank's loop, resuming from checkpoint `start` (None: fresh; FIND: look it up). Returns
    'done' or 'stop'."""
    from hpc_rlhf.rollout.plan import behaviour_version

    dp = DataParallel.from_mpi(train_comm, device, cfg.runtime.wait_timeout_s)
    lead = ctl.rank == topo.trainer0
    sess = TrainSession(cfg, run_dir, device, dp, lead, start=start)
    others = [r for r in range(topo.world_size) if r not in topo.train]
    for v, path in sess.publish_initial():
        if lead:
            for g in topo.generate:
                ctl.send(g, CTRL, ("weights", v, path))
    verdict = "done"
    for step in range(sess.start_step, cfg.total_steps):
        t0 = time.perf_counter()
        paths, gen_s, score_s = [], 0.0, 0.0
        for j in range(cfg.generate.shards_per_step):
            src = topo.scorer_rank(j)
            s, sh, path, g_s, s_s = ctl.wait(src, SCORED, f"scored shard (step {step}, shard {j})")
            if (s, sh) != (step, j):
                raise RuntimeError(f"trainer expected scored shard ({step},{j}) from rank {src}, got ({s},{sh})")
            paths.append(path)
            gen_s, score_s = gen_s + g_s, score_s + s_s
        wait_s = time.perf_counter() - t0
        metrics = sess.tr.train_step(step, paths)
        metrics.update({"time/train_wait_s": wait_s, "time/gen_s": gen_s, "time/score_s": score_s})
        metrics["time/step_s"] = time.perf_counter() - t0
        entry = ledger_entry(sess.tr.last_step_data, behaviour_version(step, cfg.max_policy_lag), paths)
        sess.tr.timer.add("wait/scored", wait_s)  # tools/bench phase log (HPC_RLHF_TIMING=1)
        with sess.tr.timer.phase("io/publish"):
            v, wpath = sess.after_step(step, metrics, entry)
        sess.tr.timer.flush(step)
        stop = None  # the stop is agreed before the next weights go out: no step is generated in vain
        if lead:
            reqs = ctl.stop_requests()
            stop = bool(stop_flag.is_set() or reqs)
        stop = train_comm.bcast(stop, root=0) if train_comm.Get_size() > 1 else stop
        if lead and step + 1 < cfg.total_steps and not stop:
            for g in topo.generate:
                ctl.send(g, CTRL, ("weights", v, wpath))
        if stop and step + 1 < cfg.total_steps:
            if sess.last_ckpt_step != step + 1:
                sess.checkpoint(step + 1)
            verdict = "stop"
            break
    else:
        sess.finish()
    if lead:
        for r in others:
            ctl.send(r, CTRL, (verdict, cfg.total_steps if verdict == "done" else step))
        sess.log.close()
    dp.close()
    return verdict
