"""The rollout shard schema: one versioned declaration, the HDF5 contract and the archive's documentation.

A shard holds N samples. Token data are flat arrays indexed by int64 offsets (no variable-length HDF5
types): sample i's response tokens are `response_tokens[response_offsets[i]:response_offsets[i+1]]`.
Per-token float arrays are aligned with `response_tokens`. docs/rollout_format.md renders this table.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Field:
    name: str
    dtype: str
    shape: str  # "N" per sample, "N+1" offsets, "P" prompt tokens, "R" response tokens
    role: str  # producing role: "generate" or "score"
    doc: str


FIELDS: tuple[Field, ...] = (
    Field("prompt_index", "int64", "N", "generate", "global prompt index in the run's prompt set"),
    Field("sample_index", "int32", "N", "generate", "index of this sample among the prompt's samples"),
    Field("policy_version", "int64", "N", "generate", "policy version that sampled it (= optimizer steps done)"),
    Field("step", "int64", "N", "generate", "PPO step that trains on it"),
    Field("seed", "int64", "N", "generate", "sampling seed, from (run seed, policy version, prompt, sample)"),
    Field("prompt_len", "int32", "N", "generate", "prompt tokens"),
    Field("response_len", "int32", "N", "generate", "response tokens (EOS included when emitted)"),
    Field("eos", "uint8", "N", "generate", "1 if the response ended with EOS"),
    Field("prompt_offsets", "int64", "N+1", "generate", "offsets into prompt_tokens"),
    Field("response_offsets", "int64", "N+1", "generate", "offsets into response_tokens and per-token arrays"),
    Field("prompt_tokens", "int32", "P", "generate", "prompt token ids, flat"),
    Field("response_tokens", "int32", "R", "generate", "response token ids, flat"),
    Field("gen_logprobs", "float32", "R", "generate", "log-probs of the response under the sampling policy"),
    Field("ref_logprobs", "float32", "R", "score", "log-probs of the response under the reference"),
    Field("reward", "float32", "N", "score", "reward-model score of prompt+response (unclipped)"),
)

ATTRS: dict[str, str] = {
    "schema_version": "int: SCHEMA_VERSION of the writer",
    "kind": "'generated' or 'scored'",
    "run_id": "str: id of the run (its config fingerprint + seed)",
    "producer_role": "'generate' or 'score'",
    "producer_rank": "int: MPI rank that wrote it",
    "policy_version": "int: policy version of every sample",
    "step": "int: PPO step of every sample",
    "shard_index": "int: index of the shard within its step",
    "num_samples": "int: N",
    "created_unix": "float: creation time (seconds since epoch)",
    "config_fingerprint": "str: hash of the run's config (resume-safe keys excluded)",
}

GENERATED_FIELDS = tuple(f for f in FIELDS if f.role == "generate")
SCORED_FIELDS = FIELDS
PER_SAMPLE = tuple(f.name for f in FIELDS if f.shape == "N")
BY_NAME = {f.name: f for f in FIELDS}


def fields_for(kind: str) -> tuple[Field, ...]:
    """Fields a shard of this kind ('generated' or 'scored') must hold."""
    return GENERATED_FIELDS if kind == "generated" else SCORED_FIELDS


def markdown_table() -> str:
    rows = ["| field | dtype | shape | written by | meaning |", "|---|---|---|---|---|"]
    rows += [f"| `{f.name}` | {f.dtype} | {f.shape} | {f.role} | {f.doc} |" for f in FIELDS]
    rows += ["", "| attribute | meaning |", "|---|---|"]
    rows += [f"| `{k}` | {v} |" for k, v in ATTRS.items()]
    return "\n".join(rows)
