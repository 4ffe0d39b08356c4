"""`hpc-rlhf archive ...`: analyse a run's rollout shards offline (thin wrappers over hpc_rlhf.archive).

    add_subparsers(subparsers)       # registers the `archive` command into a parent argparse parser
    python -m hpc_rlhf.archive summary RUN_DIR      # standalone, same commands

Every handler takes the parsed args and returns an exit code: 0 ok, 1 verify found problems,
2 a user error (bad path, no shards, bad option), printed as one `error: ...` line on stderr.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Optional

from hpc_rlhf.errors import UserError


def _handler(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `... | head`
            return 0

    return run


def _range(text: str) -> tuple[Optional[float], Optional[float]]:
    """'A:B', 'A:', ':B' or 'A' -> inclusive range."""
    if ":" not in text:
        v = float(text)
        return v, v
    a, b = text.split(":", 1)
    return (float(a) if a.strip() else None, float(b) if b.strip() else None)


def _int_range(text: str) -> tuple[Optional[int], Optional[int]]:
    lo, hi = _range(text)
    return (None if lo is None else int(lo), None if hi is None else int(hi))


def _group(text: str) -> tuple[int, int]:
    """'STEP:GROUP' -> (step, group id)."""
    a, _, b = text.partition(":")
    try:
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not STEP:GROUP (e.g. 12:345; group = prompt index, r * 2**32 + prompt index in refill round r)"
        ) from None


def _open(args: argparse.Namespace):
    import os

    from hpc_rlhf.archive.store import Archive
    from hpc_rlhf.rollout.shard import read_attrs

    if os.path.isfile(args.run_dir):  # one file: it must be a shard (a folder may hold other files)
        try:
            read_attrs(args.run_dir)
        except UserError as e:
            why = getattr(e, "reason", str(e))
            raise UserError(
                f"'{args.run_dir}' is not a rollout shard ({why}); give a run directory, a folder of shards or a shard"
            ) from None
    arc = Archive.open(args.run_dir)
    arc.require_shards()
    return arc


def _filters(args: argparse.Namespace) -> dict:
    f = {}
    if getattr(args, "versions_range", None) is not None:
        f["versions"] = args.versions_range
    if getattr(args, "prompts", None):
        f["prompts"] = args.prompts
    if getattr(args, "reward", None) is not None:
        f["rewards"] = args.reward
    return f


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version-range", dest="versions_range", type=_int_range, metavar="A:B",
                   help="policy versions A..B inclusive ('A:', ':B', or one version)")  # fmt: skip
    p.add_argument("--prompt", dest="prompts", type=int, action="append", metavar="I",
                   help="prompt index (repeat for a set)")  # fmt: skip
    p.add_argument("--reward", type=_range, metavar="LO:HI", help="reward range, inclusive (unscored samples drop out)")


def _ngram(args: argparse.Namespace) -> Optional[int]:
    return None if args.no_ngram else args.ngram


@_handler
def cmd_summary(args: argparse.Namespace) -> int:
    from hpc_rlhf.archive import summary as S

    arc = _open(args)
    rows = S.summarize(arc, ngram=_ngram(args), bands=args.bands, **_filters(args))
    out = {"table": S.format_table, "json": S.format_json, "csv": S.format_csv}[args.format](rows)
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    evals = S.summarize_eval(arc) if args.format == "table" else []
    if evals:  # the evaluations' samples (eval.every), apart from the training rollouts
        sys.stdout.write("\neval shards, per evaluated policy version:\n" + S.format_table(evals) + "\n")
    return 0


@_handler
def cmd_show(args: argparse.Namespace) -> int:
    from hpc_rlhf.archive.show import render, select

    arc = _open(args)
    samples = select(
        arc,
        version=args.version,
        prompt=args.prompts,
        top=args.top,
        bottom=args.bottom,
        limit=args.limit,
        rewards=args.reward,
        group=args.group,
    )
    print(render(arc, samples, args.tokenizer, args.group))
    return 0


@_handler
def cmd_export(args: argparse.Namespace) -> int:
    from hpc_rlhf.archive.export import export

    arc = _open(args)
    fields = [f for f in args.fields.split(",") if f] if args.fields else None
    n = export(
        arc,
        args.out,
        args.format,
        tokens=args.tokens,
        text=args.text,
        ngram=args.ngram,
        fields=fields,
        tokenizer_path=args.tokenizer,
        **_filters(args),
    )
    print(f"wrote {n} samples to {args.out}", file=sys.stderr)
    return 0


@_handler
def cmd_plot(args: argparse.Namespace) -> int:
    from hpc_rlhf.archive.plot import plot

    arc = _open(args)
    paths = plot(arc, args.out, versions=args.versions, ngram=_ngram(args), **_filters(args))
    for p in paths:
        print(p)
    return 0


@_handler
def cmd_verify(args: argparse.Namespace) -> int:
    from hpc_rlhf.archive.store import Archive
    from hpc_rlhf.archive.verify import format_report, verify

    arc = Archive.open(args.run_dir)
    if not arc.files and not arc.temporary:
        raise UserError(f"no rollout shards (*.h5) found under '{arc.root}'")
    rep = verify(arc)
    print(format_report(rep, arc.root))
    return 0 if rep.ok else 1


def _show_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", type=int, help="policy version")
    p.add_argument("--prompt", dest="prompts", type=int, action="append", metavar="I",
                   help="prompt index (repeat for a set)")  # fmt: skip
    g = p.add_mutually_exclusive_group()
    g.add_argument("--top", type=int, metavar="K", help="the K highest-reward samples")
    g.add_argument("--bottom", type=int, metavar="K", help="the K lowest-reward samples")
    p.add_argument("--group", type=_group, metavar="STEP:GROUP",
                   help="every sample of one group (a prompt's samples at a step; group id = prompt index, "
                   "r * 2**32 + prompt index in dynamic sampling's refill round r)")  # fmt: skip
    p.add_argument("--limit", type=int, default=5, help="samples shown without --top/--bottom (default 5)")
    p.add_argument("--reward", type=_range, metavar="LO:HI", help="reward range, inclusive")
    p.add_argument("--tokenizer", help="tokenizer folder (default RUN_DIR/tokenizer; ids when absent)")


def add_subparsers(subparsers) -> argparse.ArgumentParser:
    """Register `archive` and its sub-commands on an argparse sub-parsers object; returns its parser."""
    ap = subparsers.add_parser(
        "archive",
        help="analyse a run's rollout shards offline (summary, show, export, plot, verify)",
        description="Analyse a run's rollout archive (RUN_DIR/rollouts, or any folder of *.h5 shards). "
        "Needs no MPI, GPU or model weights.",
    )
    sub = ap.add_subparsers(dest="archive_cmd", metavar="{summary,show,export,plot,verify}")
    sub.required = True

    def common(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("run_dir", metavar="RUN_DIR", help="run directory or folder of *.h5 shards")
        return p

    p = common("summary", "per policy version: reward stats, KL to reference, length, EOS and repetition rates")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format (default table)")
    p.add_argument("--ngram", type=int, default=3, help="n of the repeated n-gram rate (default 3)")
    p.add_argument("--no-ngram", action="store_true", help="skip the repeated n-gram rate (reads no tokens)")
    p.add_argument("--bands", action="store_true", help="add p10/p25/p50/p75/p90 of reward, KL and length")
    _add_filters(p)
    p.set_defaults(func=cmd_summary)

    p = common("show", "decoded prompt and response of chosen samples, with reward")
    _show_options(p)
    p.set_defaults(func=cmd_show)

    p = common("export", "per-sample fields to parquet/csv/jsonl, streamed in chunks")
    p.add_argument("--format", choices=("parquet", "csv", "jsonl"), required=True, help="file format of --out")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--tokens", action="store_true", help="add prompt_tokens and response_tokens")
    p.add_argument("--text", action="store_true", help="add prompt_text and response_text (run tokenizer)")
    p.add_argument("--ngram", type=int, help="add rep_<n>gram and distinct_<n>")
    p.add_argument("--fields", help="comma-separated columns (default: every per-sample field + kl_seq, kl_per_token)")
    p.add_argument("--tokenizer", help="tokenizer folder (default RUN_DIR/tokenizer)")
    _add_filters(p)
    p.set_defaults(func=cmd_export)

    p = common("plot", "PNG figures: reward/KL/length bands per version, reward histograms, reward-hacking signals")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--versions", type=int, nargs="+", help="versions of the reward histograms (default first/middle/last)"
    )
    p.add_argument("--ngram", type=int, default=3, help="n of the repeated n-gram rate (default 3)")
    p.add_argument("--no-ngram", action="store_true", help="skip the repeated n-gram rate")
    _add_filters(p)
    p.set_defaults(func=cmd_plot)

    p = common("verify", "check every shard's schema and checksums; list damaged, partial and temporary files")
    p.set_defaults(func=cmd_verify)
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpc_rlhf.archive")
    sub = parser.add_subparsers(dest="command", metavar="archive")
    sub.required = True
    add_subparsers(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "archive":  # `python -m hpc_rlhf.archive summary RUN` works too
        argv = ["archive", *argv]
    args = parser.parse_args(argv)
    return int(args.func(args))
