"""RUN_DIR/tokenizer: the tokenizer of a run, saved once before any rank (or the archive) reads it.

    save_run_tokenizer(cfg, run_dir)    # launch/prepare.py for every run; a stage run in-process (the demo's RM)

The demo's word-level tokenizer is built when no tokenizer or policy folder is configured; else the configured
one is loaded (a one-line UserError when it cannot be) and saved.
"""

from __future__ import annotations

from hpc_rlhf.config import Config
from hpc_rlhf.rundir import RunDir


def save_run_tokenizer(cfg: Config, run_dir: str) -> None:
    """RUN_DIR/tokenizer: the demo's word-level tokenizer, built once, when no tokenizer or policy folder
    is configured; else the configured one, loaded (a one-line error when it cannot be) and saved."""
    rd = RunDir(run_dir)
    if cfg.task.name == "demo" and not (cfg.model.tokenizer_path or cfg.model.policy_path):
        if not rd.has_tokenizer:
            from hpc_rlhf.demo.task import build_tokenizer

            build_tokenizer(cfg.task.vocab_words, rd.tokenizer)
        return
    from hpc_rlhf.models.build import check_folders, load_tokenizer

    tok = load_tokenizer(cfg, run_dir)
    check_folders(cfg, tok)  # config.json only: a folder that cannot be the policy fails here, not in a rank
    tok.save_pretrained(rd.tokenizer)
