"""Activation checkpointing per decoder layer (models.forward.checkpoint_layers): the same log-probs,
values and gradients bit for bit, on the lean path and on the Hugging Face path, with far fewer
activation bytes kept for the backward pass (counted with saved-tensor hooks)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from hpc_rlhf.models.forward import checkpoint_layers, response_logprobs, token_values
from tests.models.test_lean_forward import VARIANTS, batch, config, hf_only, lean_on


def run(model, value: bool):
    """(output, {name: grad}, bytes the autograd graph saved) of one forward/backward on the batch."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = token_values(model, batch()) if value else response_logprobs(model, batch(), 0.8, (0,))[0]
    out.sum().backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}, saved[0]


@pytest.mark.parametrize("path", ["lean", "hf"])
@pytest.mark.parametrize("value", [False, True], ids=["policy", "value"])
def test_checkpointed_layers_give_the_same_numbers_with_less_saved(path, value):
    torch.manual_seed(0)
    conf = config({**VARIANTS["llama"]})
    conf.num_hidden_layers = 6
    if value:
        conf.num_labels = 1
    model = (AutoModelForSequenceClassification if value else AutoModelForCausalLM).from_config(conf).eval()
    model = lean_on(model) if path == "lean" else hf_only(model)
    ckpt = copy.deepcopy(model)
    if path == "hf":
        ckpt._hpc_lean_ok = False
    checkpoint_layers(ckpt)
    out_a, grads_a, saved_a = run(model, value)
    out_b, grads_b, saved_b = run(ckpt, value)
    assert torch.equal(out_a, out_b)
    assert grads_a.keys() == grads_b.keys() and all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)
    assert saved_b < 0.5 * saved_a, (saved_a, saved_b)
