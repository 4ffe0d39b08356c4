"""Peak resident memory of loading a policy folder the way the roles do (models/build.py).

    PYTHONPATH=$PWD python tools/load_rss.py --work /tmp/load_rss           # writes two ~106M llama folders
    PYTHONPATH=$PWD python tools/load_rss.py --work /tmp/load_rss --old     # the loading before 0.2 (see below)

Writes a random-init llama folder (hidden 768, 8 layers, vocab 32000: 105.8M parameters) once in
bf16 (as real checkpoints ship) and once in fp32, then loads each in a fresh process as the policy
and as the value model (value_init=policy), touches every weight, and prints the peak RSS the load
added over the process after its imports, and the anonymous/file-backed split after loading. `--old`
loads as the code did before: transformers' dtype="auto", then .float(). On the CPU both ways read
the folder through a file mapping (its pages count in RSS while mapped); the fp32 copy is the only
anonymous memory.

Measured with the two commands above (transformers 5.24, torch 2.13 CPU, 2026-11-30), peak RSS the
load added, old -> new: bf16 folder as policy 619 -> 618 MiB, as value 479 -> 477 MiB; fp32 folder
as policy 418 -> 418 MiB, as value 324 -> 325 MiB (404 / 310 MiB of fp32 weights). On the CPU,
transformers' memory-mapped loading already kept one anonymous copy; loading straight into the run
dtype and device matters on a GPU (a bf16 run no longer builds an fp32 CPU copy and an fp32 GPU copy
first), which this tool does not measure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def _make(folder: str, dtype: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from hpc_rlhf.demo.task import build_tokenizer

    conf = AutoConfig.for_model(
        "llama",
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=8,
        num_attention_heads=12,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(conf).to(getattr(torch, dtype)).save_pretrained(folder)
    build_tokenizer(32, folder)


def _status_mib() -> dict[str, float]:
    """This process's memory counters from /proc/self/status, in MiB (VmHWM: peak RSS of this image;
    ru_maxrss would carry the parent's peak across exec)."""
    st = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(st[k].split()[0]) / 1024 for k in ("VmHWM", "RssAnon", "RssFile")}


def _load(folder: str, which: str, old: bool) -> None:
    import torch

    from hpc_rlhf.config import load_config
    from hpc_rlhf.models import build

    tiny = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "tiny.yaml")
    cfg = load_config(tiny, [f"model.policy_path={folder}", "model.value_init=policy"])
    tok = build.load_tokenizer(cfg)
    base = _status_mib()["VmHWM"]
    if old:
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        cls = AutoModelForCausalLM if which == "policy" else AutoModelForSequenceClassification
        model = cls.from_pretrained(folder, local_files_only=True, **({} if which == "policy" else {"num_labels": 1}))
        model = model.float()
    else:
        model = (build.build_policy if which == "policy" else build.build_value)(cfg, tok, torch.device("cpu"))
    with torch.no_grad():
        sum(float(p.sum()) for p in model.parameters())  # touch every weight
    mib = _status_mib()
    peak = mib["VmHWM"]
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print(
        f"{'old' if old else 'new'} {which:6s} {os.path.basename(folder)}: {weights:.0f} MiB of weights, "
        f"load added {peak - base:.0f} MiB of peak RSS (peak {peak:.0f}); after: anon {mib['RssAnon']:.0f} MiB, file {mib['RssFile']:.0f} MiB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--old", action="store_true")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: FOLDER WHICH, in a fresh process
    args = ap.parse_args()
    if args.one:
        return _load(args.one[0], args.one[1], args.old)
    for dtype in ("bfloat16", "float32"):
        folder = os.path.join(args.work, f"llama106m_{dtype}")
        if not os.path.exists(os.path.join(folder, "config.json")):
            _make(folder, dtype)
        for which in ("policy", "value"):
            cmd = [sys.executable, __file__, "--work", args.work, "--one", folder, which] + (
                ["--old"] if args.old else []
            )
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            print(out.stdout.strip())


if __name__ == "__main__":
    main()
