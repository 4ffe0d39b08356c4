"""Sampling with a KV cache, one private random stream per sample.

    out = sample(policy, prompts, seeds, SamplingParams(max_new_tokens=16), eos_id, pad_id)

Each sample draws its uniforms from its own generator seeded by `seeds[i]` (derived from the run
seed and the sample's identity, see rollout.plan), and picks its token by inverse CDF. So a sample's
tokens depend only on its prompt, its seed and the logits, never on which rank or which batch drew it.
Recorded log-probs are those of the full distribution at logits / temperature (top-k/top-p are
sampling filters only), with `banned` ids removed, exactly what the trainer recomputes.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hpc_rlhf.models.forward import positions, run_pair, vocab_logits
from hpc_rlhf.models.lean import Lean


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop_at_eos: bool = True


@dataclass
class Samples:
    responses: list[np.ndarray]  # int32 token ids, EOS included when emitted
    logprobs: list[np.ndarray]  # float32, aligned with responses
    eos: np.ndarray  # (B,) uint8


def banned_tokens(pad_id: int, eos_id: int, stop_at_eos: bool) -> tuple[int, ...]:
    """Ids never sampled: the pad token (when distinct from EOS), and EOS when responses run to full length."""
    banned = {pad_id} if pad_id != eos_id else set()
    if not stop_at_eos:
        banned.add(eos_id)
    return tuple(sorted(banned))


def _filter(probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """(B, V) probabilities with top-k / top-p filtering applied (not renormalised)."""
    if top_k > 0 and top_k < probs.shape[-1]:
        kth = torch.topk(probs, top_k, dim=-1).values[:, -1:]
        probs = torch.where(probs < kth, torch.zeros_like(probs), probs)
    if top_p < 1.0:
        sp, idx = torch.sort(probs, dim=-1, descending=True)
        cum = sp.cumsum(-1)
        drop = (cum - sp) > top_p * cum[:, -1:]  # keep the smallest prefix holding top_p of the mass
        sp = sp.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, idx, sp)
    return probs


def _pick(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: (B, V) unnormalised probs, (B,) uniforms in [0,1) -> (B,) token ids."""
    cdf = probs.double().cumsum(-1)
    target = (u * cdf[:, -1]).unsqueeze(-1)
    tok = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return tok.clamp_(max=probs.shape[-1] - 1)


def _cache_arg(model: torch.nn.Module) -> str:
    """transformers >= 5.2x names the KV cache `cache`; earlier releases `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    prompts: Sequence[np.ndarray],
    seeds: Sequence[int],
    params: SamplingParams,
    eos_id: int,
    pad_id: int,
) -> Samples:
    """Sample one response per prompt (B prompts, left-padded into one batch).

    With two or more torch threads: a large model samples the two halves of the prompts side by side
    (run_pair; each sample depends only on its prompt and seed, so the split changes only speed and
    the rounding of a batch of B/2 rows instead of B); a small one, whose decoding is bound by
    Python and kernel-launch overhead, runs on one thread (two threads would only contend for the
    GIL, and a team of two OpenMP threads stalls whenever the other core is busy)."""
    n = torch.get_num_threads()
    if n >= 2 and len(prompts) >= 2 and _param_count(model) >= _SPLIT_MIN_PARAMS:
        h = len(prompts) // 2
        a, b = run_pair(
            lambda: _sample(model, prompts[:h], seeds[:h], params, eos_id, pad_id),
            lambda: _sample(model, prompts[h:], seeds[h:], params, eos_id, pad_id),
        )
        return Samples(a.responses + b.responses, a.logprobs + b.logprobs, np.concatenate([a.eos, b.eos]))
    if n >= 2:
        torch.set_num_threads(1)
        try:
            return _sample(model, prompts, seeds, params, eos_id, pad_id)
        finally:
            torch.set_num_threads(n)
    return _sample(model, prompts, seeds, params, eos_id, pad_id)


# Below this many parameters a decode step is overhead-bound (measured: hidden 64 / 2 layers samples
# 16 x 32 tokens in 12 ms on one thread, 22 ms as two halves on two threads; hidden 256 / 4 layers
# in 160 ms on one thread, 120 ms as two halves).
_SPLIT_MIN_PARAMS = 1_000_000


def _param_count(model: torch.nn.Module) -> int:
    n = model.__dict__.get("_hpc_param_count")
    if n is None:
        n = sum(p.numel() for p in model.parameters())
        model.__dict__["_hpc_param_count"] = n
    return n


# long: the decode loop and the state it carries (cache, masks, RNG draws) read best in one piece
@torch.no_grad()
def _sample(
    model: torch.nn.Module,
    prompts: Sequence[np.ndarray],
    seeds: Sequence[int],
    params: SamplingParams,
    eos_id: int,
    pad_id: int,
) -> Samples:
    device = next(model.parameters()).device
    b, t_max = len(prompts), params.max_new_tokens
    p = max(len(x) for x in prompts)
    ids = torch.full((b, p), pad_id, dtype=torch.long)
    mask = torch.zeros((b, p), dtype=torch.long)
    for i, pr in enumerate(prompts):
        ids[i, p - len(pr) :] = torch.as_tensor(np.asarray(pr, dtype=np.int64))
        mask[i, p - len(pr) :] = 1
    uniforms = torch.stack(
        [torch.rand(t_max, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64) for s in seeds]
    )
    banned = list(banned_tokens(pad_id, eos_id, params.stop_at_eos))
    ids, mask = ids.to(device), mask.to(device)
    lean = Lean.of(model)
    steps = _lean_steps(lean, model, ids, mask, t_max) if lean is not None else _hf_steps(model, ids, mask)
    banned_idx = torch.as_tensor(banned, dtype=torch.long, device=device) if banned else None
    tokens = torch.full((b, t_max), pad_id, dtype=torch.long)
    logps = torch.zeros((b, t_max), dtype=torch.float32)
    done = torch.zeros(b, dtype=torch.bool)
    lengths = torch.full((b,), t_max, dtype=torch.long)
    nxt = None
    for t in range(t_max):
        logits = vocab_logits(model, steps.send(nxt)).float()
        if params.temperature != 1.0:
            logits = logits / params.temperature
        if banned_idx is not None:
            logits.index_fill_(-1, banned_idx, float("-inf"))
        logp_all = torch.log_softmax(logits, dim=-1).cpu()
        probs = _filter(logp_all.exp(), params.top_k, params.top_p)
        nxt = _pick(probs, uniforms[:, t])
        if params.stop_at_eos:
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens[:, t] = nxt
        lp = logp_all.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
        logps[:, t] = lp.masked_fill(done, 0.0) if params.stop_at_eos else lp
        if params.stop_at_eos:
            hit = (nxt == eos_id) & ~done
            lengths[hit] = t + 1
            done |= hit
            if bool(done.all()):
                break
        nxt = nxt.to(device)
    steps.close()
    eos = np.zeros(b, dtype=np.uint8)
    responses, lps = [], []
    tok_np, lp_np, len_np = tokens.numpy().astype(np.int32), logps.numpy(), lengths.numpy()
    for i in range(b):
        n = int(len_np[i])
        r = tok_np[i, :n].copy()
        responses.append(r)
        lps.append(lp_np[i, :n].copy())
        eos[i] = 1 if (n > 0 and params.stop_at_eos and int(r[-1]) == eos_id) else 0
    return Samples(responses, lps, eos)


def _hf_steps(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor):
    """Generator of (B, V) next-token logits through the Hugging Face forward with its KV cache:
    the first from the prompts, then one per token sent in."""
    b, device = ids.shape[0], ids.device
    cache_arg = _cache_arg(model)
    past = None
    step_ids, step_pos = ids, positions(mask)
    while True:
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=step_pos,
            use_cache=True,
            logits_to_keep=1,
            **({cache_arg: past} if past is not None else {}),
        )
        past = getattr(out, cache_arg)
        nxt = yield out.logits[:, -1]
        step_ids = nxt.unsqueeze(-1)
        step_pos = step_pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=device)], dim=1)


def _lean_steps(lean: Lean, model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, t_max: int):
    """As _hf_steps, on the lean decoder: a KV cache preallocated for prompt + t_max columns, the
    projection weights fused once per call, RoPE tables computed once, no padding mask when the
    prompts are all the same length."""
    b, p = ids.shape
    device, dtype = ids.device, lean.base.embed_tokens.weight.dtype
    width = p + t_max
    fused = lean.fused_weights()
    cache = [
        (
            torch.empty((b, lean.n_kv, width, lean.head_dim), dtype=dtype, device=device),
            torch.empty((b, lean.n_kv, width, lean.head_dim), dtype=dtype, device=device),
        )
        for _ in lean.layers
    ]
    n_prompt = mask.sum(-1, keepdim=True)
    pos = torch.cat([positions(mask), n_prompt + torch.arange(t_max, device=device)], dim=1)
    cos, sin = lean.cos_sin(pos, dtype)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, width, D)
    lm = model.lm_head
    if bool(mask.all()):
        pre_mask, keys = None, None
    else:
        keys = torch.cat([mask.bool(), torch.ones((b, t_max), dtype=torch.bool, device=device)], dim=1)
        causal = torch.ones((p, p), dtype=torch.bool, device=device).tril_()
        pre_mask = ((causal & keys[:, None, :p]) | torch.eye(p, dtype=torch.bool, device=device)).unsqueeze(1)
    h = lean.cached_step(ids, 0, cos[:, :, :p], sin[:, :, :p], cache, fused, pre_mask, last_only=True)
    col = p
    while True:
        nxt = yield F.linear(h, lm.weight, lm.bias)
        m = None if keys is None else keys[:, None, None, : col + 1]
        h = lean.cached_step(
            nxt.unsqueeze(-1), col, cos[:, :, col : col + 1], sin[:, :, col : col + 1], cache, fused, m, True
        )
        col += 1
