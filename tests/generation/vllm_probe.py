"""What the vLLM engine guarantees, measured in one engine start (run by the vLLM venv's python):

    python tests/generation/vllm_probe.py WORK_DIR OUT.json [key=value ...]

Builds the demo's tokenizer and the tiny policy of configs/tiny.yaml, publishes three policy versions
(weights/publish.py: the initial one, then two perturbed; with model.lora.r > 0 the policy carries
adapters, only they are perturbed and published, and the engine serves them merged), and for each version loads it in place and
samples a fixed probe (16 prompts, the plan's kind of seeds). Writes JSON with, per version: the largest
|engine log-prob - training forward log-prob| over the probe's tokens, whether the tokens changed from
the previous version; and: the same tokens when the probe is sampled again, when it is sampled as two
halves (another batch), in reverse order, and by a fresh engine started on the last version.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from hpc_rlhf.config import load_config  # noqa: E402
from hpc_rlhf.demo.task import build_tokenizer  # noqa: E402
from hpc_rlhf.generation.vllm_engine import VLLMEngine  # noqa: E402
from hpc_rlhf.models import lora  # noqa: E402
from hpc_rlhf.models.build import build_policy  # noqa: E402
from hpc_rlhf.models.forward import make_batch, response_logprobs  # noqa: E402
from hpc_rlhf.models.generate import banned_tokens  # noqa: E402
from hpc_rlhf.weights.publish import cpu_state, publish  # noqa: E402


def train_logprobs(policy, tok, prompts, out, temperature):
    banned = banned_tokens(tok.pad_token_id, tok.eos_token_id, True)
    batch = make_batch(prompts, out.responses, tok.pad_token_id)
    with torch.no_grad():
        lp, _ = response_logprobs(policy, batch, temperature, banned)
    return [lp[i, : len(r)].numpy() for i, r in enumerate(out.responses)]


def same(a, b) -> bool:
    return len(a.responses) == len(b.responses) and all(np.array_equal(x, y) for x, y in zip(a.responses, b.responses))


def main(work: str, out_path: str, overrides: list[str]) -> None:
    cfg = load_config(os.path.join(REPO, "configs", "tiny.yaml"), [f"run_dir={work}", *overrides])
    tok = build_tokenizer(cfg.task.vocab_words, os.path.join(work, "tokenizer"))
    policy = build_policy(cfg, tok)
    policy = lora.apply(policy, cfg) if lora.enabled(cfg) else policy  # the trainer's LoRA policy
    step = 0.5 if lora.enabled(cfg) else 0.05  # adapters (B starts at zero) need a larger step to change tokens
    rng = np.random.default_rng(0)
    prompts = [rng.integers(5, len(tok), size=int(rng.integers(3, 9))).astype(np.int32) for _ in range(16)]
    seeds = [int(s) for s in rng.integers(0, 2**62, size=16)]
    t0 = time.perf_counter()
    engine = VLLMEngine(cfg, work, 0, tok)
    report = {"engine_start_s": time.perf_counter() - t0, "versions": []}
    prev = None
    for v in range(3):
        if v:
            with torch.no_grad():
                for p in lora.trainable(policy):
                    p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(v)) * step)
        path = publish(work, v, cpu_state(policy))
        t = time.perf_counter()
        engine.load_file(v, path)
        reload_s = time.perf_counter() - t
        t = time.perf_counter()
        out = engine.sample(prompts, seeds)
        sample_s = time.perf_counter() - t
        ref = train_logprobs(policy, tok, prompts, out, cfg.generate.temperature)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(out.logprobs, ref) if len(a))
        report["versions"].append(
            {
                "version": v,
                "reload_s": reload_s,
                "sample_s": sample_s,
                "max_abs_logprob_diff": diff,
                "tokens_changed": prev is None or not same(prev, out),
                "n_tokens": int(sum(len(r) for r in out.responses)),
                "eos": int(out.eos.sum()),
                "pad_sampled": any(int(tok.pad_token_id) in r.tolist() for r in out.responses),
            }
        )
        prev = out
    again = engine.sample(prompts, seeds)
    h = len(prompts) // 2
    a, b = engine.sample(prompts[:h], seeds[:h]), engine.sample(prompts[h:], seeds[h:])
    rev = engine.sample(prompts[::-1], seeds[::-1])
    rev.responses.reverse()
    report["same_when_repeated"] = same(prev, again)
    report["same_in_halves"] = all(np.array_equal(x, y) for x, y in zip(prev.responses, a.responses + b.responses))
    report["same_reversed"] = same(prev, rev)
    del engine
    fresh = VLLMEngine(cfg, work, 1, tok)
    fresh.load_file(2, os.path.join(work, "weights", "policy_v000002.safetensors"))
    report["same_in_fresh_engine"] = same(prev, fresh.sample(prompts, seeds))
    with open(out_path, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
