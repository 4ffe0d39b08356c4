"""Small data files for the stage tests, in the tiny config's demo vocabulary (words the demo tokenizer knows).

tok_dir = demo_tokenizer(tmp_path, chat=True)        # the demo tokenizer, with a chat template when asked
sft_jsonl(tmp_path / "sft.jsonl", n=24)               # {"prompt", "response"} rows: answer = the prompt reversed
pairs_jsonl(tmp_path / "pairs.jsonl", n=64)           # {"prompt", "chosen", "rejected"} rows: gold words win
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import GoldTask, build_tokenizer, words
from tests.conftest import TINY

# A template whose turns render word by word (the demo tokenizer splits on whitespace): roles become [UNK].
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def vocab() -> list[str]:
    return words(load_config(TINY).task.vocab_words)


def demo_tokenizer(folder: Path, chat: bool = False) -> str:
    """The tiny config's demo tokenizer saved in `folder`/tok (with CHAT_TEMPLATE when chat)."""
    out = folder / ("tok_chat" if chat else "tok")
    build_tokenizer(load_config(TINY).task.vocab_words, str(out))
    if chat:
        cfg_path = out / "tokenizer_config.json"
        conf = json.loads(cfg_path.read_text())
        conf["chat_template"] = CHAT_TEMPLATE
        cfg_path.write_text(json.dumps(conf))
    return str(out)


def sft_rows(n: int, seed: int = 0) -> list[dict]:
    rng, v = random.Random(seed), vocab()
    rows = []
    for _ in range(n):
        p = rng.choices(v, k=rng.randint(2, 5))
        rows.append({"prompt": " ".join(p), "response": " ".join(reversed(p))})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def sft_jsonl(path: Path, n: int = 24) -> str:
    return write_jsonl(path, sft_rows(n))


def pair_rows(n: int, seed: int = 0) -> list[dict]:
    cfg = load_config(TINY)
    task = GoldTask(0, cfg.task.vocab_words, 3, 6)
    v = vocab()
    gold = [w for i, w in enumerate(v) if task.is_gold[i + task.first_word]]
    bad = [w for i, w in enumerate(v) if not task.is_gold[i + task.first_word]]
    rng = random.Random(seed)
    return [
        {
            "prompt": " ".join(rng.choices(v, k=4)),
            "chosen": " ".join(rng.choices(gold, k=5)),
            "rejected": " ".join(rng.choices(bad, k=5)),
        }
        for _ in range(n)
    ]


def pairs_jsonl(path: Path, n: int = 64) -> str:
    return write_jsonl(path, pair_rows(n))
