"""Token ids -> text with the tokenizer saved in the run directory (transformers is imported lazily, here only)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from hpc_rlhf.errors import first_line
from hpc_rlhf.rundir import TOKENIZER_FILE


def load_tokenizer(path: Optional[str], warn: Optional[Callable[[str], None]] = None) -> Any:
    """A Hugging Face tokenizer from a saved folder, or None (absent or unloadable: callers show ids)."""
    if not path:
        return None
    if not os.path.isdir(path):
        if warn:
            warn(f"tokenizer folder '{path}' does not exist; showing token ids")
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # any failure means: fall back to ids
        tj = os.path.join(path, TOKENIZER_FILE)
        if os.path.isfile(tj):
            try:
                from transformers import PreTrainedTokenizerFast

                return PreTrainedTokenizerFast(tokenizer_file=tj)
            except Exception:
                pass
        if warn:
            msg = first_line(e)
            warn(f"tokenizer at '{path}' could not be loaded ({msg}); showing token ids")
        return None


def ids_text(ids: np.ndarray) -> str:
    return " ".join(str(int(i)) for i in ids)


def decode(tok: Any, ids: np.ndarray) -> str:
    """Decoded text (special tokens kept visible, e.g. EOS), or the ids when there is no tokenizer."""
    if tok is None:
        return ids_text(ids)
    return tok.decode([int(i) for i in ids], skip_special_tokens=False)


def decode_many(tok: Any, flat: np.ndarray, offsets: np.ndarray) -> list[str]:
    rows = [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    if tok is None:
        return [" ".join(map(str, r)) for r in rows]
    return tok.batch_decode(rows, skip_special_tokens=False)
