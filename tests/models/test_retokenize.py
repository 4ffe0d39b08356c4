"""A reward model with its own tokenizer (models/retokenize.py): the same tokenizer is never re-encoded; a
different one (here: words split into syllables, other ids, its own BOS/EOS, a gpt2 reward model for a llama
policy) scores the decoded text, in a real multi-rank run exactly as scoring that text directly."""

from __future__ import annotations

import glob
import shutil

import numpy as np
import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerFast

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import words
from hpc_rlhf.errors import UserError
from hpc_rlhf.launch.prepare import prepare_run
from hpc_rlhf.models.build import load_tokenizer
from hpc_rlhf.models.retokenize import RewardTokens
from hpc_rlhf.rollout.shard import read_shard, unpack_ragged
from tests.conftest import TINY, cli
from tests.rollout.prompt_files import chat_tokenizer, dataset_overrides, prompt_file

RM_TEMPLATE = (
    "{% for m in messages %}<s> {% if m['role'] == 'user' %}<unk> {% endif %}{{ m['content'] }} </s> {% endfor %}"
)


def syllable_reward_model(out_dir, chat: bool = False) -> str:
    """A random gpt2 reward model whose tokenizer splits each demo word into its two syllables."""
    sylls = sorted({w[i : i + 2] for w in words(32) for i in (0, 2)})
    vocab = {t: i for i, t in enumerate(["<unk>", "<pad>", "<s>", "</s>", *sylls])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    split = pre_tokenizers.Split(Regex(".."), behavior="isolated")
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), split])
    core.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    if chat:
        tok.chat_template = RM_TEMPLATE
    conf = AutoConfig.for_model(
        "gpt2", vocab_size=len(vocab), n_embd=32, n_layer=1, n_head=2, n_positions=128, num_labels=1, pad_token_id=1
    )
    torch.manual_seed(7)
    AutoModelForSequenceClassification.from_config(conf).save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    return str(out_dir)


def _cfg(tmp_path, *extra: str):
    tok_dir = chat_tokenizer(tmp_path / "tok")
    over = [*dataset_overrides(prompt_file(tmp_path / "p.jsonl"), tok_dir), "model.value_init=policy", *extra]
    return load_config(TINY, [f"run_dir={tmp_path}/run", *over])


def test_the_policys_own_tokenizer_is_never_re_encoded(tmp_path, tiny_rm):
    """The tiny reward model's folder holds the tokenizer it was trained with: the same definition as the
    policy's, with or without a chat template, so the scorer scores the policy's tokens (the reference run)."""
    cfg = _cfg(tmp_path, f"model.reward_path={tiny_rm['dir']}/reward_model")
    assert RewardTokens.of(cfg, load_tokenizer(cfg)) is None
    shutil.copytree(f"{tiny_rm['dir']}/tokenizer", tmp_path / "copy")  # another folder, same tokenizer
    cfg = _cfg(
        tmp_path, f"model.reward_path={tiny_rm['dir']}/reward_model", f"model.reward_tokenizer_path={tmp_path}/copy"
    )
    assert RewardTokens.of(cfg, load_tokenizer(cfg)) is None


def test_a_different_tokenizer_scores_the_decoded_text_plain_and_with_its_chat_template(tmp_path):
    rm = syllable_reward_model(tmp_path / "rm", chat=True)
    w = words(32)
    for chat in (False, True):
        cfg = _cfg(tmp_path, f"model.reward_path={rm}", f"model.reward_chat_template={str(chat).lower()}")
        tok = load_tokenizer(cfg)
        rt = RewardTokens.of(cfg, tok)
        assert rt is not None and rt.chat == chat
        p = [tok.bos_token_id, *tok(f"{w[0]} {w[1]}", add_special_tokens=False)["input_ids"], tok.bos_token_id]
        r = [*tok(f"{w[2]} {w[3]}", add_special_tokens=False)["input_ids"], tok.eos_token_id]
        rm_tok = AutoTokenizer.from_pretrained(rm)
        if chat:
            want = rm_tok.apply_chat_template(
                [{"role": "user", "content": f"{w[0]} {w[1]}"}, {"role": "assistant", "content": f"{w[2]} {w[3]}"}],
                tokenize=True,
            )
            want = want["input_ids"] if hasattr(want, "keys") else want
        else:
            want = rm_tok(f"{w[0]} {w[1]} {w[2]} {w[3]}")["input_ids"]
            assert len(want) == 2 + 8 and want[0] == 2 and want[-1] == 3  # 4 words, 2 syllables each, <s> </s>
        assert rt.encode(p, r, f"{w[0]} {w[1]}") == list(want)


@pytest.mark.parametrize(
    "extra, words_",
    [
        (["model.reward_chat_template=true"], ["no chat template", "model.reward_chat_template"]),
        (["model.value_init=reward"], ["tokenizer of its own", "model.value_init=policy"]),
    ],
)
def test_a_reward_tokenizer_that_cannot_work_fails_before_the_run(tmp_path, extra, words_):
    cfg = _cfg(tmp_path, f"model.reward_path={syllable_reward_model(tmp_path / 'rm')}", *extra)
    with pytest.raises(UserError) as e:
        prepare_run(cfg)
    assert "\n" not in str(e.value) and all(x in str(e.value) for x in words_), str(e.value)


@pytest.mark.mpi
def test_a_run_scores_the_decoded_text_as_scoring_it_directly(tmp_path, mpiexec):
    """1+1+1 ranks, 2 steps: every sample's reward-model value equals the reward model applied to the
    policy's decoded prompt+response re-encoded by its own tokenizer, one sequence at a time, unpadded."""
    rm = syllable_reward_model(tmp_path / "rm")
    cfg = _cfg(tmp_path, f"model.reward_path={rm}")
    run = tmp_path / "run"
    over = [*dataset_overrides(cfg.task.prompts_path, cfg.model.tokenizer_path), f"model.reward_path={rm}"]
    cli("train", TINY, f"run_dir={run}", *over, "model.value_init=policy", "total_steps=2")
    tok, rm_tok = load_tokenizer(cfg), AutoTokenizer.from_pretrained(rm)
    model = AutoModelForSequenceClassification.from_pretrained(rm).eval()
    shards = sorted(glob.glob(f"{run}/rollouts/*/scored_*.h5"))
    assert len(shards) == 8
    for path in shards:
        data, attrs = read_shard(path)
        prompts = unpack_ragged(data["prompt_tokens"], data["prompt_offsets"])
        responses = unpack_ragged(data["response_tokens"], data["response_offsets"])
        got = data["reward_sources"][:, 0]
        for p, r, value in zip(prompts, responses, got):
            text = tok.decode([*p.tolist(), *r.tolist()], skip_special_tokens=True)
            with torch.no_grad():
                want = model(torch.tensor([rm_tok(text)["input_ids"]])).logits[0, 0].item()
            assert abs(float(value) - want) <= 1e-5, (text, float(value), want)
        assert np.array_equal(data["reward"], got)  # one source, weight 1
