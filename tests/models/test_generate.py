"""Sampling: identity seeds, filters against a slow reference, recorded log-probs, EOS handling."""

import numpy as np
import pytest
import torch

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import GoldTask, build_tokenizer
from hpc_rlhf.models.build import build_policy
from hpc_rlhf.models.forward import make_batch, response_logprobs
from hpc_rlhf.models.generate import SamplingParams, _filter, banned_tokens, sample
from tests.conftest import TINY


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = load_config(TINY)
    tok = build_tokenizer(cfg.task.vocab_words, str(tmp_path_factory.mktemp("tok")))
    task = GoldTask(0, cfg.task.vocab_words, 3, 6)
    return cfg, tok, build_policy(cfg, tok), [task.prompt(i) for i in range(6)]


def test_same_seed_same_sample_whatever_the_batch(setup):
    _, tok, pol, prompts = setup
    p = SamplingParams(max_new_tokens=8)
    full = sample(pol, prompts, [11, 12, 13, 14, 15, 16], p, tok.eos_token_id, tok.pad_token_id)
    alone = sample(pol, prompts[2:3], [13], p, tok.eos_token_id, tok.pad_token_id)
    other = sample(pol, prompts, [99, 98, 13, 97, 96, 95], p, tok.eos_token_id, tok.pad_token_id)
    assert np.array_equal(full.responses[2], alone.responses[0])
    assert np.array_equal(full.responses[2], other.responses[2])
    assert not all(np.array_equal(a, b) for a, b in zip(full.responses, other.responses))


def test_recorded_logprobs_match_a_full_forward(setup):
    cfg, tok, pol, prompts = setup
    p = SamplingParams(max_new_tokens=8, temperature=0.7, top_k=5)
    out = sample(pol, prompts, list(range(6)), p, tok.eos_token_id, tok.pad_token_id)
    batch = make_batch(prompts, out.responses, tok.pad_token_id)
    lp, _ = response_logprobs(pol, batch, 0.7, banned_tokens(tok.pad_token_id, tok.eos_token_id, True))
    for i, r in enumerate(out.logprobs):
        assert np.allclose(lp[i, : len(r)].detach().numpy(), r, atol=1e-5)
        assert torch.all(lp[i, len(r) :] == 0)


def test_eos_ends_a_response_and_pad_is_never_sampled(setup):
    _, tok, pol, prompts = setup
    with torch.no_grad():  # make EOS likely
        pol.lm_head.weight[tok.eos_token_id] += 0.5 * pol.lm_head.weight.abs().mean() * 40
    try:
        out = sample(pol, prompts, list(range(6)), SamplingParams(max_new_tokens=8), tok.eos_token_id, tok.pad_token_id)
    finally:
        with torch.no_grad():
            pol.lm_head.weight[tok.eos_token_id] -= 0.5 * pol.lm_head.weight.abs().mean() * 40
    assert out.eos.any()
    for r, e in zip(out.responses, out.eos):
        assert tok.pad_token_id not in r.tolist()
        if e:
            assert r[-1] == tok.eos_token_id and tok.eos_token_id not in r[:-1].tolist()
    no_eos = sample(
        pol,
        prompts,
        list(range(6)),
        SamplingParams(max_new_tokens=8, stop_at_eos=False),
        tok.eos_token_id,
        tok.pad_token_id,
    )
    assert all(len(r) == 8 and tok.eos_token_id not in r.tolist() for r in no_eos.responses)


def _filter_reference(probs, k, p):
    out = []
    for row in probs.tolist():
        keep = set(range(len(row)))
        if 0 < k < len(row):
            kth = sorted(row, reverse=True)[k - 1]
            keep = {i for i in keep if row[i] >= kth}
        if p < 1.0:
            order = sorted(range(len(row)), key=lambda i: -row[i] if i in keep else 0)
            total = sum(row[i] for i in keep)
            kept, mass = set(), 0.0
            for i in order:
                if i not in keep:
                    continue
                if mass > p * total:
                    break
                kept.add(i)
                mass += row[i]
            keep = kept
        out.append([row[i] if i in keep else 0.0 for i in range(len(row))])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("k,p", [(0, 1.0), (3, 1.0), (0, 0.5), (4, 0.8), (1, 1.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_top_k_top_p_against_a_loop(k, p, seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(5, 12, generator=g, dtype=torch.float64) * 2, -1)
    assert torch.allclose(_filter(probs, k, p), _filter_reference(probs, k, p))
