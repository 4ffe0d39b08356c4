"""The trained policy as a Hugging Face folder: RUN_DIR/final/policy (weights + tokenizer).

    export_policy(run_dir, policy, tok)   # then AutoModelForCausalLM.from_pretrained(RUN_DIR/final/policy)

Written aside under a temporary name, then renamed into place: a kill never leaves a half-written
final policy.
A LoRA policy (models/lora.py) is written merged or as a peft adapter folder (model.lora.export).
"""

from __future__ import annotations

import os

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hpc_rlhf.models import lora
from hpc_rlhf.rundir import TMP_MARK, RunDir, remove_tree


def export_policy(run_dir: str, policy: PreTrainedModel, tok: PreTrainedTokenizerBase) -> str:
    """Save `policy` (safetensors) and `tok` to RUN_DIR/final/policy, replacing any earlier export.
    Returns the folder."""
    out = RunDir(run_dir).final_policy
    tmp = os.path.join(os.path.dirname(out), f"{TMP_MARK}{os.path.basename(out)}-{os.getpid()}")
    if lora.is_lora(policy):  # merged or an adapter folder, as model.lora.export says
        lora.export(policy, tok, tmp)
    else:
        policy.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    remove_tree(out)
    os.replace(tmp, out)
    return out
