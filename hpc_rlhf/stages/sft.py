"""The SFT stage: `hpc-rlhf sft CONFIG [key=value ...]` fine-tunes the policy on prompt/response or chat data.

    hpc-rlhf sft configs/tiny.yaml sft.data_path=sft.jsonl run_dir=runs/sft sft.ranks=2   # resumes when stopped
    hpc-rlhf submit configs/tiny.yaml stage=sft sft.data_path=sft.jsonl run_dir=runs/sft  # the same on Slurm
    ... then PPO from it: model.policy_path=runs/sft/final/policy

The examples (data/sft.py: token ids and a loss mask, the loss on the response / assistant tokens only) are
read by every rank. Epoch e visits them in a permutation drawn from (seed, e); with `sft.packing` they are
packed in that order into rows of `sft.max_len` tokens (a new row when the next example does not fit), each
row attending only within its examples (a block-diagonal causal 4-D mask, positions restarting per example),
else one example per row. Step s takes `sft.batch_size` rows, split over the `sft.ranks` ranks; the loss is
the cross-entropy summed over the loss tokens divided by the step's global loss-token count and the
gradients are summed (stages/loop.py), so any number of ranks computes the single-rank update up to float
order. Checkpoints, the agreed stop and exact resume are stages/loop.py's; at the end the model and the
tokenizer are exported to RUN_DIR/final/policy (a Hugging Face folder for `model.policy_path`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from hpc_rlhf.config import Config
from hpc_rlhf.data.sft import Example, load_examples
from hpc_rlhf.models.build import build_policy, load_tokenizer
from hpc_rlhf.models.export import export_policy
from hpc_rlhf.stages.loop import StageRun


def epoch_rows(cfg: Config, examples: list[Example], epoch: int) -> list[list[int]]:
    """The rows of epoch `epoch`: lists of example indices (one each, or packed up to sft.max_len tokens)."""
    order = np.random.default_rng([cfg.seed, 0x5F7, epoch]).permutation(len(examples))
    if not cfg.sft.packing:
        return [[int(i)] for i in order]
    rows: list[list[int]] = []
    used = cfg.sft.max_len
    for i in order:
        n = len(examples[i].ids)
        if used + n > cfg.sft.max_len:
            rows.append([])
            used = 0
        rows[-1].append(int(i))
        used += n
    return rows


def schedule(cfg: Config, examples: list[Example]) -> list[tuple[int, list[list[int]]]]:
    """(epoch, rows) of every step, in order: the whole run's batches, from (seed, epoch) alone."""
    out = []
    for epoch in range(cfg.sft.epochs):
        rows = epoch_rows(cfg, examples, epoch)
        bs = cfg.sft.batch_size
        out += [(epoch, rows[i : i + bs]) for i in range(0, len(rows), bs)]
    return out


def loss_tokens(examples: list[Example], rows: list[list[int]]) -> int:
    """Tokens the loss is on in `rows` (an example's first token is never predicted)."""
    return int(sum(examples[i].loss_mask[1:].sum() for row in rows for i in row))


def layout(examples: list[Example], rows: list[list[int]], pad_id: int, packed: bool) -> dict[str, torch.Tensor]:
    """Model inputs of `rows`, right-padded: input_ids, position_ids (restarting per example), targets and
    their mask (column t predicts token t+1 of the same example), and the attention mask: (B, W) for one
    example per row, (B, 1, W, W) block-diagonal causal when packed (a pad column sees only itself)."""
    width = max(sum(len(examples[i].ids) for i in row) for row in rows)
    b = len(rows)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    target = torch.zeros((b, width), dtype=torch.long)
    tmask = torch.zeros((b, width), dtype=torch.bool)
    doc = torch.full((b, width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row):
            ex = examples[i]
            n = len(ex.ids)
            ids[r, at : at + n] = torch.as_tensor(ex.ids)
            pos[r, at : at + n] = torch.arange(n)
            target[r, at : at + n - 1] = torch.as_tensor(ex.ids[1:])
            tmask[r, at : at + n - 1] = torch.as_tensor(ex.loss_mask[1:])
            doc[r, at : at + n] = k
            at += n
    real = doc >= 0
    if packed:
        same = (doc[:, :, None] == doc[:, None, :]) & real[:, :, None]
        causal = torch.tril(torch.ones((width, width), dtype=torch.bool))
        attn = (same & causal) | torch.eye(width, dtype=torch.bool)
        attn = attn[:, None]
    else:
        attn = real.long()
    return {"input_ids": ids, "position_ids": pos, "attention_mask": attn, "target": target, "target_mask": tmask}


def summed_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy summed over the target tokens of `batch` (layout())."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        use_cache=False,
    )
    logp = torch.log_softmax(out.logits.float(), dim=-1)
    nll = -logp.gather(-1, batch["target"].unsqueeze(-1)).squeeze(-1)
    return torch.where(batch["target_mask"], nll, torch.zeros_like(nll)).sum()


def train_sft(cfg: Config, run_dir: str, comm: Any = None, stop: Any = None, device: Any = None) -> dict | None:
    """Train (or resume) SFT on this rank; a report, or None when stopped after a checkpoint."""
    t0 = time.time()
    tok = load_tokenizer(cfg, run_dir)
    examples, dropped = load_examples(cfg, tok)
    steps = schedule(cfg, examples)
    run = StageRun(cfg, run_dir, comm, device or torch.device("cpu"), stop)
    model = build_policy(cfg, tok, run.device).train()  # loaded straight onto its device
    s = cfg.sft
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    start, extra = run.resume(model, opt)
    extra = extra or {"losses": []}
    for step in range(start, len(steps)):
        epoch, rows = steps[step]
        count = max(1, loss_tokens(examples, rows))
        mine = [rows[i] for i in run.share(np.arange(len(rows)))]
        opt.zero_grad(set_to_none=True)
        loss_v = 0.0
        if mine:
            batch = {k: v.to(run.device) for k, v in layout(examples, mine, tok.pad_token_id, s.packing).items()}
            loss = summed_loss(model, batch) / count
            loss.backward()
            loss_v = loss.item()
        norm = run.reduce_and_step(model, opt, s.max_grad_norm, local_empty=not mine)
        loss_v = run.allreduce_sum(loss_v)
        extra["losses"] = [*extra["losses"], loss_v][-10:]
        metrics = {"sft/loss": loss_v, "sft/grad_norm": norm, "sft/tokens": count, "sft/epoch": epoch}
        if run.end_step(step, len(steps), metrics, model, opt, extra):
            return None
    run.finish(len(steps), model, opt, extra)
    report = {
        "sft_steps": len(steps),
        "sft_examples": len(examples),
        "sft_dropped": dropped,
        "sft_final_loss": float(np.mean(extra["losses"])) if extra["losses"] else float("nan"),
        "sft_ranks": run.size,
        "sft_wall_s": time.time() - t0,
    }
    if run.lead:
        out = export_policy(run_dir, model.eval().to("cpu"), tok)
        report["out_dir"] = out
        print(f"SFT policy saved to {out} ({len(steps)} steps, final loss {report['sft_final_loss']:.4f})", flush=True)
    return report


def run_rank(cfg: Config, run_dir: str, comm: Any, device: Any, stop: Any) -> str:
    """One rank of `hpc-rlhf sft` (launch/worker.py, stage=sft): 'done' or 'stop'."""
    return "done" if train_sft(cfg, run_dir, comm, stop, device) is not None else "stop"
