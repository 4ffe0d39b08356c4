"""Forward passes over (prompt, response) batches: log-probs, per-token values, sequence scores.

Every role lays a batch out the same way, so a response token sits at the same position in
generation, scoring and training:

    [pad .. pad | prompt tokens | response tokens | pad .. pad]
     left-padded to P columns      right-padded to R columns

Response token j of every row is column P + j; its log-prob and value come from column P + j - 1.
Position ids count real tokens only (cumsum of the attention mask), as in generation.

Llama, Qwen2 and Mistral decoders run on the lean path (models/lean.py); every other family on its
Hugging Face forward, with the same layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from hpc_rlhf.models.lean import Lean, _lean_ok

A = TypeVar("A")
B = TypeVar("B")


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


# -- two independent pieces of work on the two halves of the intra-op threads ----------------------

_POOL: ThreadPoolExecutor | None = None


def run_pair(f: Callable[[], A], g: Callable[[], B]) -> tuple[A, B]:
    """f() and g() (independent: separate models or separate rows) at the same time, each with half
    of torch's intra-op threads, when there are at least two; else one after the other.

    Small decoders are latency-bound: two single-threaded streams of kernels keep two cores busier
    than one stream whose kernels each fork and join two threads, and one stream stalled by a
    descheduled thread no longer stalls the other. Each piece's numerics are those of a run with
    n // 2 threads whatever the scheduling (the collectives of data parallelism stay on the caller).
    """
    global _POOL
    n = torch.get_num_threads()
    if n < 2:
        return f(), g()
    if _POOL is None:
        _POOL = ThreadPoolExecutor(1, thread_name_prefix="hpc-rlhf-pair")
    grad = torch.is_grad_enabled()  # grad mode is per thread: the worker takes the caller's

    def worker():
        with torch.set_grad_enabled(grad):
            return f()

    torch.set_num_threads(n // 2)
    try:
        fut = _POOL.submit(worker)
        try:
            b = g()
        finally:
            a = fut.result()
    finally:
        torch.set_num_threads(n)
    return a, b


# -- forward passes over a Batch: log-probs, values, scores ----------------------------------------------


def limit_vocab(model: torch.nn.Module, n_tokens: int) -> None:
    """Restrict `model`'s next-token distribution to ids < n_tokens (its tokenizer's) when its output
    layer is wider: padded vocabularies (Qwen2.5, Phi-3, GPT-NeoX) hold rows no token decodes to.
    `sample` never draws them and `response_logprobs` normalises without them."""
    if n_tokens < model.get_output_embeddings().weight.shape[0]:
        model.__dict__["_hpc_n_tokens"] = n_tokens


def vocab_logits(model: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """`logits` (..., V) cut to the ids `model` may emit (see limit_vocab)."""
    n = model.__dict__.get("_hpc_n_tokens")
    return logits if n is None else logits[..., :n]


def checkpoint_layers(model: torch.nn.Module) -> None:
    """Activation checkpointing per decoder layer for training `model`: its activations inside each
    layer are recomputed in the backward pass (non-reentrant torch.utils.checkpoint), not kept. The
    lean path checkpoints every layer but the last; other models take Hugging Face's
    activation (gradient) checkpointing, which acts in train mode only (dropout is off in every model
    built here, so train mode changes nothing else)."""
    model._hpc_checkpoint_layers = True
    model.__dict__.pop("_hpc_lean", None)
    if not _lean_ok(model):
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.train()


def _key_mask(batch: Batch, width: int) -> torch.Tensor | None:
    m = batch.attention_mask[:, :width]
    return None if bool(m.all()) else m.bool()


def _logits_to_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, banned: Sequence[int]):
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if banned:
        logits = logits.index_fill(-1, torch.as_tensor(list(banned), device=logits.device), float("-inf"))
    logp_all = torch.log_softmax(logits, dim=-1)
    return logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), logits


def _response_hidden(lean: Lean, batch: Batch) -> torch.Tensor:
    """(B, R, d) hidden states of columns P-1 .. P+R-2 (those that predict / value the response)."""
    p, r = batch.prompt_width, batch.response_width
    w = p + r - 1  # the last column is never read
    return lean.hidden(batch.input_ids[:, :w], batch.position_ids[:, :w], _key_mask(batch, w), p - 1)


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
    lean = Lean.of(model)
    if lean is not None:
        logits = F.linear(_response_hidden(lean, batch), model.lm_head.weight, model.lm_head.bias)
    else:
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            logits_to_keep=r + 1,
            use_cache=False,
        )
        logits = out.logits[:, -(r + 1) : -1]  # columns P-1 .. P+R-2 predict response tokens
    logp, scaled = _logits_to_logprobs(vocab_logits(model, logits), batch.input_ids[:, p:], temperature, banned)
    keep = batch.response_mask > 0
    logp = torch.where(keep, logp, torch.zeros_like(logp))
    ent = None
    if with_entropy:
        pr = torch.softmax(scaled, dim=-1)
        ent = torch.logsumexp(scaled, -1) - (pr * scaled.masked_fill(pr == 0, 0)).sum(-1)
        ent = torch.where(keep, ent, torch.zeros_like(ent))
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
    lean = Lean.of(model)
    if lean is not None:
        h = _response_hidden(lean, batch)
    else:
        h = _hidden(model, batch)[:, p - 1 : p + r - 1]
    return model.score(h).squeeze(-1).float() * batch.response_mask


def sequence_scores(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """(B,) scalar read at the last real token of prompt+response (the reward model's score)."""
    last = batch.prompt_width + batch.response_mask.sum(-1).long() - 1
    rows = torch.arange(last.shape[0], device=last.device)
    lean = Lean.of(model)
    if lean is not None:
        lo, hi = int(last.min()), int(last.max()) + 1
        h = lean.hidden(batch.input_ids[:, :hi], batch.position_ids[:, :hi], _key_mask(batch, hi), lo)
        h_last = h[rows, last - lo]
    else:
        h = _hidden(model, batch)
        h_last = h[rows, last]
    return model.score(h_last).squeeze(-1).float()
