"""The reward-model stage: Bradley-Terry training reaches held-out accuracy well above chance, from synthesised
pairs, a JSONL file and chat-format pairs in Parquet; SIGKILL + resume ends bit-identical and 2 ranks match 1
within the PPO tests' tolerance."""

import json
import random

import datasets
import pytest
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from hpc_rlhf.checkpoint.store import list_checkpoints
from hpc_rlhf.config import load_config
from hpc_rlhf.stages.reward_model import train_reward_model
from tests.conftest import TINY, cli, kr
from tests.stages.stage_data import demo_tokenizer, pair_rows

RM_FILE = "reward_model/model.safetensors"
NO_CKPT = "checkpoint.every_steps=0"  # only the final checkpoint: these tests are about what is learnt


def test_rm_learns_gold_preferences(tmp_path):
    cfg = load_config(TINY, [f"run_dir={tmp_path}", "rm.num_pairs=1024", "rm.epochs=3", "rm.label_noise=0.0", NO_CKPT])
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
            NO_CKPT,
            "task.name=jsonl",
            f"task.prompts_path={tmp_path}/pairs.jsonl",
        ],
    )
    rep = train_reward_model(cfg)
    assert rep["rm_pairwise_accuracy"] > 0.9


def test_rm_from_chat_pairs_in_parquet(tmp_path):
    rows = [{"messages": [{"role": "user", "content": r["prompt"]}], **r} for r in pair_rows(400)]
    for r in rows:
        del r["prompt"]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "pairs.parquet"))
    cfg = load_config(
        TINY,
        [
            f"run_dir={tmp_path}/r",
            f"rm.pairs_path={tmp_path}/pairs.parquet",
            f"model.tokenizer_path={demo_tokenizer(tmp_path, chat=True)}",
            "rm.chat_template=true",
            "rm.epochs=3",
            NO_CKPT,
        ],
    )
    rep = train_reward_model(cfg)
    assert rep["rm_heldout_pairs"] == 40 and rep["rm_pairwise_accuracy"] > 0.9, rep


@pytest.mark.mpi
def test_rm_sigkilled_and_resumed_is_bit_identical(tmp_path, tiny_rm):
    """The same config as the session's tiny reward model (8 steps, a checkpoint every 2), killed and resumed."""
    run = str(tmp_path / "run")
    events = kr.kill_resume_cycle(run, [TINY, "stage=rm"], random.Random(5), kills=2, max_steps_before_kill=2)
    assert sum(1 for e in events if e.get("killed")) >= 1 and events[-1]["exit"] == 0, events
    assert kr.sha256(f"{run}/{RM_FILE}") == kr.sha256(f"{tiny_rm['dir']}/{RM_FILE}")
    assert [m["step"] for m in kr.metrics_since(run, 0)] == list(range(8))
    assert all(c.valid for c in list_checkpoints(run))


@pytest.mark.mpi
def test_rm_on_two_ranks_matches_one(tmp_path, tiny_rm):
    run = tmp_path / "two"
    cli("train-rm", TINY, f"run_dir={run}", "rm.ranks=2")
    a, b = load_file(f"{tiny_rm['dir']}/{RM_FILE}"), load_file(f"{run}/{RM_FILE}")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-5, worst  # the PPO layout test's tolerance (tests/cluster/test_pipeline.py)
    reports = [json.load(open(f"{d}/reward_model/rm_report.json")) for d in (tiny_rm["dir"], run)]
    assert reports[1]["rm_ranks"] == 2 and reports[0]["rm_heldout_pairs"] == reports[1]["rm_heldout_pairs"]


def test_rm_starts_from_a_policy_folder_with_a_head_drawn_from_the_init_seed(tmp_path):
    """model.policy_path without model.reward_path (the recipe's RM stage): the policy's backbone, a new score head
    drawn from model.init_seed + 1 (models/build.py, as the value model's head), the pad id in its config."""
    import torch

    from hpc_rlhf.models.build import build_policy, load_tokenizer
    from hpc_rlhf.stages.reward_model import _initial_model

    tok = load_tokenizer(load_config(TINY, [f"model.tokenizer_path={demo_tokenizer(tmp_path)}"]))
    policy = build_policy(load_config(TINY), tok)
    policy.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    cfg = load_config(TINY, [f"model.policy_path={tmp_path}/policy"])
    a, b = _initial_model(cfg, tok), _initial_model(cfg, tok)
    other = _initial_model(load_config(TINY, [f"model.policy_path={tmp_path}/policy", "model.init_seed=7"]), tok)
    body = policy.model.state_dict()
    assert all(torch.equal(v, body[k]) for k, v in a.model.state_dict().items())
    assert torch.equal(a.score.weight, b.score.weight) and not torch.equal(a.score.weight, other.score.weight)
    assert a.config.num_labels == 1 and a.config.pad_token_id == tok.pad_token_id and a.score.weight.std() > 0
