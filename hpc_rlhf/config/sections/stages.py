"""Config sections of the supervised stages: `rm:` (`hpc-rlhf train-rm`) and `sft:` (`hpc-rlhf sft`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class RMConfig:
    pairs_path: Optional[str] = None
    """Preference pairs (JSONL: prompt/chosen/rejected, or HDF5); unset for the demo = synthesise."""
    num_pairs: int = 4096
    """Demo: preference pairs to synthesise."""
    label_noise: float = 0.1
    """Demo: fraction of pairs whose label is flipped."""
    epochs: int = 2
    """Passes over the training pairs."""
    batch_size: int = 64
    """Pairs per optimizer step."""
    lr: float = 1e-3
    """AdamW learning rate."""
    heldout_frac: float = 0.1
    """Fraction of pairs held out for pairwise accuracy."""
    out_dir: Optional[str] = None
    """Where the trained reward model is saved (default RUN_DIR/reward_model)."""
    chat_template: bool = False
    """Render each pair's prompt (a `prompt` string or a `messages` list) with the tokenizer's chat template and
    its generation prompt; false: the prompt text as it is (messages then need the template)."""
    prompt_column: str = "prompt"
    """Table pairs: the column of each pair's prompt, a string or a list of chat messages (messages need
    rm.chat_template=true). A table without it but with a `messages` column uses that one."""
    chosen_column: str = "chosen"
    """Table pairs: the column of the preferred answer (text)."""
    rejected_column: str = "rejected"
    """Table pairs: the column of the other answer (text)."""
    ranks: int = 1
    """MPI ranks of `hpc-rlhf train-rm` (stage=rm), data-parallel: each takes an equal share of every batch."""


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning, `hpc-rlhf sft` (stage=sft): the first stage of the recipe (docs/your_model.md)."""

    data_path: Optional[str] = None
    """Examples: a JSONL/JSON/Parquet/CSV/TSV file or a saved dataset folder (hpc_rlhf/data/tables.py)."""
    prompt_column: str = "prompt"
    """Column of the prompt text (prompt/response data)."""
    response_column: str = "response"
    """Column of the response text the model learns to write (the loss is on its tokens and the EOS only)."""
    messages_column: Optional[str] = None
    """When set: the column of chat conversations (lists of {role, content}) used instead of prompt/response; the
    loss is on the assistant turns' tokens. Needs sft.chat_template=true."""
    chat_template: bool = False
    """Render the prompt with the tokenizer's chat template and its generation prompt, the response appended
    + EOS; false: prompt text (with the tokenizer's BOS if it adds one) + response text + EOS."""
    max_len: int = 512
    """Longest example in tokens: longer ones are cut at the end (of the response); one left with no response
    token is dropped and counted (sft/dropped in the report). With packing: the length of a packed row."""
    packing: bool = False
    """Pack examples (in their shuffled order) into rows of max_len tokens; attention never crosses from one
    example to another (a block-diagonal causal mask, positions restart per example)."""
    epochs: int = 1
    """Passes over the examples."""
    batch_size: int = 8
    """Examples (packing: packed rows) per optimizer step, over all ranks."""
    lr: float = 1e-4
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip (0 = off)."""
    ranks: int = 1
    """MPI ranks, data-parallel: each takes an equal share of every batch; the loss is normalised by the batch's
    global token count, so any number of ranks computes the single-rank update (up to float order)."""
