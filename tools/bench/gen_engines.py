"""Tokens/s of the generation engines on one model folder: native, vLLM and Hugging Face `generate`.

    .venv-vllm/bin/python tools/bench/gen_engines.py --sizes 4m 160m --rounds 3 --out /tmp/gen_engines.json

Per size: a randomly initialised Llama folder (fp32), 64 prompts of 16 random tokens, 128 new tokens per
prompt, temperature 1, one seed per prompt; `fixed`: EOS never sampled, every response 128 tokens;
`ragged`: the EOS row of the output layer is tilted towards the model's mean hidden state until about
one token in 64 is EOS, so responses end at different lengths. vLLM is warmed up by one call, then
the engines run one after the other in every round (alternated, so load on the machine hits all);
tokens/s = generated tokens / seconds, the median over rounds. Prints one JSON line per (size, mode)
and writes them all to --out. Runs in the vLLM venv (.ci/vllm_env.sh); on a GPU with `vllm` installed
the same script measures the GPU engines (tools/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

SIZES = {  # name: (hidden, layers, heads, intermediate, vocab)
    "4m": (256, 4, 4, 688, 1024),
    "160m": (768, 14, 12, 3072, 32000),
}
PROMPTS, PROMPT_LEN, NEW_TOKENS, PAD, EOS = 64, 16, 128, 0, 2


def build_folder(size: str, out: str, ragged: bool) -> str:
    """A Llama folder of `size` (seeded init); ragged: EOS tilted to about 1/64 per token."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    h, n, heads, inter, vocab = SIZES[size]
    conf = LlamaConfig(
        hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=heads,
        intermediate_size=inter, vocab_size=vocab, max_position_embeddings=512, pad_token_id=PAD,
        eos_token_id=EOS, bos_token_id=1, tie_word_embeddings=False, architectures=["LlamaForCausalLM"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(conf).eval()
    if ragged:
        _tilt_eos(model, prompts(vocab), 1 / 64)
    model.save_pretrained(out, safe_serialization=True)
    return out


@torch.no_grad()
def _tilt_eos(model, prompt_ids: list[np.ndarray], target: float) -> None:
    """W[eos] += a * u (u: the mean last hidden state, unit length), a found by bisection so that the mean
    EOS probability at the prompts' last positions is about `target`."""
    ids = torch.as_tensor(np.stack(prompt_ids), dtype=torch.long)
    hid = model.model(input_ids=ids).last_hidden_state  # (B, P, H)
    u = hid.mean(dim=(0, 1))
    u = u / u.norm()
    w0 = model.lm_head.weight[EOS].clone()
    lo, hi = 0.0, 1000.0
    for _ in range(30):
        a = (lo + hi) / 2
        model.lm_head.weight[EOS] = w0 + a * u
        p = torch.softmax(model.lm_head(hid), -1)[..., EOS].mean().item()
        lo, hi = (a, hi) if p < target else (lo, a)


def prompts(vocab: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(3, vocab, size=PROMPT_LEN).astype(np.int32) for _ in range(PROMPTS)]


SEEDS = list(range(1000, 1000 + PROMPTS))


def native_runner(folder: str, ragged: bool):
    from transformers import AutoModelForCausalLM

    from hpc_rlhf.models.generate import SamplingParams, sample

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    params = SamplingParams(NEW_TOKENS, 1.0, 0, 1.0, stop_at_eos=ragged)
    vocab = model.config.vocab_size

    def run() -> int:
        out = sample(model, prompts(vocab), SEEDS, params, EOS, PAD)
        return sum(len(r) for r in out.responses)

    return run


def hf_runner(folder: str, ragged: bool):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.as_tensor(np.stack(prompts(model.config.vocab_size)), dtype=torch.long)
    kw = {"eos_token_id": EOS} if ragged else {"eos_token_id": None, "min_new_tokens": NEW_TOKENS}

    def run() -> int:
        torch.manual_seed(0)
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, max_new_tokens=NEW_TOKENS,
            pad_token_id=PAD, **kw,
        )  # fmt: skip
        new = out[:, ids.shape[1] :]
        if not ragged:
            return int(new.numel())
        ended = (new == EOS).int().cumsum(-1)  # tokens up to and including the first EOS
        return int(((ended == 0) | ((ended == 1) & (new == EOS))).sum())

    return run


def vllm_runner(folder: str, ragged: bool):
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    gpu = torch.cuda.is_available()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    mem = 0.5 if gpu else 0.05  # the CPU engine: the share of host memory that must be free at start
    llm = LLM(
        model=folder, skip_tokenizer_init=True, dtype="float32", seed=0, enforce_eager=not gpu,
        gpu_memory_utilization=mem,
    )  # fmt: skip
    vocab = llm.llm_engine.model_config.hf_config.vocab_size
    reqs = [TokensPrompt(prompt_token_ids=p.tolist()) for p in prompts(vocab)]

    def params(seed: int):
        stop = {"stop_token_ids": [EOS]} if ragged else {}
        return SamplingParams(
            seed=seed, temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True, detokenize=False, logprobs=0, **stop
        )

    def run() -> int:
        outs = llm.generate(reqs, [params(s) for s in SEEDS], use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs)

    return run


def bench(size: str, ragged: bool, rounds: int, engines: list[str]) -> dict:
    makers = {"native": native_runner, "vllm": vllm_runner, "hf": hf_runner}
    with tempfile.TemporaryDirectory() as d:
        folder = build_folder(size, d, ragged)
        runners = {e: makers[e](folder, ragged) for e in engines}
        if "vllm" in runners:
            runners["vllm"]()  # warm-up: vLLM's first call is the slow one
        rates: dict[str, list[float]] = {e: [] for e in engines}
        tokens: dict[str, int] = {}
        for _ in range(rounds):
            for e, r in runners.items():
                t = time.perf_counter()
                tokens[e] = r()
                rates[e].append(tokens[e] / (time.perf_counter() - t))
    med = {e: statistics.median(v) for e, v in rates.items()}
    row = {"size": size, "mode": "ragged" if ragged else "fixed", "rounds": rounds, "device": _device()}
    row.update({f"{e}_tok_s": round(med[e], 1) for e in engines})
    row.update({f"{e}_tokens": tokens[e] for e in engines})
    if "native" in med:
        row.update({f"{e}_over_native": round(med[e] / med["native"], 2) for e in engines if e != "native"})
    return row


def _device() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["4m", "160m"], choices=sorted(SIZES))
    ap.add_argument("--modes", nargs="+", default=["fixed", "ragged"], choices=["fixed", "ragged"])
    ap.add_argument("--engines", nargs="+", default=["native", "vllm", "hf"], choices=["native", "vllm", "hf"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        for mode in args.modes:
            rows.append(bench(size, mode == "ragged", args.rounds, args.engines))
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
