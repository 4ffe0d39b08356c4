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

from hpc_rlhf.models.forward import positions


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
    """Sample one response per prompt (B prompts, left-padded into one batch)."""
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
    pos = positions(mask)
    tokens = torch.full((b, t_max), pad_id, dtype=torch.long)
    logps = torch.zeros((b, t_max), dtype=torch.float32)
    done = torch.zeros(b, dtype=torch.bool)
    lengths = torch.full((b,), t_max, dtype=torch.long)
    cache_arg = _cache_arg(model)
    past = None
    step_ids, step_pos = ids, pos
    for t in range(t_max):
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=step_pos,
            use_cache=True,
            logits_to_keep=1,
            **({cache_arg: past} if past is not None else {}),
        )
        past = getattr(out, cache_arg)
        logits = out.logits[:, -1].float() / params.temperature
        if banned:
            logits[:, banned] = float("-inf")
        logp_all = torch.log_softmax(logits, dim=-1)
        probs = _filter(logp_all.exp(), params.top_k, params.top_p)
        nxt = _pick(probs.cpu(), uniforms[:, t])
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens[:, t] = nxt
        logps[:, t] = logp_all.cpu().gather(-1, nxt.unsqueeze(-1)).squeeze(-1).masked_fill(done, 0.0)
        if params.stop_at_eos:
            hit = (nxt == eos_id) & ~done
            lengths[hit] = t + 1
            done |= hit
            if bool(done.all()):
                break
        step_ids = nxt.to(device).unsqueeze(-1)
        step_pos = step_pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=device)], dim=1)
    eos = np.zeros(b, dtype=np.uint8)
    responses, lps = [], []
    for i in range(b):
        n = int(lengths[i])
        r = tokens[i, :n].numpy().astype(np.int32)
        responses.append(r)
        lps.append(logps[i, :n].numpy().astype(np.float32))
        eos[i] = 1 if (n > 0 and params.stop_at_eos and int(r[-1]) == eos_id) else 0
    return Samples(responses, lps, eos)
