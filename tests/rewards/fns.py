"""Reward functions for the tests, good and bad, named in configs as 'tests.rewards.fns:NAME'."""

from __future__ import annotations

import math

import numpy as np


def length(prompts, responses, prompt_ids, response_ids, labels):
    return [float(len(r)) for r in response_ids]


def raises_on_long(prompts, responses, prompt_ids, response_ids, labels):
    """Fails only on a response of more than 3 tokens (so the blamed sample can be checked)."""
    for r in response_ids:
        if len(r) > 3:
            raise ValueError(f"cannot score {len(r)} tokens")
    return [0.0] * len(response_ids)


def raises_on_batches(prompts, responses, prompt_ids, response_ids, labels):
    """Fails on any batch of 2+ samples, never on one sample alone."""
    if len(responses) > 1:
        raise RuntimeError("batch too large")
    return [1.0]


def nan_on_second(prompts, responses, prompt_ids, response_ids, labels):
    return [math.nan if i == 1 else 0.0 for i in range(len(responses))]


def inf_on_first(prompts, responses, prompt_ids, response_ids, labels):
    return np.array([np.inf] + [0.0] * (len(responses) - 1))


def one_short(prompts, responses, prompt_ids, response_ids, labels):
    return [0.0] * (len(responses) - 1)


def text_on_third(prompts, responses, prompt_ids, response_ids, labels):
    return ["good" if i == 2 else 1.0 for i in range(len(responses))]


def scalar(prompts, responses, prompt_ids, response_ids, labels):
    return 1.0


def too_few_args(prompts, responses):
    return [0.0] * len(responses)


def wants_cfg(prompts, responses, prompt_ids, response_ids, labels, *, cfg):
    return [float(cfg.seed)] * len(responses)


NOT_A_FUNCTION = 3
