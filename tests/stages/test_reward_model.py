"""The reward-model stage: Bradley-Terry training reaches held-out accuracy well above chance,
from synthesised pairs and from a JSONL file."""

import json

from transformers import AutoModelForSequenceClassification

from hpc_rlhf.config import load_config
from hpc_rlhf.stages.reward_model import train_reward_model
from tests.conftest import TINY


def test_rm_learns_gold_preferences(tmp_path):
    cfg = load_config(TINY, [f"run_dir={tmp_path}", "rm.num_pairs=1024", "rm.epochs=3", "rm.label_noise=0.0"])
    rep = train_reward_model(cfg)
    assert rep["rm_pairwise_accuracy_initial"] < 0.65
    assert rep["rm_pairwise_accuracy"] > 0.8, rep
    model = AutoModelForSequenceClassification.from_pretrained(rep["out_dir"], local_files_only=True)
    assert model.config.num_labels == 1


def test_rm_from_jsonl_pairs(tmp_path):
    # text pairs: "chosen" answers use the gold words, "rejected" ones the others
    from hpc_rlhf.demo.task import GoldTask, build_tokenizer, words

    cfg0 = load_config(TINY)
    tok_dir = tmp_path / "tok"
    build_tokenizer(cfg0.task.vocab_words, str(tok_dir))
    task = GoldTask(0, cfg0.task.vocab_words, 3, 6)
    vocab = words(cfg0.task.vocab_words)
    gold = [w for i, w in enumerate(vocab) if task.is_gold[i + task.first_word]]
    bad = [w for i, w in enumerate(vocab) if not task.is_gold[i + task.first_word]]
    import random

    rng = random.Random(0)
    with open(tmp_path / "pairs.jsonl", "w") as f:
        for _ in range(600):
            p = " ".join(rng.choices(vocab, k=4))
            f.write(
                json.dumps(
                    {
                        "prompt": p,
                        "chosen": " ".join(rng.choices(gold, k=5)),
                        "rejected": " ".join(rng.choices(bad, k=5)),
                    }
                )
                + "\n"
            )
    cfg = load_config(
        TINY,
        [
            f"run_dir={tmp_path}/r",
            f"rm.pairs_path={tmp_path}/pairs.jsonl",
            f"model.tokenizer_path={tok_dir}",
            "rm.epochs=3",
            "task.name=jsonl",
            f"task.prompts_path={tmp_path}/pairs.jsonl",
        ],
    )
    rep = train_reward_model(cfg)
    assert rep["rm_pairwise_accuracy"] > 0.9
