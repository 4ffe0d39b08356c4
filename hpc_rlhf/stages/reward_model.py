"""The reward-model stage: `hpc-rlhf train-rm CONFIG` trains a scalar-head Transformer on
preference pairs with the Bradley-Terry loss, -log sigmoid(r(chosen) - r(rejected)).

Pairs come from `rm.pairs_path` (JSONL lines {"prompt","chosen","rejected"} as text, or HDF5 with
flat token arrays `prompt_tokens/chosen_tokens/rejected_tokens` and int64 `*_offsets`), or for the
demo task are synthesised from the gold rule. A held-out split (`rm.heldout_frac`) gives the
pairwise accuracy. The model is saved as a Hugging Face folder (`rm.out_dir`, default
RUN_DIR/reward_model) that PPO loads through `model.reward_path`.
"""

from __future__ import annotations

import json
import os
import time

import h5py
import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from hpc_rlhf.config import Config
from hpc_rlhf.errors import UserError
from hpc_rlhf.launch.prepare import save_run_tokenizer
from hpc_rlhf.models.build import _no_dropout, build_reward, load_tokenizer
from hpc_rlhf.models.forward import make_batch, sequence_scores
from hpc_rlhf.rundir import RM_REPORT, RunDir


def load_pairs(cfg: Config, tok) -> list[dict]:
    path = cfg.rm.pairs_path
    if path is None:
        if cfg.task.name != "demo":
            raise UserError("rm.pairs_path is unset; give a JSONL or HDF5 file of preference pairs")
        from hpc_rlhf.demo.task import GoldTask

        t = cfg.task
        task = GoldTask(cfg.seed, t.vocab_words, t.prompt_len_min, t.prompt_len_max)
        return task.preference_pairs(
            cfg.rm.num_pairs, cfg.generate.max_new_tokens, tok.eos_token_id, cfg.rm.label_noise
        )
    if path.endswith((".h5", ".hdf5")):
        with h5py.File(path, "r", locking=False) as f:
            cols = {}
            for k in ("prompt", "chosen", "rejected"):
                if f"{k}_tokens" not in f or f"{k}_offsets" not in f:
                    raise UserError(f"{path}: needs datasets {k}_tokens and {k}_offsets")
                flat, off = f[f"{k}_tokens"][()], f[f"{k}_offsets"][()]
                cols[k] = [flat[off[i] : off[i + 1]] for i in range(len(off) - 1)]
        return [
            {"prompt": p, "chosen": c, "rejected": r}
            for p, c, r in zip(cols["prompt"], cols["chosen"], cols["rejected"])
        ]
    pairs = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                enc = {
                    k: np.asarray(tok(d[k], add_special_tokens=False)["input_ids"], dtype=np.int32)
                    for k in ("prompt", "chosen", "rejected")
                }
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(
                    f"{path}:{n}: expected a JSON object with prompt, chosen and rejected strings"
                ) from None
            for k in ("chosen", "rejected"):
                enc[k] = np.concatenate([enc[k], [tok.eos_token_id]]).astype(np.int32)
            pairs.append(enc)
    if not pairs:
        raise UserError(f"{path}: no preference pairs found")
    return pairs


def _initial_model(cfg: Config, tok):
    if cfg.model.reward_path is None and cfg.model.policy_path is not None:
        conf = _no_dropout(AutoConfig.from_pretrained(cfg.model.policy_path, local_files_only=True))
        conf.num_labels, conf.pad_token_id = 1, tok.pad_token_id
        return AutoModelForSequenceClassification.from_pretrained(
            cfg.model.policy_path, config=conf, local_files_only=True
        )
    return build_reward(cfg, tok)


def _scores(model, pairs: list[dict], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    prompts = [p["prompt"] for p in pairs]
    batch = make_batch(prompts + prompts, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs], pad_id)
    s = sequence_scores(model, batch)
    return s[: len(pairs)], s[len(pairs) :]


@torch.no_grad()
def pairwise_accuracy(model, pairs: list[dict], pad_id: int, batch_size: int = 256) -> float:
    hits = 0
    for i in range(0, len(pairs), batch_size):
        c, r = _scores(model, pairs[i : i + batch_size], pad_id)
        hits += int((c > r).sum())
    return hits / max(1, len(pairs))


def train_reward_model(cfg: Config, run_dir: str | None = None) -> dict:
    run_dir = run_dir or cfg.run_dir
    t0 = time.time()
    save_run_tokenizer(cfg, run_dir)
    tok = load_tokenizer(cfg, run_dir)
    pairs = load_pairs(cfg, tok)
    perm = np.random.default_rng([cfg.seed, 0x4D]).permutation(len(pairs))
    n_held = max(1, int(len(pairs) * cfg.rm.heldout_frac))
    held, train = [pairs[i] for i in perm[:n_held]], [pairs[i] for i in perm[n_held:]]
    model = _initial_model(cfg, tok).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.rm.lr)
    acc0 = pairwise_accuracy(model.eval(), held, tok.pad_token_id)
    model.train()
    losses = []
    for epoch in range(cfg.rm.epochs):
        order = np.random.default_rng([cfg.seed, 0x4D, epoch]).permutation(len(train))
        for i in range(0, len(order), cfg.rm.batch_size):
            c, r = _scores(model, [train[j] for j in order[i : i + cfg.rm.batch_size]], tok.pad_token_id)
            loss = -torch.nn.functional.logsigmoid(c - r).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
    model.eval()
    acc = pairwise_accuracy(model, held, tok.pad_token_id)
    out_dir = cfg.rm.out_dir or RunDir(run_dir).reward_model
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    report = {
        "out_dir": out_dir,
        "rm_pairwise_accuracy": acc,
        "rm_pairwise_accuracy_initial": acc0,
        "rm_train_pairs": len(train),
        "rm_heldout_pairs": len(held),
        "rm_final_loss": float(np.mean(losses[-10:])) if losses else float("nan"),
        "rm_wall_s": time.time() - t0,
    }
    with open(os.path.join(out_dir, RM_REPORT), "w") as f:
        json.dump(report, f, indent=1)
    return report
