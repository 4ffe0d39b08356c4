"""The rollout shard schema: one versioned declaration, the HDF5 contract and the archive's documentation.

A shard holds N samples. An eval shard (kind 'eval', RUN_DIR/rollouts/evals/) holds the generated fields
plus `reward` and `reward_sources`, written by the generation rank that sampled it. Readers get every field as a flat array: token data are indexed by int64
offsets (no variable-length HDF5 types): sample i's response tokens are
`response_tokens[response_offsets[i]:response_offsets[i+1]]`; per-token float arrays align with
`response_tokens`. docs/rollout_format.md renders this table.

On disk (version 3) the fields live in datasets: `samples`, a table with one row per sample
(the "N" fields), `prompt_tokens`, `response`, a table with one row per response token (the "R"
fields), and in a scored shard `reward_sources`, a table with one row per sample and one float32
column per reward source, named as the source (the "NxS" field, read as an (N, S) array whose
columns follow the metadata key `reward_sources`). The offsets are not stored: they are the running
sums of prompt_len and response_len. The run metadata is one JSON attribute `meta` beside the
integer attribute `schema_version`.

Versions 1 (one dataset per field, one attribute per key) and 2 (version 3 without `group_id` and
`reward_sources`) are still read, and read as version 3 (`DERIVED`): a shard that does not store
`group_id` reads it as prompt_index (the definition of a group), and a scored shard of version 1 or 2
reads `reward_sources` as its reward under the one source `rm`, weight 1 (before version 3
the reward was the reward model's score).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


@dataclass(frozen=True)
class Field:
    name: str
    dtype: str
    shape: str  # "N" per sample, "N+1" offsets, "P" prompt tokens, "R" response tokens, "NxS" per sample and source
    role: str  # producing role: "generate" or "score"
    doc: str
    since: int = 1  # first schema version that stores it


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
    Field("reward", "float32", "N", "score", "the reward: sum of weight * value over the reward sources (unclipped)"),
    Field(
        "group_id",
        "int64",
        "N",
        "score",
        "its group: the samples of one prompt at one step (= prompt_index; in refill round r, r * 2**32 + prompt_index)",
        3,
    ),
    Field(
        "reward_sources", "float32", "NxS", "score", "each reward source's value, unweighted (meta reward_sources)", 3
    ),
)

ATTRS: dict[str, str] = {  # schema_version: an HDF5 attribute; the others: keys of the JSON attribute `meta`
    "schema_version": "int: SCHEMA_VERSION of the writer (an HDF5 attribute of its own, repeated in meta)",
    "kind": "'generated', 'scored' or 'eval' (an evaluation's samples with their reward, roles/evaluator.py)",
    "run_id": "str: id of the run (its config fingerprint + seed)",
    "producer_role": "'generate' or 'score' (an eval shard: 'generate')",
    "eval_shards": "int, eval: the evaluation's shards (eval.shards); `step` is the step after which it ran",
    "producer_rank": "int: MPI rank that wrote it",
    "policy_version": "int: policy version of every sample",
    "step": "int: PPO step of every sample",
    "shard_index": "int: index of the shard within its step",
    "refill_round": "int, only in a refill round's shard (algo.dynamic_sampling): its round r >= 1; shard_index = r * shards_per_step + j",
    "num_samples": "int: N",
    "created_unix": "float: creation time (seconds since epoch)",
    "config_fingerprint": "str: hash of the run's config (resume-safe keys excluded)",
    "reward_sources": "list[str], scored (eval: eval.sources): the reward sources (config reward.sources), the columns of reward_sources",
    "reward_weights": "list[float], scored: their weights; reward = sum over s of weight[s] * reward_sources[:, s]",
}
LEGACY_SOURCE = "rm"  # the one reward source of a scored shard of version 1 or 2
DERIVED = {"group_id": "prompt_index"}  # read from this field when a shard does not store it

GENERATED_FIELDS = tuple(f for f in FIELDS if f.role == "generate")
SCORED_FIELDS = FIELDS
EVAL_FIELDS = GENERATED_FIELDS + tuple(f for f in FIELDS if f.name in ("reward", "reward_sources"))
KINDS = {"generated": GENERATED_FIELDS, "scored": SCORED_FIELDS, "eval": EVAL_FIELDS}  # kind -> its fields
PER_SAMPLE = tuple(f.name for f in FIELDS if f.shape == "N")
BY_NAME = {f.name: f for f in FIELDS}
DATASET_OF_SHAPE = {"N": "samples", "P": "prompt_tokens", "R": "response", "NxS": "reward_sources"}  # "N+1": derived
DATASETS = tuple(DATASET_OF_SHAPE.values())


def dataset_of(name: str) -> str:
    """The dataset (versions 2 and 3) holding field `name` ('' for the offsets, derived from the lengths)."""
    return DATASET_OF_SHAPE.get(BY_NAME[name].shape, "")


def fields_for(kind: str, version: int = SCHEMA_VERSION) -> tuple[Field, ...]:
    """Fields a shard of this kind ('generated', 'scored' or 'eval') and schema version holds."""
    return tuple(f for f in KINDS[kind] if f.since <= version)


def markdown_table() -> str:
    rows = ["| field | dtype | shape | stored in | written by | since | meaning |", "|---|---|---|---|---|---|---|"]
    for f in FIELDS:
        where = f"`{dataset_of(f.name)}`" if dataset_of(f.name) else "derived from the lengths"
        rows.append(f"| `{f.name}` | {f.dtype} | {f.shape} | {where} | {f.role} | {f.since} | {f.doc} |")
    rows += ["", "| metadata key | meaning |", "|---|---|"]
    rows += [f"| `{k}` | {v} |" for k, v in ATTRS.items()]
    return "\n".join(rows)
