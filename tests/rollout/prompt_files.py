"""Prompt files and a chat-template tokenizer for the dataset runs of the tests (rollout, layouts, kill/resume).

    tok_dir = chat_tokenizer(tmp / "tok")               # the tiny config's word tokenizer + a chat template
    path = prompt_file(tmp / "p.jsonl")                 # 64 text prompts + 4 too long; or .parquet: messages
    overrides = dataset_overrides(path, tok_dir)        # task.name=dataset with the chat template, 8-token limit

The words are the tiny config's (vocab_words=32), so the tiny reward model (same vocabulary) scores them and
the tokenizer equals that model's: nothing is re-encoded. The template renders each turn as `<bos> content`
and the generation prompt as a last `<bos>`.
"""

from __future__ import annotations

import json
import os

import numpy as np

from hpc_rlhf.demo.task import build_tokenizer, words

TEMPLATE = "{% for m in messages %}<bos> {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}<bos>{% endif %}"
N_KEPT, N_LONG, MAX_TOKENS = 64, 4, 8


def chat_tokenizer(out_dir, n_words: int = 32) -> str:
    tok = build_tokenizer(n_words, str(out_dir))
    tok.chat_template = TEMPLATE
    tok.save_pretrained(str(out_dir))
    return str(out_dir)


def prompt_rows(seed: int = 5) -> list[dict]:
    """N_KEPT prompts of 3..6 words (2 + n tokens with the template) and N_LONG of 9 words, answers as labels."""
    w, rng = words(32), np.random.default_rng(seed)
    rows = []
    for i in range(N_KEPT + N_LONG):
        n = 9 if i % 17 == 16 else int(rng.integers(3, 7))
        text = " ".join(w[int(j)] for j in rng.integers(0, 32, size=n))
        rows.append({"prompt": text, "answer": w[i % 32]})
    return rows


def prompt_file(path) -> str:
    """JSONL: a `prompt` text column; Parquet: a `messages` column (one user turn per row). Both with `answer`."""
    path, rows = str(path), prompt_rows()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if path.endswith(".jsonl"):
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    msgs = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    pq.write_table(pa.table({"messages": msgs, "answer": [r["answer"] for r in rows]}), path)
    return path


def dataset_overrides(path: str, tok_dir: str) -> list[str]:
    column = "prompt" if path.endswith(".jsonl") else "messages"
    return [
        "task.name=dataset",
        f"task.prompts_path={path}",
        f"task.prompt_column={column}",
        "task.label_column=answer",
        "task.chat_template=true",
        f"task.max_prompt_tokens={MAX_TOKENS}",
        f"model.tokenizer_path={tok_dir}",
        "logging.step_metrics=[]",  # the gold-reward metric is the demo task's
    ]
