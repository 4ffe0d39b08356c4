"""The trained policy as a Hugging Face folder: RUN_DIR/final/policy (weights + tokenizer).

    export_policy(run_dir, policy, tok)                 # then AutoModelForCausalLM.from_pretrained(...)
    export_policy(run_dir, policy, tok, weights=path)   # weights: a file of the policy's tensors, linked in
    save_config(policy, folder)                         # config.json (+ generation_config.json) alone

Written aside under a temporary name, then renamed into place: a kill never leaves a half-written
final policy. With `weights` (a safetensors file of the policy's tensors written as save_pretrained
writes them: weights/publish.py's published versions are) the folder's model.safetensors is a hard link
to that file (a copy where the filesystem has no links) and no tensor is read: the same bytes as
save_pretrained's folder, for any model, sharded (FSDP) ones included.
A LoRA policy (models/lora.py) is written merged or as a peft adapter folder (model.lora.export).
"""

from __future__ import annotations

import copy
import os
import shutil
from typing import Optional

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hpc_rlhf.models import lora
from hpc_rlhf.rundir import HF_WEIGHTS, TMP_MARK, RunDir, remove_tree


def export_policy(
    run_dir: str, policy: PreTrainedModel, tok: PreTrainedTokenizerBase, weights: Optional[str] = None
) -> str:
    """Save `policy` (safetensors; `weights`: that file linked in) and `tok` to RUN_DIR/final/policy,
    replacing any earlier export. Returns the folder."""
    out = RunDir(run_dir).final_policy
    tmp = os.path.join(os.path.dirname(out), f"{TMP_MARK}{os.path.basename(out)}-{os.getpid()}")
    if lora.is_lora(policy):  # merged or an adapter folder, as model.lora.export says
        lora.export(policy, tok, tmp)
    elif weights is not None:
        save_config(policy, tmp)
        link_or_copy(weights, os.path.join(tmp, HF_WEIGHTS))
        tok.save_pretrained(tmp)
    else:
        policy.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    remove_tree(out)
    os.replace(tmp, out)
    return out


def save_config(policy: PreTrainedModel, folder: str) -> None:
    """The config files save_pretrained writes beside the weights, the same bytes: config.json with the
    weights' dtype and the model's class (FSDP's wrapper class named as its model), and
    generation_config.json for a model that generates."""
    os.makedirs(folder, exist_ok=True)
    config = copy.deepcopy(policy.config)  # save_pretrained sets these on the model's own; a copy here
    config.dtype = str(policy.dtype).split(".")[1]
    config.architectures = [type(policy).__name__.removeprefix("FSDP")]
    config.save_pretrained(folder)
    if policy.can_generate():
        policy.generation_config.save_pretrained(folder)


def link_or_copy(src: str, dst: str) -> None:
    """`dst` becomes a hard link to `src` (no bytes copied), or a copy where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
