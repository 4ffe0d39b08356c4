"""TRL's PPOTrainer on the benchmark workload (runs in the TRL environment, not this project's).

    .venv-trl/bin/python tools/bench/trl_ppo.py --workload W.json [--no-gc] [--threads 2]

W.json (written by tools/bench/compare_trl.py) holds the tokenizer folder, the prompts (token ids)
and the model/PPO sizes. Four randomly initialised Llama-style models in fp32 (policy, a frozen copy
as reference, value and reward as 1-label sequence classifiers, the value backbone copied from the
policy as ours with model.value_init=policy), trl 1.12.0 `trl.experimental.ppo.PPOTrainer`
(the last release with PPO). Its PPOConfig defaults to bf16 and gradient checkpointing: both are
set off for an fp32 CPU run. Batch sizes: per_device_train_batch_size=16 (the step batch),
gradient_accumulation_steps=1, num_mini_batches=16/minibatch, so every optimizer step sees one
minibatch, like ours. Generation: 32 new tokens, no stop token (TRL then never stops early),
temperature 1.0, one generate() call for the 16 prompts.

--no-gc replaces gc.collect by a no-op for the run (TRL calls it twice per step), so a comparison
is not just garbage-collection overhead. In both modes the seconds spent in gc.collect are recorded.

Prints one JSON line: per-step wall seconds (on_step_end to on_step_end), gc seconds per step, thread
count, versions.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import sys
import tempfile
import time
import warnings


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True)
    ap.add_argument("--no-gc", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with open(args.workload) as f:
        w = json.load(f)

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers
    import trl
    from datasets import Dataset
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )

    transformers.logging.set_verbosity_error()
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    gc_time = {"s": 0.0, "n": 0}
    real_collect = gc.collect

    def timed_collect(*a, **k):
        t0 = time.perf_counter()
        r = 0 if args.no_gc else real_collect(*a, **k)
        gc_time["s"] += time.perf_counter() - t0
        gc_time["n"] += 1
        return r

    tok = AutoTokenizer.from_pretrained(w["tokenizer"], local_files_only=True)
    tok.padding_side = "left"
    a = w["arch"]
    conf = AutoConfig.for_model(
        "llama",
        vocab_size=len(tok),
        hidden_size=a["hidden_size"],
        intermediate_size=a["intermediate_size"],
        num_hidden_layers=a["num_layers"],
        num_attention_heads=a["num_heads"],
        num_key_value_heads=a["num_heads"],
        max_position_embeddings=a["max_position"],
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=False,
        attention_dropout=0.0,
    )
    torch.manual_seed(w["seed"])
    policy = AutoModelForCausalLM.from_config(conf).float()
    ref = AutoModelForCausalLM.from_config(conf).float()
    ref.load_state_dict(policy.state_dict())
    cconf = copy.deepcopy(conf)
    cconf.num_labels = 1
    value = AutoModelForSequenceClassification.from_config(cconf).float()
    value.model.load_state_dict(policy.model.state_dict())
    reward = AutoModelForSequenceClassification.from_config(cconf).float()

    prompts = w["prompts"]
    train = Dataset.from_dict({"input_ids": prompts})
    ev = Dataset.from_dict({"input_ids": prompts[:16]})
    b, mb = w["prompts_per_step"], w["minibatch_size"]
    steps = w["steps"]
    out_dir = tempfile.mkdtemp(prefix="trl_ppo_")
    cfg = PPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=b,
        gradient_accumulation_steps=1,
        num_mini_batches=b // mb,
        num_ppo_epochs=w["epochs"],
        total_episodes=b * steps,
        response_length=w["max_new_tokens"],
        temperature=1.0,
        learning_rate=3e-4,
        lr_scheduler_type="constant",
        kl_coef=0.05,
        local_rollout_forward_batch_size=max(64, b),
        num_sample_generations=0,
        stop_token=None,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=w["seed"],
        dataloader_num_workers=0,
    )

    marks: list[float] = []
    gc_marks: list[float] = []

    class Timer(TrainerCallback):
        def on_train_begin(self, *a, **k):
            marks.append(time.perf_counter())
            gc_marks.append(gc_time["s"])

        def on_step_end(self, *a, **k):
            # TRL runs gc.collect right after on_step_end: record the gc time of the previous step here
            marks.append(time.perf_counter())
            gc_marks.append(gc_time["s"])

    trainer = PPOTrainer(
        args=cfg,
        processing_class=tok,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        train_dataset=train,
        value_model=value,
        eval_dataset=ev,
        callbacks=[Timer()],
    )
    gc.collect = timed_collect
    try:
        trainer.train()
    finally:
        gc.collect = real_collect
    step_s = [marks[i + 1] - marks[i] for i in range(len(marks) - 1)]
    gc_s = [gc_marks[i + 1] - gc_marks[i] for i in range(len(gc_marks) - 1)]
    print(
        json.dumps(
            {
                "side": "trl-nogc" if args.no_gc else "trl",
                "step_s": step_s,
                "gc_s_per_step": gc_s,
                "gc_calls": gc_time["n"],
                "threads": torch.get_num_threads(),
                "trl": trl.__version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": sys.version.split()[0],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
