"""TRL's GRPOTrainer on the GRPO benchmark workload (runs in the TRL environment, not this project's).

    .venv-trl/bin/python tools/bench/trl_grpo.py --workload W.json [--threads 2]

W.json (written by tools/bench/compare_trl_grpo.py) holds the tokenizer folder, the prompts (token
ids), the gold words of the reward rule and the sizes. One randomly initialised Llama-style policy in
fp32, saved to a folder that TRL loads it from, and (the KL term needs it) the reference TRL loads
from the same folder; no value model, no reward model: the
reward is a FUNCTION, the demo's gold rule (share of gold words among the completion's words, -0.5
under 3 words; hpc_rlhf/demo/task.py) computed from the completion's token ids, as on our side.
trl 1.12.0 `trl.GRPOTrainer`; GRPOConfig's bf16 and gradient checkpointing set off (fp32 CPU run).

Batching, so that one of TRL's generation rounds is one of our steps: num_generations = G,
per_device_train_batch_size = the minibatch (completions), gradient_accumulation_steps = 1,
steps_per_generation = samples per step / minibatch (generation_batch_size = samples per step: one
generate() call for all of them), num_iterations = our epochs. Every optimizer step sees one minibatch,
like ours. loss_type `dapo` (TRL's default: token sum / the active tokens of the generation batch per
minibatch; with every completion of the same length this is our `token_mean`), scale_rewards `group`,
beta (k3 KL as a loss term) and epsilon (clip) as given, temperature 1.0, EOS and pad suppressed so
every completion has exactly max_new_tokens tokens (ours: generate.stop_at_eos=false).

Prints one JSON line: per-RL-step wall seconds (the on_step_end marks of the last optimizer step of
each generation round, the first from on_train_begin); per round, the seconds of `_generate` (sampling,
decoding) and of `_generate_and_score_completions` (that + old and reference log-probs + the reward
function + advantages), timed around the trainer's own methods; thread count, versions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True)
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
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    transformers.logging.set_verbosity_error()
    from trl import GRPOConfig, GRPOTrainer

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
    work = tempfile.mkdtemp(prefix="trl_grpo_")
    policy_dir = os.path.join(work, "policy")  # TRL builds the reference from the policy's folder
    AutoModelForCausalLM.from_config(conf).float().save_pretrained(policy_dir)

    gold = set(w["gold_ids"])
    first_word, eos = w["first_word"], tok.eos_token_id

    def gold_rule(prompts, completions, completion_ids, **kwargs):
        """The demo's gold rule on token ids (hpc_rlhf/demo/task.py GoldTask.gold_reward)."""
        out = []
        for ids in completion_ids:
            words = [t for t in ids if t != eos and t >= first_word]
            frac = sum(t in gold for t in words) / len(words) if words else 0.0
            out.append(frac - (0.5 if len(words) < 3 else 0.0))
        return out

    prompts = [tok.decode(p) for p in w["prompts"]]
    assert tok(prompts[0])["input_ids"] == w["prompts"][0], "the prompt text does not give back its token ids"
    train = Dataset.from_dict({"prompt": prompts})
    n, mb, g = w["samples_per_step"], w["minibatch_size"], w["samples_per_prompt"]
    per_round = (n // mb) * w["epochs"]  # optimizer steps per generation round = per RL step
    steps = w["steps"]
    cfg = GRPOConfig(
        output_dir=os.path.join(work, "out"),
        model_init_kwargs={"dtype": "float32"},
        per_device_train_batch_size=mb,
        gradient_accumulation_steps=1,
        steps_per_generation=n // mb,
        num_generations=g,
        num_iterations=w["epochs"],
        max_steps=steps * per_round,
        max_completion_length=w["max_new_tokens"],
        temperature=1.0,
        generation_kwargs={"suppress_tokens": [tok.eos_token_id, tok.pad_token_id]},
        learning_rate=w["lr"],
        lr_scheduler_type="constant",
        beta=w["kl_coef"],
        epsilon=w["clip"],
        loss_type="dapo",
        scale_rewards="group",
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

    class Timer(TrainerCallback):
        def on_train_begin(self, *a, **k):
            marks.append(time.perf_counter())

        def on_step_end(self, args_, state, *a, **k):
            if state.global_step % per_round == 0:  # the last optimizer step of a generation round
                marks.append(time.perf_counter())

    trainer = GRPOTrainer(
        model=policy_dir,
        reward_funcs=gold_rule,
        args=cfg,
        train_dataset=train,
        processing_class=tok,
        callbacks=[Timer()],
    )
    spent: dict[str, list[float]] = {"generate_s": [], "generate_and_score_s": []}

    def timed(name, fn):  # the seconds of each call of a trainer method (no change to what it does)
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name].append(time.perf_counter() - t0)

        return wrapper

    trainer._generate = timed("generate_s", trainer._generate)
    trainer._generate_and_score_completions = timed("generate_and_score_s", trainer._generate_and_score_completions)
    trainer.train()
    step_s = [marks[i + 1] - marks[i] for i in range(len(marks) - 1)]
    print(
        json.dumps(
            {
                "side": "trl",
                "step_s": step_s,
                "optimizer_steps": trainer.state.global_step,
                **spent,
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
