"""Built-in reward functions (the hpc_rlhf/rewards contract): use them as they are, or copy one.

    reward:
      sources:
        - {name: correct, kind: function, function: "hpc_rlhf.rewards.builtin:exact_match"}

`exact_match`: 1.0 when the response's answer equals the prompt's label, else 0.0. The answer is the
content of the response's last `\\boxed{...}` (braces may nest); else the text after its last `####`;
else the text after its last `answer:` (any case); else the whole response. Answer and label are
then normalised by `normalize_answer`: strip, casefold, collapse every whitespace run to one space,
drop one trailing period, strip again. `exact_match_whole` compares the whole response (normalised,
no extraction). Both need a label on every prompt (task.name=jsonl with a "label" key on each line, or
task.name=dataset with task.label_column);
a missing one fails the job naming the sample.

`soft_overlong`: DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), a length penalty that needs no
label. With L = generate.max_new_tokens (the hard cut) and a buffer B = round(L / 5) (DAPO's 4096 of
20480), a response of n tokens (its EOS included) gets 0 when n <= L - B, (L - B - n) / B inside the
buffer, -1 at the cut: responses that run into the limit are pushed back gradually rather than at once.
Add it next to the task's reward, weight 1 as in DAPO:

    reward:
      sources:
        - {name: correct, kind: function, function: "hpc_rlhf.rewards.builtin:exact_match"}
        - {name: overlong, kind: function, function: "hpc_rlhf.rewards.builtin:soft_overlong"}

Another buffer: a function of your own that returns `overlong_penalty(lengths, max_tokens, buffer_tokens)`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional

import numpy as np

from hpc_rlhf.config import Config

_WS = re.compile(r"\s+")
_ANSWER = re.compile(r"answer\s*:", re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """strip, casefold, collapse whitespace runs to one space, drop one trailing '.', strip again."""
    s = _WS.sub(" ", text.strip().casefold())
    if s.endswith("."):
        s = s[:-1]
    return s.strip()


def _last_boxed(text: str) -> Optional[str]:
    """Content of the last \\boxed{...} whose braces close, else None."""
    start = text.rfind("\\boxed{")
    while start >= 0:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j]
        start = text.rfind("\\boxed{", 0, start)  # unclosed: try the one before
    return None


def extract_answer(text: str) -> str:
    """The answer part of a response: last \\boxed{...}, else after the last '####', else after the last
    'answer:' (any case), else the whole text (not normalised)."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    if "####" in text:
        return text.rsplit("####", 1)[1]
    found = list(_ANSWER.finditer(text))
    return text[found[-1].end() :] if found else text


def _labels(labels: list[Optional[str]], fn: str) -> list[str]:
    if any(lab is None for lab in labels):
        raise ValueError(f"{fn} needs a label for every prompt (a 'label' key on each line of task.prompts_path)")
    return [str(x) for x in labels]


def exact_match(
    prompts: list[str],
    responses: list[str],
    prompt_ids: list[np.ndarray],
    response_ids: list[np.ndarray],
    labels: list[Optional[str]],
) -> list[float]:
    """1.0 where normalize_answer(extract_answer(response)) == normalize_answer(label), else 0.0."""
    want = [normalize_answer(x) for x in _labels(labels, "exact_match")]
    return [float(normalize_answer(extract_answer(r)) == w) for r, w in zip(responses, want)]


def exact_match_whole(
    prompts: list[str],
    responses: list[str],
    prompt_ids: list[np.ndarray],
    response_ids: list[np.ndarray],
    labels: list[Optional[str]],
) -> list[float]:
    """1.0 where normalize_answer(response) == normalize_answer(label), else 0.0 (no extraction)."""
    want = [normalize_answer(x) for x in _labels(labels, "exact_match_whole")]
    return [float(normalize_answer(r) == w) for r, w in zip(responses, want)]


def overlong_penalty(lengths: Sequence[int], max_tokens: int, buffer_tokens: int) -> list[float]:
    """DAPO's soft overlong punishment of responses of `lengths` tokens: 0 up to max_tokens - buffer_tokens,
    then falling linearly to -1 at max_tokens, -1 beyond (0 < buffer_tokens <= max_tokens)."""
    if not 0 < buffer_tokens <= max_tokens:
        raise ValueError(f"the overlong buffer ({buffer_tokens} tokens) must be in 1..{max_tokens} (the length limit)")
    free = max_tokens - buffer_tokens
    return [max(-1.0, min(0.0, (free - int(n)) / buffer_tokens)) for n in lengths]


def soft_overlong(
    prompts: list[str],
    responses: list[str],
    prompt_ids: list[np.ndarray],
    response_ids: list[np.ndarray],
    labels: list[Optional[str]],
    cfg: Config,
) -> list[float]:
    """overlong_penalty of each response's token count, the limit generate.max_new_tokens, the buffer a fifth of it."""
    limit = cfg.generate.max_new_tokens
    return overlong_penalty([len(r) for r in response_ids], limit, max(1, round(limit / 5)))
