"""A reward model with its own tokenizer: the policy's tokens decoded to text and re-encoded for it.

    rt = RewardTokens.of(cfg, policy_tok)         # None when the reward model reads the policy's tokens
    batch = rt.batch(prompt_ids, response_ids, raw_prompts)    # models.forward.Batch of the RM's tokens
    scores = sequence_scores(reward_model, batch.to(device))   # the score at each sequence's last token

The reward model's tokenizer is `model.reward_tokenizer_path`, else the tokenizer files inside
`model.reward_path` when it has some, else the policy's. It differs from the policy's when the tokenizers'
definitions differ (the tokenizer.json model, normalizer, pre-tokenizer, post-processor and added tokens, or
the vocabulary of a tokenizer without one, and the BOS/EOS ids): folder names are never compared. When they
are the same, nothing here runs and the scorer scores the policy's tokens as it always did.

Re-encoding, per sample (prompt ids p, response ids r, both the policy's):
- text = policy.decode(p + r) with special tokens skipped; the response's text is what that adds to
  policy.decode(p) (so the spacing between them is the policy tokenizer's own);
- model.reward_chat_template=false: the RM's tokens are rm_tok(text) with its special tokens (BOS/EOS where
  its post-processor adds them): exactly what scoring the text directly gives;
- true: rm_tok.apply_chat_template(prompt turns + [{"role": "assistant", "content": response text}]), the
  prompt turns being the prompt as written in the prompt file when the prompt source keeps it (a string is
  one user turn, messages are used as they are), else the decoded prompt as one user turn.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from hpc_rlhf.config import Config
from hpc_rlhf.data.chat import require_chat_template
from hpc_rlhf.errors import UserError, first_line
from hpc_rlhf.models.forward import Batch, make_batch
from hpc_rlhf.rundir import TOKENIZER_FILE

TOKENIZER_FILES = (TOKENIZER_FILE, "tokenizer_config.json", "tokenizer.model", "vocab.json")  # any one of them


def reward_tokenizer_path(cfg: Config) -> Optional[str]:
    """The reward model's own tokenizer folder, or None when it reads the policy's tokens."""
    if cfg.model.reward_tokenizer_path:
        return cfg.model.reward_tokenizer_path
    rp = cfg.model.reward_path
    if rp and any(os.path.exists(os.path.join(rp, f)) for f in TOKENIZER_FILES):
        return rp
    return None


def load_reward_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The tokenizer at `path` (local files only); a one-line error naming it when it cannot be loaded."""
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 -- any failure is the folder's
        key = "model.reward_tokenizer_path (or model.reward_path)"
        raise UserError(f"reward tokenizer '{path}' could not be loaded ({first_line(e)}); fix {key}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def tokenizer_identity(tok: PreTrainedTokenizerBase) -> str:
    """What decides how `tok` maps text to ids, as a canonical string (no paths, no padding settings)."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        core: Any = json.loads(backend.to_str())
        core.pop("padding", None)
        core.pop("truncation", None)
    else:
        core = sorted(tok.get_vocab().items())
    return json.dumps([core, tok.bos_token_id, tok.eos_token_id], sort_keys=True)


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    return a is b or tokenizer_identity(a) == tokenizer_identity(b)


class RewardTokens:
    """Decodes the policy's tokens and encodes them for the reward model (see the module docstring)."""

    def __init__(self, policy_tok: PreTrainedTokenizerBase, rm_tok: PreTrainedTokenizerBase, chat: bool):
        self.policy_tok, self.rm_tok, self.chat = policy_tok, rm_tok, chat

    @classmethod
    def of(cls, cfg: Config, policy_tok: PreTrainedTokenizerBase) -> Optional[RewardTokens]:
        """The re-encoder of the run, or None when the reward model's tokenizer is the policy's."""
        path = reward_tokenizer_path(cfg)
        if path is None:
            return None
        rm_tok = load_reward_tokenizer(path)
        if same_tokenizer(policy_tok, rm_tok):
            return None
        if cfg.model.reward_chat_template:
            require_chat_template(rm_tok, path, "model.reward_chat_template")
        return cls(policy_tok, rm_tok, cfg.model.reward_chat_template)

    def texts(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> tuple[str, str]:
        """(prompt text, response text) as the policy's tokenizer decodes them, special tokens skipped."""
        dec = self.policy_tok.decode
        p, r = [int(t) for t in prompt_ids], [int(t) for t in response_ids]
        prompt, full = dec(p, skip_special_tokens=True), dec(p + r, skip_special_tokens=True)
        return prompt, full[len(prompt) :] if full.startswith(prompt) else dec(r, skip_special_tokens=True)

    def encode(self, prompt_ids: Sequence[int], response_ids: Sequence[int], raw_prompt: Any = None) -> list[int]:
        """The reward model's token ids of one sample."""
        prompt, response = self.texts(prompt_ids, response_ids)
        if not self.chat:
            return [int(t) for t in self.rm_tok(prompt + response, add_special_tokens=True)["input_ids"]]
        source = raw_prompt if raw_prompt is not None else prompt
        turns = [{"role": "user", "content": source}] if isinstance(source, str) else list(source)
        turns.append({"role": "assistant", "content": response.strip()})
        ids = self.rm_tok.apply_chat_template(turns, tokenize=True, add_generation_prompt=False)
        if hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        return [int(t) for t in ids]

    def batch(self, prompts: Sequence[Any], responses: Sequence[Any], raw: Optional[Sequence[Any]] = None) -> Batch:
        """A Batch of the reward model's sequences (each whole sequence as the 'prompt', no response part):
        sequence_scores reads each at its last token, as it reads the policy's prompt+response."""
        raw = raw if raw is not None else [None] * len(prompts)
        seqs = [np.asarray(self.encode(p, r, q), dtype=np.int64) for p, r, q in zip(prompts, responses, raw)]
        empty = [np.zeros(0, dtype=np.int64)] * len(seqs)
        return make_batch(seqs, empty, int(self.rm_tok.pad_token_id))
