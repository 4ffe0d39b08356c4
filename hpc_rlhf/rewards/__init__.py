"""Rewards as configured sources: the reward model and/or functions, summed with weights (`reward.sources`).

    sources = RewardSources(cfg)                 # on a scoring rank; functions load here (checked at config load)
    batch = reward_batch(tok, prompt_ids, response_ids, labels, prompt_index, sample_index, "step 3 shard 1")
    reward, per_source = sources.compute(model_scores, batch)   # (N,) and (N, S) float32

Config (hpc_rlhf/config/schema.py `RewardConfig`):

    reward:
      sources:
        - {name: rm, kind: model, weight: 1.0}                     # scores with model.reward_path
        - {name: correct, kind: function, function: "hpc_rlhf.rewards.builtin:exact_match", weight: 0.5}

reward = sum over the sources of weight * value, each value kept per sample in the shards
(`reward_sources`, docs/rollout_format.md) and in the archive (`reward/NAME`). With the default, the
reward model alone at weight 1.0, the reward is its score as it is (no arithmetic on it). When no
source is a model the scoring ranks load no reward model.

The reward-function contract. A `kind: function` source names `package.module:function`, called once
per shard on the scoring rank that scores it:

    fn(prompts: list[str], responses: list[str],
       prompt_ids: list[np.ndarray], response_ids: list[np.ndarray],
       labels: list[str | None]) -> Sequence[float]       # one finite number per response, in order

- `prompts`/`responses`: the token ids decoded with the run's tokenizer, special tokens skipped (so
  no EOS); `prompt_ids`/`response_ids`: int32 token ids, a response's EOS included when emitted;
- `labels`: each prompt's `label` from the prompt source (`task.name=jsonl`: the optional "label" key
  of its line; `task.name=dataset`: the `task.label_column` of its row), None where it has none (the demo
  task has none);
- a function that declares a keyword argument `cfg` also gets the run's Config (e.g. the demo's gold
  rule, `hpc_rlhf.demo.task:gold_reward`, reads its task from it).

A function whose module does not import or whose signature does not take these arguments is a
ConfigError at config load, before any job is queued. One that raises, returns the wrong number of
values, a non-number, NaN or inf fails the job with one line naming the function and the sample
(prompt index, sample index): nothing is ever zeroed or skipped. Ready to use or copy:
`hpc_rlhf.rewards.builtin:exact_match` (the answer against the label) and the demo's gold rule.
"""

from hpc_rlhf.rewards.sources import RewardBatch, RewardFunctionError, RewardSources, combine, reward_batch

__all__ = ["RewardBatch", "RewardFunctionError", "RewardSources", "combine", "reward_batch"]
