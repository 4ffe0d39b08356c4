"""Forward passes over (prompt, response) batches: log-probs, per-token values, sequence scores.

Every role lays a batch out the same way, so a response token sits at the same position in
generation, scoring and training:

    [pad .. pad | prompt tokens | response tokens | pad .. pad]
     left-padded to P columns      right-padded to R columns

Response token j of every row is column P + j; its log-prob and value come from column P + j - 1.
Position ids count real tokens only (cumsum of the attention mask), as in generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, P+R) long
    attention_mask: torch.Tensor  # (B, P+R) long
    position_ids: torch.Tensor  # (B, P+R) long
    response_mask: torch.Tensor  # (B, R) float, 1 on real response tokens
    prompt_width: int  # P
    response_width: int  # R

    @property
    def responses(self) -> torch.Tensor:
        """(B, R) response token ids (pad where response_mask is 0)."""
        return self.input_ids[:, self.prompt_width :]

    def select(self, idx: torch.Tensor) -> Batch:
        return Batch(
            self.input_ids[idx],
            self.attention_mask[idx],
            self.position_ids[idx],
            self.response_mask[idx],
            self.prompt_width,
            self.response_width,
        )

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            self.response_mask.to(device),
            self.prompt_width,
            self.response_width,
        )


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp_(min=0)


def make_batch(prompts: Sequence[np.ndarray], responses: Sequence[np.ndarray], pad_id: int) -> Batch:
    """Lay out ragged prompts and responses (token id arrays) as described in the module docstring."""
    b = len(prompts)
    p = max(len(x) for x in prompts)
    r = max(1, max((len(x) for x in responses), default=1))
    ids = torch.full((b, p + r), pad_id, dtype=torch.long)
    mask = torch.zeros((b, p + r), dtype=torch.long)
    for i, (pr, rs) in enumerate(zip(prompts, responses)):
        ids[i, p - len(pr) : p] = torch.as_tensor(np.asarray(pr, dtype=np.int64))
        ids[i, p : p + len(rs)] = torch.as_tensor(np.asarray(rs, dtype=np.int64))
        mask[i, p - len(pr) : p + len(rs)] = 1
    return Batch(ids, mask, positions(mask), mask[:, p:].float(), p, r)


def _logits_to_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, banned: Sequence[int]):
    logits = logits.float() / temperature
    if banned:
        logits[..., list(banned)] = float("-inf")
    logp_all = torch.log_softmax(logits, dim=-1)
    return logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), logits


def response_logprobs(
    model: torch.nn.Module,
    batch: Batch,
    temperature: float = 1.0,
    banned: Sequence[int] = (),
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, R) log-probs of the response tokens under `model` (logits / temperature, `banned` ids
    excluded from the distribution), zero where response_mask is 0; optionally (B, R) entropies."""
    p, r = batch.prompt_width, batch.response_width
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=r + 1,
        use_cache=False,
    )
    logits = out.logits[:, -(r + 1) : -1]  # columns P-1 .. P+R-2 predict response tokens
    logp, scaled = _logits_to_logprobs(logits, batch.input_ids[:, p:], temperature, banned)
    logp = torch.where(batch.response_mask > 0, logp, torch.zeros_like(logp))
    ent = None
    if with_entropy:
        pr = torch.softmax(scaled, dim=-1)
        ent = torch.logsumexp(scaled, -1) - (pr * scaled.masked_fill(pr == 0, 0)).sum(-1)
        ent = torch.where(batch.response_mask > 0, ent, torch.zeros_like(ent))
    return logp, ent


def _hidden(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    backbone = getattr(model, model.base_model_prefix)
    out = backbone(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    return out.last_hidden_state


def token_values(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """(B, R) values V(prompt + response[:j]) for each response token j, zero where masked."""
    p, r = batch.prompt_width, batch.response_width
    h = _hidden(model, batch)[:, p - 1 : p + r - 1]
    return model.score(h).squeeze(-1).float() * batch.response_mask


def sequence_scores(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """(B,) scalar read at the last real token of prompt+response (the reward model's score)."""
    h = _hidden(model, batch)
    last = batch.prompt_width + batch.response_mask.sum(-1).long() - 1
    h_last = h[torch.arange(h.shape[0], device=h.device), last]
    return model.score(h_last).squeeze(-1).float()
