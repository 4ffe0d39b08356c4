"""The reward-model stage: `hpc-rlhf train-rm CONFIG [key=value ...]` trains a scalar-head Transformer on
preference pairs with the Bradley-Terry loss, -log sigmoid(r(chosen) - r(rejected)).

    hpc-rlhf train-rm configs/tiny.yaml run_dir=runs/rm rm.ranks=2     # mpiexec -n 2; resumes a stopped run
    hpc-rlhf submit configs/tiny.yaml stage=rm run_dir=runs/rm           # the same on Slurm

Pairs come from `rm.pairs_path`, read by data/pairs.py: a table (JSONL/Parquet/CSV/saved dataset) of
{"prompt" | "messages", "chosen", "rejected"} rows (other names: rm.prompt_column, rm.chosen_column,
rm.rejected_column), rendered with the chat template when `rm.chat_template`, or HDF5 token arrays; for the
demo task they are synthesised from the gold rule. A held-out split (`rm.heldout_frac`) gives the pairwise
accuracy. Step s trains on slice s of the epoch's permutation (drawn from (seed, epoch)), split over the
`rm.ranks` ranks (stages/loop.py: gradients summed, checkpoints, the agreed stop, exact resume); one rank
computes exactly what the single-process stage of 0.1.0 did. The model is saved as a Hugging Face folder
(`rm.out_dir`, default RUN_DIR/reward_model) that PPO loads through `model.reward_path`.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from hpc_rlhf.config import Config
from hpc_rlhf.data.pairs import load_pairs
from hpc_rlhf.models.build import build_classifier, build_reward, load_tokenizer
from hpc_rlhf.models.forward import make_batch, sequence_scores
from hpc_rlhf.rundir import RM_REPORT, RunDir, write_atomic
from hpc_rlhf.stages.loop import StageRun
from hpc_rlhf.stages.tokenizer import save_run_tokenizer


def stage_pairs(cfg: Config, tok) -> list[dict]:
    """The stage's preference pairs: `rm.pairs_path`'s (data/pairs.py), or the demo's, synthesised from the gold
    rule."""
    pairs = load_pairs(cfg, tok)
    if pairs is not None:
        return pairs
    from hpc_rlhf.demo.task import GoldTask

    t = cfg.task
    task = GoldTask(cfg.seed, t.vocab_words, t.prompt_len_min, t.prompt_len_max)
    return task.preference_pairs(cfg.rm.num_pairs, cfg.generate.max_new_tokens, tok.eos_token_id, cfg.rm.label_noise)


def _initial_model(cfg: Config, tok):
    """What train-rm starts from: model.reward_path, else model.policy_path with a new score head (drawn from
    model.init_seed + 1, models/build.py), else model.arch."""
    if cfg.model.reward_path is None and cfg.model.policy_path is not None:
        model = build_classifier(cfg.model.policy_path, "model.policy_path", cfg, tok, cfg.model.init_seed + 1)
        model.config.pad_token_id = tok.pad_token_id  # in the exported folder: transformers' forward needs it
        return model
    return build_reward(cfg, tok)


def _scores(model, pairs: list[dict], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    prompts = [p["prompt"] for p in pairs]
    batch = make_batch(prompts + prompts, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs], pad_id)
    s = sequence_scores(model, batch.to(device) if device is not None else batch)
    return s[: len(pairs)], s[len(pairs) :]


@torch.no_grad()
def pairwise_accuracy(model, pairs: list[dict], pad_id: int, batch_size: int = 256, device=None) -> float:
    hits = 0
    for i in range(0, len(pairs), batch_size):
        c, r = _scores(model, pairs[i : i + batch_size], pad_id, device)
        hits += int((c > r).sum())
    return hits / max(1, len(pairs))


def _split(cfg: Config, pairs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(held-out, train) pairs: a permutation drawn from the run seed alone."""
    perm = np.random.default_rng([cfg.seed, 0x4D]).permutation(len(pairs))
    n_held = max(1, int(len(pairs) * cfg.rm.heldout_frac))
    return [pairs[i] for i in perm[:n_held]], [pairs[i] for i in perm[n_held:]]


def _heldout_accuracy(run: StageRun, model, held: list[dict], pad_id: int) -> float:
    """Pairwise accuracy on the held-out pairs, each rank scoring its share."""
    mine = [held[i] for i in run.share(np.arange(len(held)))]
    hits = pairwise_accuracy(model.eval(), mine, pad_id, device=run.device) * len(mine) if mine else 0.0
    model.train()
    return run.allreduce_sum(round(hits)) / len(held)


# long: one pass over the stage (data, model, the epochs of steps, the report); each phase is a call or two
def train_reward_model(
    cfg: Config, run_dir: str | None = None, comm=None, stop=None, device=None, persist: bool = True
) -> dict | None:
    """Train (or resume) the reward model on this rank; the report, or None when stopped after a checkpoint.

    comm: the MPI world of a `train-rm` run (None: this process alone); persist=False (the demo, inside a PPO
    run dir) writes no checkpoints or metrics."""
    run_dir = run_dir or cfg.run_dir
    t0 = time.time()
    if comm is None:  # launched runs have it from launch/prepare.py
        save_run_tokenizer(cfg, run_dir)
    tok = load_tokenizer(cfg, run_dir)
    held, train = _split(cfg, stage_pairs(cfg, tok))
    run = StageRun(cfg, run_dir, comm, device or torch.device("cpu"), stop, persist)
    model = _initial_model(cfg, tok).to(run.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.rm.lr)
    start, extra = run.resume(model, opt)
    if start == 0:
        extra = {"acc0": _heldout_accuracy(run, model, held, tok.pad_token_id), "losses": []}
    bs = cfg.rm.batch_size
    per_epoch = -(-len(train) // bs)
    total = cfg.rm.epochs * per_epoch
    order, epoch_of_order = None, -1
    for step in range(start, total):
        epoch, i = divmod(step, per_epoch)
        if epoch != epoch_of_order:
            order, epoch_of_order = np.random.default_rng([cfg.seed, 0x4D, epoch]).permutation(len(train)), epoch
        idx = order[i * bs : (i + 1) * bs]
        mine = run.share(idx)
        opt.zero_grad(set_to_none=True)
        loss_v = 0.0
        if len(mine):
            c, r = _scores(model, [train[j] for j in mine], tok.pad_token_id, run.device)
            loss = -torch.nn.functional.logsigmoid(c - r).mean()
            if len(mine) != len(idx):  # this rank's share of the batch mean; the gradients are summed
                loss = loss * (len(mine) / len(idx))
            loss.backward()
            loss_v = loss.item()
        norm = run.reduce_and_step(model, opt, 1.0, local_empty=not len(mine))
        loss_v = run.allreduce_sum(loss_v)
        extra["losses"] = [*extra["losses"], loss_v][-10:]
        if run.end_step(step, total, {"rm/loss": loss_v, "rm/grad_norm": norm, "rm/epoch": epoch}, model, opt, extra):
            return None
    run.finish(total, model, opt, extra)
    acc = _heldout_accuracy(run, model.eval(), held, tok.pad_token_id)
    out_dir = cfg.rm.out_dir or RunDir(run_dir).reward_model
    report = {
        "out_dir": out_dir,
        "rm_pairwise_accuracy": acc,
        "rm_pairwise_accuracy_initial": extra["acc0"],
        "rm_train_pairs": len(train),
        "rm_heldout_pairs": len(held),
        "rm_final_loss": float(np.mean(extra["losses"])) if extra["losses"] else float("nan"),
        "rm_steps": total,
        "rm_ranks": run.size,
        "rm_wall_s": time.time() - t0,
    }
    if run.lead:
        model.eval().to("cpu").save_pretrained(out_dir, safe_serialization=True)
        tok.save_pretrained(out_dir)
        write_atomic(os.path.join(out_dir, RM_REPORT), json.dumps(report, indent=1).encode())
        print(f"reward model saved to {out_dir}; held-out pairwise accuracy {acc:.3f}", flush=True)
    return report


def run_rank(cfg: Config, run_dir: str, comm, device, stop) -> str:
    """One rank of `hpc-rlhf train-rm` (launch/worker.py, stage=rm): 'done' or 'stop'."""
    return "done" if train_reward_model(cfg, run_dir, comm, stop, device) is not None else "stop"
