"""How long a rank takes to get its prompt set at start: rendering the prompt file (what every rank did, and what
`prepare` still does once) against reading RUN_DIR/prompts.h5 (what every rank does now).

    python tools/bench/prompt_table.py                      # 100000 rows, Parquet and JSONL, with and without chat
    python tools/bench/prompt_table.py --rows 20000 --words 200

Writes, in a temporary folder, a prompt file of ROWS prompts of 20..WORDS made-up words (Parquet: a `messages`
column of one user turn; JSONL: a `prompt` text column), trains a byte-level BPE tokenizer of 8192 tokens on
them with a ChatML-like chat template, then, per case, in this process: times `PromptSet(cfg, tok)`
(task.name=dataset: open, check every row, render, tokenize: `render_s`), writing RUN_DIR/prompts.h5
(`write_s`, prepare's extra cost) and `PromptSet(cfg, tok, run_dir)` (read it: `read_s`, a rank's cost now).
Prints one JSON line per case: those seconds, prompts, tokens per prompt, the file's MiB, and this process's
peak RSS so far (ru_maxrss, MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _files(d: str, rows: int, max_words: int) -> tuple[str, str, list[str]]:
    from hpc_rlhf.demo.task import words

    vocab, rng = words(400), np.random.default_rng(0)
    texts = [
        " ".join(vocab[j] for j in rng.integers(0, 400, int(rng.integers(20, max_words + 1)))) for _ in range(rows)
    ]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"messages": [[{"role": "user", "content": t}] for t in texts]}), f"{d}/p.parquet")
    with open(f"{d}/p.jsonl", "w") as f:
        f.writelines(json.dumps({"prompt": t}) + "\n" for t in texts)
    return f"{d}/p.parquet", f"{d}/p.jsonl", texts


def _tokenizer(d: str, texts: list[str]) -> str:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts[:20000], vocab_size=8192, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = TEMPLATE
    tok.save_pretrained(f"{d}/tok")
    return f"{d}/tok"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--words", type=int, default=60, help="longest prompt, in words (shortest: 20)")
    args = ap.parse_args()
    from hpc_rlhf.config import load_config
    from hpc_rlhf.models.build import load_tokenizer
    from hpc_rlhf.rollout.prompt_file import write_prompts
    from hpc_rlhf.rollout.prompts import PromptSet
    from hpc_rlhf.rundir import RunDir

    with tempfile.TemporaryDirectory() as d:
        parquet, jsonl, texts = _files(d, args.rows, args.words)
        tok_dir = _tokenizer(d, texts)
        for path, column, chat in ((parquet, "messages", True), (jsonl, "prompt", True), (jsonl, "prompt", False)):
            over = [f"task.prompts_path={path}", f"task.prompt_column={column}", f"task.chat_template={chat}"]
            cfg = load_config(None, ["task.name=dataset", *over, f"model.tokenizer_path={tok_dir}"])
            tok = load_tokenizer(cfg)
            t0 = time.perf_counter()
            ps = PromptSet(cfg, tok)
            t1 = time.perf_counter()
            run_dir = f"{d}/run"
            os.makedirs(run_dir, exist_ok=True)
            write_prompts(run_dir, cfg, ps.flat())
            t2 = time.perf_counter()
            again = PromptSet(cfg, tok, run_dir)
            t3 = time.perf_counter()
            assert again.sha256 == ps.sha256 and len(again) == len(ps)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            mean = float(np.mean([len(ps[i]) for i in range(len(ps))]))
            fmt = os.path.splitext(path)[1][1:]
            mib = os.path.getsize(RunDir(run_dir).prompts) / 2**20
            print(json.dumps({"format": fmt, "chat_template": chat, "prompts": len(ps), "tokens_per_prompt": round(mean, 1),
                              "render_s": round(t1 - t0, 2), "write_s": round(t2 - t1, 2), "read_s": round(t3 - t2, 3),
                              "file_mib": round(mib, 1), "peak_rss_mib": round(rss)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
