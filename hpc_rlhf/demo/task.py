"""The demo's synthetic task: a word-level language, prompts, and a hidden "gold" preference rule.

The vocabulary is `vocab_words` made-up words. A fixed half of them (chosen from the run seed) are
"gold" words. The gold reward of a response is the fraction of its words that are gold words, minus
0.5 when it is shorter than 3 words (so an empty or one-word answer never wins). A random policy
scores about 0.5; a policy that learned the rule scores near 1. Nobody tells the policy the rule: it
only sees a reward model trained on pairs labelled by the rule with label noise.

Everything here is deterministic in (seed, index) and needs no network or pretrained weights.

Hooks the rest of the package finds by name (nothing outside the demo imports this module):
`prompt_source` is the prompt source of `task.name=demo` (rollout/prompts.py), and
`gold_reward_metric` (spec GOLD_METRIC) is the step metric `gen/gold_reward_mean` that the demo
configs list in `logging.step_metrics` and `hpc-rlhf demo` installs (roles/metrics_log.py), and
`gold_reward` (spec GOLD_REWARD) is the gold rule as a reward source (`reward.sources`, kind=function:
train on the rule itself, no reward model).
"""

from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from typing import Any

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
_CONS = "bdfgklmnprstvz"
_VOWS = "aeiou"


def words(n: int) -> list[str]:
    """n distinct pronounceable two-syllable words, always the same for the same n."""
    syll = [c + v for c in _CONS for v in _VOWS]
    out = [a + b for a in syll for b in syll if a != b]
    rng = np.random.default_rng(12345)
    return [out[i] for i in rng.choice(len(out), size=n, replace=False)]


def build_tokenizer(n_words: int, out_dir: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (tokenizer.json) saved as a Hugging Face folder at out_dir."""
    vocab = {t: i for i, t in enumerate(SPECIALS + words(n_words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    tok.padding_side = "left"
    os.makedirs(out_dir, exist_ok=True)
    tok.save_pretrained(out_dir)
    return tok


class GoldTask:
    """Prompts and the gold rule, over token ids of a tokenizer made by build_tokenizer."""

    def __init__(self, seed: int, n_words: int, len_min: int, len_max: int):
        self.n_words, self.len_min, self.len_max, self.seed = n_words, len_min, len_max, seed
        self.first_word = len(SPECIALS)
        rng = np.random.default_rng([seed, 7])
        gold = rng.choice(n_words, size=n_words // 2, replace=False) + self.first_word
        self.is_gold = np.zeros(self.first_word + n_words, dtype=bool)
        self.is_gold[gold] = True

    def prompt(self, index: int, split: str = "train") -> np.ndarray:
        """Token ids of prompt `index` of `split` ('train' or 'eval'): random words, deterministic."""
        rng = np.random.default_rng([self.seed, 11 if split == "train" else 13, index])
        n = int(rng.integers(self.len_min, self.len_max + 1))
        return rng.integers(self.first_word, self.first_word + self.n_words, size=n).astype(np.int32)

    def gold_reward(self, response: np.ndarray, eos_id: int) -> float:
        """Fraction of gold words in the response (EOS not counted), -0.5 if under 3 words."""
        r = np.asarray(response)
        w = r[(r != eos_id) & (r >= self.first_word)]
        frac = float(self.is_gold[w].mean()) if len(w) else 0.0
        return frac - (0.5 if len(w) < 3 else 0.0)

    def random_response(self, rng: np.random.Generator, max_len: int, eos_id: int) -> np.ndarray:
        """A response whose gold share is itself random, so pairs cover bad to perfect answers."""
        n = int(rng.integers(1, max_len + 1))
        p_gold = rng.random()
        gold_ids = np.flatnonzero(self.is_gold)
        other_ids = np.arange(self.first_word, self.first_word + self.n_words)
        other_ids = other_ids[~self.is_gold[other_ids]]
        pick_gold = rng.random(n) < p_gold
        out = np.where(pick_gold, rng.choice(gold_ids, n), rng.choice(other_ids, n)).astype(np.int32)
        return np.concatenate([out, [eos_id]]).astype(np.int32) if rng.random() < 0.5 else out

    def preference_pairs(self, n: int, max_len: int, eos_id: int, label_noise: float) -> list[dict]:
        """n pairs {prompt, chosen, rejected} (token ids) labelled by the gold rule, with noise."""
        rng = np.random.default_rng([self.seed, 17])
        pairs = []
        while len(pairs) < n:
            prompt = self.prompt(int(rng.integers(0, 1 << 30)), "pairs")
            a = self.random_response(rng, max_len, eos_id)
            b = self.random_response(rng, max_len, eos_id)
            ga, gb = self.gold_reward(a, eos_id), self.gold_reward(b, eos_id)
            if ga == gb:
                continue
            chosen, rejected = (a, b) if ga > gb else (b, a)
            if rng.random() < label_noise:
                chosen, rejected = rejected, chosen
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        return pairs


GOLD_METRIC = "hpc_rlhf.demo.task:gold_reward_metric"


def with_gold_metric(cfg: Any) -> Any:
    """`cfg` with GOLD_METRIC in logging.step_metrics (a new Config; `cfg` itself when it is there)."""
    if GOLD_METRIC in cfg.logging.step_metrics:
        return cfg
    logging = dataclasses.replace(cfg.logging, step_metrics=[*cfg.logging.step_metrics, GOLD_METRIC])
    return dataclasses.replace(cfg, logging=logging)


@lru_cache(maxsize=4)
def _task(seed: int, n_words: int, len_min: int, len_max: int) -> GoldTask:
    return GoldTask(seed, n_words, len_min, len_max)


def task_of(cfg: Any) -> GoldTask:
    """The GoldTask of a run config (task.name=demo)."""
    t = cfg.task
    return _task(cfg.seed, t.vocab_words, t.prompt_len_min, t.prompt_len_max)


class DemoPrompts:
    """The `task.num_prompts` training prompts of the demo, as a sequence: [i] -> int32 token ids."""

    def __init__(self, task: GoldTask, n: int):
        self.task, self.n = task, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        return self.task.prompt(int(i), "train")


def prompt_source(cfg: Any, tok: Any) -> DemoPrompts:
    """The prompt source of task.name=demo (the tokenizer is the demo's word-level one; unused)."""
    return DemoPrompts(task_of(cfg), cfg.task.num_prompts)


def gold_reward_metric(responses: list[np.ndarray], tok: Any, cfg: Any) -> dict[str, float]:
    """The step metric `gen/gold_reward_mean`: the mean gold reward of the step's responses (token
    ids). Nothing for a run of another task."""
    if cfg.task.name != "demo":
        return {}
    task, eos = task_of(cfg), tok.eos_token_id
    return {"gen/gold_reward_mean": float(np.mean([task.gold_reward(r, eos) for r in responses]))}


GOLD_REWARD = "hpc_rlhf.demo.task:gold_reward"


def gold_reward(
    prompts: list[str],
    responses: list[str],
    prompt_ids: list[np.ndarray],
    response_ids: list[np.ndarray],
    labels: list[Any],
    *,
    cfg: Any,
) -> list[float]:
    """The gold rule as a reward function (hpc_rlhf/rewards contract): GoldTask.gold_reward of each
    response's token ids, EOS being the demo tokenizer's `<eos>`. Only for task.name=demo."""
    if cfg.task.name != "demo":
        raise ValueError(f"the gold rule is the demo task's; task.name={cfg.task.name} has no gold words")
    task, eos = task_of(cfg), SPECIALS.index("<eos>")
    return [task.gold_reward(r, eos) for r in response_ids]
