"""Real mpiexec runs of the tiny config: layout invariance (PPO, the critic-free GRPO and REINFORCE++, GRPO with
dynamic sampling, PPO with LoRA adapters, FSDP-sharded trainers, evaluation during training), a resharded resume,
a failing rank, a damaged shard."""

from __future__ import annotations

import glob
import json
import os
import shutil
import time

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import SPECIALS, words
from hpc_rlhf.rollout.shard import read_attrs, read_shard
from tests.conftest import TINY, cli, eval_series, tiny_eval

pytestmark = pytest.mark.mpi

LAYOUTS = {"single": None, "1+1+1": (1, 1, 1), "2+1+1": (2, 1, 1), "1+1+2": (1, 1, 2)}
VARIANTS = {
    "single-2-threads": ["runtime.launcher=none", "runtime.torch_threads=2"],
    "1+1+2-fsdp": ["layout.generate=1", "layout.score=1", "layout.train=2", "train.sharding=fsdp"],
    # train.precision=bf16 (mixed precision): compared with single-bf16, not with the fp32 runs
    "single-bf16": ["runtime.launcher=none", "train.precision=bf16"],
    "2+1+1-bf16": ["layout.generate=2", "layout.score=1", "layout.train=1", "train.precision=bf16"],
    "1+1+2-fsdp-bf16": [
        *["layout.generate=1", "layout.score=1", "layout.train=2"],
        "train.sharding=fsdp",
        "train.precision=bf16",
    ],
}


def layout_args(layout):
    if layout is None:
        return ["runtime.launcher=none"]
    g, s, t = layout
    return [f"layout.generate={g}", f"layout.score={s}", f"layout.train={t}"]


def rollouts(run_dir):
    out = {}
    for p in sorted(glob.glob(f"{run_dir}/rollouts/*/scored_*.h5")):
        out[os.path.relpath(p, run_dir)] = read_shard(p, ["response_tokens"])[0]["response_tokens"]
    return out


def weights(run_dir):
    return load_file(os.path.join(run_dir, "final", "policy", "model.safetensors"))


@pytest.fixture(scope="module")
def layout_runs(tmp_path_factory, tiny_rm, mpiexec):
    base = tmp_path_factory.mktemp("layouts")
    for name, layout in LAYOUTS.items():  # with evaluation of versions 2 and 4 (gold rule and the reward model)
        cli(
            "train", TINY, f"run_dir={base}/{name}", *tiny_rm["overrides"], *tiny_eval(2, rm=True), *layout_args(layout)
        )
    # two threads: the side-by-side pieces (run_pair) take one each; FSDP: two trainers hold half each
    for name, over in VARIANTS.items():
        cli("train", TINY, f"run_dir={base}/{name}", *tiny_rm["overrides"], *over)
    return base


@pytest.mark.parametrize(
    "name", ["1+1+1", "2+1+1", "1+1+2", "single-2-threads", "1+1+2-fsdp", "2+1+1-bf16", "1+1+2-fsdp-bf16"]
)
def test_layouts_sample_identical_tokens_and_end_with_the_same_weights(layout_runs, name):
    base = "single-bf16" if name.endswith("-bf16") else "single"
    ref, got = rollouts(layout_runs / base), rollouts(layout_runs / name)
    assert len(ref) == 16 and ref.keys() == got.keys()
    for k in ref:
        assert np.array_equal(ref[k], got[k]), f"{name}: tokens differ in {k}"
    wa, wb = weights(layout_runs / base), weights(layout_runs / name)
    assert {v.dtype for v in wb.values()} == {torch.float32}  # bf16: the fp32 masters are exported
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    # one trainer: bit-identical (bf16 too: CPU bf16 autocast is deterministic); two trainers: only the
    # gradient-sum order differs (measured ~6e-8; FSDP ~4e-8: `python -m hpc_rlhf.launch.cli train
    # configs/tiny.yaml layout.train=2 train.sharding=fsdp`). FSDP bf16 casts whole layers (norms,
    # residuals) to bf16 where autocast casts only matmuls: measured 1.2e-3 after the 4 AdamW steps
    # of lr 3e-4 (the same command with train.precision=bf16, against runtime.launcher=none), tokens equal
    tol = 0.0 if "1+1+2" not in name else 1e-5 if "bf16" not in name else 3e-3
    assert diff <= tol, f"{name}: max weight difference {diff}"
    if name in LAYOUTS:  # evaluated every 2 versions (eval shards split over 2 generators on 2+1+1): same numbers
        want = eval_series(str(layout_runs / "single"))
        assert sorted(want) == [1, 3] and "eval/pass_at_4" in want[1] and "eval/reward/rm" in want[1], want
        assert eval_series(str(layout_runs / name)) == want, f"{name}: eval metrics differ"


def test_eval_scores_with_the_reward_model_as_the_scorer_does(layout_runs, tiny_rm):
    """An eval source of kind model: the generation rank's reward model gives each eval sample the score
    the Hugging Face sequence classifier of model.reward_path gives the same tokens; the eval shards of
    1+1+1 and 2+1+1 (the reward model loaded on each generation rank) equal the single-rank loop's
    (which shares its scorer's)."""
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(tiny_rm["overrides"][0].split("=", 1)[1]).eval()
    shards = sorted(glob.glob(f"{layout_runs}/single/rollouts/evals/*/eval_*.h5"))
    assert len(shards) == 4  # versions 2 and 4, 2 shards each
    for p in shards:
        d, a = read_shard(p)
        got = d["reward_sources"][:, a["reward_sources"].index("rm")]
        seqs = [
            np.concatenate([pr, rs])
            for pr, rs in zip(
                np.split(d["prompt_tokens"], np.cumsum(d["prompt_len"])[:-1]),
                np.split(d["response_tokens"], np.cumsum(d["response_len"])[:-1]),
            )
        ]
        with torch.no_grad():
            want = [float(rm(input_ids=torch.as_tensor(s)[None]).logits[0, 0]) for s in seqs]
        assert np.allclose(got, want, atol=1e-5), (p, got, want)
        assert np.allclose(d["reward"], d["reward_sources"] @ np.array(a["reward_weights"]), atol=1e-6)
        for name in ("1+1+1", "2+1+1"):
            other, _ = read_shard(p.replace("/single/", f"/{name}/"))
            assert np.array_equal(other["reward_sources"], d["reward_sources"]), name


RESHARD = {
    # name: (the uninterrupted run whose step-2 checkpoint is resumed, the resume's overrides, the run to match)
    "fsdp2->1": ("1+1+2-fsdp", ["layout.train=1", "train.sharding=none"], "1+1+1"),
    "1->fsdp2": ("1+1+1", ["layout.train=2", "train.sharding=fsdp"], "1+1+2-fsdp"),
}


@pytest.mark.parametrize("case", list(RESHARD))
def test_a_checkpoint_resumes_on_another_number_of_train_ranks(tmp_path, mpiexec, layout_runs, case):
    """Resharded resumes from step 2 of a layout run: two FSDP trainers' checkpoint (each wrote its own
    shard file) continues on one unsharded trainer, rebuilding each tensor from the two files; one
    unsharded trainer's full checkpoint continues on two FSDP trainers, each taking its rows of every
    tensor. Both end within the two-trainer tolerance of the uninterrupted run (measured 7e-9 and 5e-8)."""
    first, resume, ref = RESHARD[case]
    run = tmp_path / "r"
    shutil.copytree(layout_runs / first, run)
    shutil.rmtree(run / "checkpoints" / "step_000004")  # resume from step 2
    shutil.rmtree(run / "final")
    held = sorted(os.listdir(run / "checkpoints" / "step_000002"))
    ranks = [n for n in held if n.startswith("train_rank")]
    sharded = "fsdp" in first
    assert ranks == (["train_rank000_of_002.safetensors", "train_rank001_of_002.safetensors"] if sharded else [])
    assert ("policy.safetensors" in held) != sharded and ("value.safetensors" in held) != sharded
    cli("resume", str(run), *resume)
    wa, wb = weights(layout_runs / ref), weights(run)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-5


CRITIC_FREE = {
    "grpo": ["algo.name=grpo", "algo.kl_loss=k3", "algo.loss_agg=seq_mean_token_mean"],
    "reinforce_pp": ["algo.name=reinforce_pp"],
}


@pytest.fixture(scope="module")
def critic_free_runs(tmp_path_factory, tiny_rm, mpiexec):
    base = tmp_path_factory.mktemp("critic_free")
    for algo, over in CRITIC_FREE.items():
        for name, layout in LAYOUTS.items():
            cli("train", TINY, f"run_dir={base}/{algo}-{name}", *tiny_rm["overrides"], *over, *layout_args(layout))
    return base


@pytest.mark.parametrize("algo", list(CRITIC_FREE))
@pytest.mark.parametrize("name", ["1+1+1", "2+1+1", "1+1+2"])
def test_critic_free_layouts_sample_identical_tokens_and_end_with_the_same_weights(critic_free_runs, algo, name):
    """Group statistics and batch whitening are the trainer's, over the whole step: any layout trains the
    same update as one process (one trainer bit-identical, two within PPO's tolerance)."""
    ref, got = rollouts(critic_free_runs / f"{algo}-single"), rollouts(critic_free_runs / f"{algo}-{name}")
    assert len(ref) == 16 and ref.keys() == got.keys()
    assert all(np.array_equal(ref[k], got[k]) for k in ref), f"{algo} {name}: tokens differ"
    wa, wb = weights(critic_free_runs / f"{algo}-single"), weights(critic_free_runs / f"{algo}-{name}")
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    tol = 0.0 if name != "1+1+2" else 1e-5
    assert diff <= tol, f"{algo} {name}: max weight difference {diff}"
    run = critic_free_runs / f"{algo}-{name}"
    written = [os.path.relpath(p, run) for p in glob.glob(f"{run}/**/*value*", recursive=True)]
    assert written == [], written  # no value model in checkpoints or published weights


# DAPO's pieces together: dynamic sampling with refill (gold-rule rewards, 2 samples per prompt: many uniform
# groups), clip-higher, overlong filtering and token-budget micro-batches (8 rows of ~14 tokens: 2 per minibatch);
# 12 prompts, 8 per step: a refill round draws 4 prompts the step has not seen, then 4 of its own again
DYNAMIC = [
    *["algo.name=grpo", "algo.kl_loss=k3", "algo.dynamic_sampling=true", "algo.max_refill_rounds=2"],
    "task.num_prompts=12",
    *["algo.clip_high=0.28", "algo.overlong_filter=true", "train.max_tokens_per_microbatch=64"],
    "reward.sources=[{name: gold, kind: function, function: 'hpc_rlhf.demo.task:gold_reward'}]",
]


@pytest.fixture(scope="module")
def dynamic_runs(tmp_path_factory, mpiexec):
    base = tmp_path_factory.mktemp("dynamic")
    for name in ("single", "2+1+1"):
        cli("train", TINY, f"run_dir={base}/{name}", *DYNAMIC, *layout_args(LAYOUTS[name]))
    return base


def test_dynamic_sampling_is_layout_invariant(dynamic_runs):
    """Refill rounds are drawn on the rewards alone and the kept groups are the first ones in (round, shard,
    prompt) order: one process and 2+1+1 ranks draw the same rounds, sample the same tokens, keep the same
    groups and end with the same weights (bit-identical: one trainer)."""
    from hpc_rlhf.archive import Archive
    from hpc_rlhf.archive.summary import summarize
    from hpc_rlhf.archive.verify import verify

    ref, got = rollouts(dynamic_runs / "single"), rollouts(dynamic_runs / "2+1+1")
    assert ref.keys() == got.keys() and all(np.array_equal(ref[k], got[k]) for k in ref)
    assert len(ref) > 16  # refill shards beyond the 4 steps x 4 shards of the plan
    refills = [p for p in ref if int(p[-7:-3]) >= 4]
    assert all(read_attrs(str(dynamic_runs / "single" / p))["refill_round"] == int(p[-7:-3]) // 4 for p in refills)
    wa, wb = weights(dynamic_runs / "single"), weights(dynamic_runs / "2+1+1")
    assert all(bool((wa[k] == wb[k]).all()) for k in wa)
    for name in ("single", "2+1+1"):
        run = dynamic_runs / name
        lines = [json.loads(x) for x in open(run / "metrics.jsonl")]
        assert sum(x["algo/refill_rounds"] for x in lines) > 0
        assert all(x["algo/kept_groups"] + x["algo/short_groups"] == 8 for x in lines)
        ledger = [json.loads(x) for x in open(run / "ledger.jsonl")]
        assert [x["refill_rounds"] for x in ledger] == [x["algo/refill_rounds"] for x in lines]
        assert all(len(x["prompt_index"]) == 16 for x in ledger)  # every step trains on 8 groups of 2
        assert verify(Archive.open(str(run))).ok
    # the archive's groups: a prompt drawn again in a refill round of its step is another group
    groups: dict[int, set] = {}
    for p in glob.glob(f"{dynamic_runs}/single/rollouts/*/scored_*.h5"):
        d, a = read_shard(p, ["prompt_index", "group_id", "step", "policy_version"])
        rnd = int(a.get("refill_round", 0))
        assert d["group_id"].tolist() == [(rnd << 32) + int(i) for i in d["prompt_index"]]
        for v, st, i in zip(d["policy_version"], d["step"], d["prompt_index"]):
            groups.setdefault(int(v), set()).add((int(st), rnd, int(i)))
    assert any(len({(st, i) for st, _, i in g}) < len(g) for g in groups.values())  # a prompt drawn again
    rows = summarize(Archive.open(str(dynamic_runs / "single")), ngram=None)
    assert {r["policy_version"]: r["groups"] for r in rows} == {v: len(g) for v, g in groups.items()}


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory, tiny_rm, mpiexec):
    base = tmp_path_factory.mktemp("lora")
    for name in ("single", "1+1+1", "2+1+1"):
        cli(
            "train",
            TINY,
            f"run_dir={base}/{name}",
            *tiny_rm["overrides"],
            "model.lora.r=4",
            *layout_args(LAYOUTS[name]),
        )
    return base


@pytest.mark.parametrize("name", ["1+1+1", "2+1+1"])
def test_lora_layouts_sample_identical_tokens_and_end_with_the_same_weights(lora_runs, name):
    """LoRA: the single-rank loop holds one base (the reference and the generator share the trainer's);
    separate ranks each build it. Same tokens, same reference log-probs, same merged weights; the
    published weights are the adapters alone."""
    for field in ("response_tokens", "ref_logprobs"):
        ref = {p: read_shard(str(lora_runs / "single" / p), [field])[0][field] for p in rollouts(lora_runs / "single")}
        assert len(ref) == 16
        for p, want in ref.items():
            assert np.array_equal(want, read_shard(str(lora_runs / name / p), [field])[0][field]), (
                f"{name}: {field} {p}"
            )
    wa, wb = weights(lora_runs / "single"), weights(lora_runs / name)
    assert wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)
    published = glob.glob(f"{lora_runs / name}/weights/*.safetensors")
    assert published and all(all("lora_" in k or "base_sha256" in k for k in load_file(p)) for p in published)


# A user's prompt file instead of the demo's prompts: JSONL text (PPO) and Parquet chat messages (GRPO), both
# through the tokenizer's chat template, 4 of 68 rows over task.max_prompt_tokens and dropped.
DATASET = {"ppo-jsonl": ("p.jsonl", []), "grpo-parquet": ("p.parquet", CRITIC_FREE["grpo"])}


@pytest.fixture(scope="module")
def dataset_runs(tmp_path_factory, tiny_rm, mpiexec):
    from tests.rollout.prompt_files import chat_tokenizer, dataset_overrides, prompt_file

    base = tmp_path_factory.mktemp("dataset")
    tok_dir = chat_tokenizer(base / "tok")
    for case, (file, over) in DATASET.items():
        data = dataset_overrides(prompt_file(base / file), tok_dir)
        for name in ("single", "2+1+1"):
            run = f"run_dir={base}/{case}-{name}"
            cli(
                "train",
                TINY,
                run,
                f"model.reward_path={tiny_rm['dir']}/reward_model",
                *data,
                *over,
                *layout_args(LAYOUTS[name]),
            )
    return base


@pytest.mark.parametrize("case", list(DATASET))
def test_dataset_runs_are_layout_invariant(dataset_runs, case):
    """A prompt dataset with a chat template: 2+1+1 samples the tokens of one process and ends bit-identical;
    each prompt once per pass (64 kept of 68), the dropped ones counted in every metrics line."""
    import json

    from tests.rollout.prompt_files import N_KEPT, N_LONG

    a, b = dataset_runs / f"{case}-single", dataset_runs / f"{case}-2+1+1"
    ref, got = rollouts(a), rollouts(b)
    assert len(ref) == 16 and ref.keys() == got.keys()
    assert all(np.array_equal(ref[k], got[k]) for k in ref), f"{case}: tokens differ"
    wa, wb = weights(a), weights(b)
    assert all(bool((wa[k] == wb[k]).all()) for k in wa), f"{case}: weights differ"
    data, _ = read_shard(str(b / "rollouts" / "step_000000" / "scored_0000.h5"), ["prompt_tokens", "prompt_offsets"])
    bos = 2  # the chat template: "<bos> turn <bos>" (tests/rollout/prompt_files.py)
    assert data["prompt_tokens"][0] == bos and data["prompt_tokens"][data["prompt_offsets"][1] - 1] == bos
    lines = [json.loads(x) for x in open(b / "ledger.jsonl")]
    pi = [p for x in lines for p, s in zip(x["prompt_index"], x["sample_index"]) if s == 0]
    assert len(pi) == len(set(pi)) == 32 and max(pi) < N_KEPT
    metrics = [json.loads(x) for x in open(b / "metrics.jsonl")]
    assert {m["data/prompts_dropped"] for m in metrics} == {N_LONG}


def test_ledger_consumes_each_prompt_once_per_pass(layout_runs):
    import json

    lines = [json.loads(x) for x in open(layout_runs / "2+1+1" / "ledger.jsonl")]
    assert [x["step"] for x in lines] == [0, 1, 2, 3]
    pi = [p for x in lines for p, s in zip(x["prompt_index"], x["sample_index"]) if s == 0]
    assert len(pi) == len(set(pi)) == 32  # 4 steps x 8 prompts, the tiny set has 64: no repeats in a pass


def test_a_rank_that_raises_ends_every_rank(tmp_path, tiny_rm, mpiexec):
    """The scorer raises at its second shard: every rank must exit non-zero well within 30 s."""
    t0 = time.monotonic()
    proc = cli(
        "train",
        TINY,
        f"run_dir={tmp_path}/r",
        *tiny_rm["overrides"],
        "total_steps=50",
        check=False,
        timeout=120,
        env={"HPC_RLHF_FAULT": "score:2"},
    )
    took = time.monotonic() - t0
    assert proc.returncode != 0
    assert "rank 1 (score) failed" in proc.stderr and "injected fault" in proc.stderr
    assert took < 40, f"the job took {took:.0f} s to end"  # includes ~10 s of start-up


def test_a_damaged_shard_is_never_trained_on(tmp_path, tiny_rm, mpiexec, layout_runs):
    """Damage a scored shard after a checkpoint, resume: it is detected, rebuilt, and the run ends
    exactly where an undisturbed one does."""
    run = tmp_path / "r"
    args = ["train", TINY, f"run_dir={run}", *tiny_rm["overrides"]]
    cli(*args, "total_steps=2")
    # the run stopped at step 2 with a final checkpoint; plant a damaged scored shard of step 2
    victim = run / "rollouts" / "step_000002" / "scored_0001.h5"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_bytes(open(layout_runs / "1+1+1" / "rollouts" / "step_000002" / "scored_0001.h5", "rb").read())
    with h5py.File(victim, "r") as f:
        off = f["samples"].id.get_chunk_info(0).byte_offset  # the table holding reward
    with open(victim, "r+b") as f:
        f.seek(off)
        f.write(b"\x5a\x5a\x5a\x5a")
    cli(*args, "total_steps=4")
    wa, wb = weights(layout_runs / "1+1+1"), weights(run)
    assert all(bool((wa[k] == wb[k]).all()) for k in wa)
    read_shard(str(victim))  # rebuilt intact


def test_final_policy_reloads_and_generates(layout_runs):
    """RUN_DIR/final/policy loads with plain transformers, and its tokenizer is the run's: a prompt of the
    run's shards decodes to the demo's words for those ids and encodes back to them; so do new tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = layout_runs / "1+1+1"
    path = run / "final" / "policy"
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    vocab = SPECIALS + words(load_config(str(run / "config.yaml")).task.vocab_words)  # id -> word of the run
    data, _ = read_shard(str(run / "rollouts" / "step_000000" / "scored_0000.h5"), ["prompt_tokens", "prompt_offsets"])
    prompt = data["prompt_tokens"][data["prompt_offsets"][0] : data["prompt_offsets"][1]].tolist()
    text = tok.decode(prompt)
    assert text == " ".join(vocab[i] for i in prompt)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert ids[0].tolist() == prompt
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[0, ids.shape[1] :].tolist()
    assert len(new) > 0
    assert tok.decode(new).split() == [vocab[i] for i in new]


def test_policy_lag_is_deterministic_whatever_the_timing(tmp_path, tiny_rm, mpiexec):
    """max_policy_lag=1: generators run ahead, yet step s always trains on version s-1 exactly,
    so a 4-rank run samples the same tokens and ends with the same weights as the 1-rank loop, and so
    does its resume from a checkpoint that holds an older version."""
    lag = ["max_policy_lag=1", *tiny_rm["overrides"], *tiny_eval(2)]  # eval: versions 2 and 4 (after the last step)
    cli("train", TINY, f"run_dir={tmp_path}/single", *lag, *layout_args(None))
    cli("train", TINY, f"run_dir={tmp_path}/multi", *lag, *layout_args((2, 1, 1)))
    ref, got = rollouts(tmp_path / "single"), rollouts(tmp_path / "multi")
    assert ref.keys() == got.keys() and all(np.array_equal(ref[k], got[k]) for k in ref)
    wa, wb = weights(tmp_path / "single"), weights(tmp_path / "multi")
    assert all(bool((wa[k] == wb[k]).all()) for k in wa)
    data, attrs = read_shard(str(tmp_path / "multi" / "rollouts" / "step_000003" / "scored_0000.h5"))
    assert attrs["policy_version"] == 2 and set(data["policy_version"]) == {2}
    assert read_attrs(str(tmp_path / "multi" / "rollouts" / "step_000001" / "scored_0000.h5"))["policy_version"] == 0
    # the step-2 checkpoint's behaviour version 1 is read back from its published file: a resume from it
    # continues exactly
    run = tmp_path / "resumed"
    shutil.copytree(tmp_path / "multi", run)
    shutil.rmtree(run / "checkpoints" / "step_000004")
    shutil.rmtree(run / "final")
    assert "behaviour_v000001.safetensors" in os.listdir(run / "checkpoints" / "step_000002")
    cli("resume", str(run))
    wc = weights(run)
    assert all(bool((wa[k] == wc[k]).all()) for k in wa)
    evals = eval_series(str(tmp_path / "single"))  # the resume evaluates version 2 again: logged once
    assert sorted(evals) == [1, 3] and eval_series(str(tmp_path / "multi")) == evals == eval_series(str(run))
