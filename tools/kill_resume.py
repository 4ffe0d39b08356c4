"""Kill a multi-rank run with SIGKILL at random instants, resume it, and check it ends bit-identical.

    python tools/kill_resume.py --cycles 20 --kills 2 --seed 0 --work /tmp/kr

One reference run (uninterrupted) of configs/tiny.yaml with the same code, then N cycles; a cycle starts a fresh run,
SIGKILLs the whole job (the `hpc-rlhf` process, mpiexec, hydra's proxy and every rank) `--kills`
times at seeded-random instants while it trains (a random number of new steps after the attempt
started, plus a random fraction of a step), each time continuing with `hpc-rlhf resume RUN_DIR`, and
finally lets the resume run to the end. A cycle is good when the SHA-256 of final/policy/model.safetensors
equals the reference's, the ledger lists every step once and every prompt once per pass, the rollout
archive verifies clean (no damaged shard, no left-over temporary), every checkpoint is valid, and with eval.every
set the eval lines of metrics.jsonl are the reference's (each evaluation once, the same numbers).
Prints one line per cycle and `M/N cycles ended bit-identical`; exits 0 only when M == N.

The functions are also used by tests/checkpoint/test_ckpt_kill_resume.py. The code under test is the one next to
this script (its runs start in the repository root, which comes first on sys.path): to measure while
the working tree changes, copy hpc_rlhf/, configs/ and tools/ elsewhere and run the copy's script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny.yaml")


def hpc(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpc_rlhf.launch.cli", *args]


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `hpc-rlhf ARGS` to its end; raise with its output when it fails."""
    p = subprocess.run(hpc(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if p.returncode != 0:
        raise RuntimeError(f"hpc-rlhf {' '.join(args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def start(*args: str, log: str | None = None) -> subprocess.Popen:
    """Start `hpc-rlhf ARGS` in a session of its own (output to `log`, or discarded)."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(hpc(*args), stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def final_sha(run_dir: str) -> str:
    return sha256(os.path.join(run_dir, "final", "policy", "model.safetensors"))


# -- processes -----------------------------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, bytes]]:
    """pid -> (ppid, cmdline) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        out[int(name)] = (int(stat[stat.rfind(")") + 2 :].split()[1]), cmd)
    return out


def job_processes(root_pid: int, run_dir: str) -> list[int]:
    """`root_pid` and its descendants (mpiexec, hydra's proxy, the ranks), plus any process whose command
    line names `run_dir` (an mpiexec or rank orphaned by an earlier kill). Ranks first."""
    table = _proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    found, todo = {root_pid}, [root_pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in found:
                found.add(c)
                todo.append(c)
    key = os.path.abspath(run_dir).encode()
    found |= {pid for pid, (_, cmd) in table.items() if key in cmd and pid != os.getpid()}
    found &= set(table) | {root_pid}
    return sorted(found, key=lambda p: (b"hpc_rlhf.launch.worker" not in table.get(p, (0, b""))[1], p))


def kill_job(proc: subprocess.Popen, run_dir: str, timeout: float = 30) -> None:
    """SIGKILL the whole job (every process of it, ranks first) and wait until all are gone."""
    from hpc_rlhf.launch.local import remove_segments, shm_segments

    pids = job_processes(proc.pid, run_dir)
    segments = shm_segments(pids)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=timeout)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and _state(p) not in ("Z", "X", "")]
        if not alive:
            remove_segments(segments)  # MPICH's /dev/shm segments of the killed ranks (RAM) would pile up
            return
        time.sleep(0.05)
    raise RuntimeError(f"processes {alive} survived SIGKILL")


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return s[s.rfind(")") + 2]
    except OSError:
        return ""


def metrics_since(run_dir: str, t0: float) -> list[dict]:
    """metrics.jsonl lines written after time t0 (this attempt's steps)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    out = []
    try:
        with open(path) as f:
            for ln in f:
                try:
                    d = json.loads(ln)
                except ValueError:
                    continue
                if d.get("time_unix", 0) > t0:
                    out.append(d)
    except OSError:
        pass
    return out


def wait_steps(proc: subprocess.Popen, run_dir: str, t0: float, n: int, timeout: float = 300) -> bool:
    """Wait until the attempt started at t0 has logged `n` steps. False when it ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len(metrics_since(run_dir, t0)) >= n:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise TimeoutError(f"{run_dir}: {n} steps not reached in {timeout} s")


# -- checks --------------------------------------------------------------------------------------------
def check_ledger(run_dir: str, total_steps: int, n_prompts: int, samples_per_prompt: int) -> list[str]:
    """Problems of RUN_DIR/ledger.jsonl: each step once, in order; per pass each prompt consumed at most
    once (exactly once in a complete pass), with every one of its samples once."""
    lines = [json.loads(x) for x in open(os.path.join(run_dir, "ledger.jsonl")) if x.strip()]
    problems = []
    steps = [x["step"] for x in lines]
    if steps != list(range(total_steps)):
        problems.append(f"ledger steps {steps} != 0..{total_steps - 1}")
    stream = [(p, s) for x in lines for p, s in zip(x["prompt_index"], x["sample_index"])]
    per_pass = n_prompts * samples_per_prompt
    for start in range(0, len(stream), per_pass):
        chunk = stream[start : start + per_pass]
        pas = start // per_pass
        if len(set(chunk)) != len(chunk):
            problems.append(f"pass {pas}: a (prompt, sample) consumed twice")
        prompts = {p for p, _ in chunk}
        if len(chunk) == per_pass and prompts != set(range(n_prompts)):
            problems.append(f"pass {pas}: {n_prompts - len(prompts)} prompts never consumed")
        for p in prompts:
            if sorted(s for q, s in chunk if q == p) != list(range(samples_per_prompt)):
                problems.append(f"pass {pas}: prompt {p} samples incomplete or repeated")
                break
    return problems


def eval_lines(run_dir: str) -> list[dict]:
    """The eval/* lines of metrics.jsonl (eval.every > 0), in order: step lines carry time_unix, eval lines do not."""
    rows = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl")) if x.strip()]
    return [r for r in rows if "time_unix" not in r]


def check_run(
    run_dir: str, total_steps: int, ref_sha: str, n_prompts: int = 64, samples: int = 2, ref_evals: list | None = None
) -> list[str]:
    """Everything a good cycle must satisfy (see the module doc); [] when all hold."""
    from hpc_rlhf.archive import Archive
    from hpc_rlhf.archive.verify import verify
    from hpc_rlhf.checkpoint.store import list_checkpoints

    problems = []
    got = final_sha(run_dir)
    if got != ref_sha:
        problems.append(f"final weights sha256 {got[:16]} != reference {ref_sha[:16]}")
    problems += check_ledger(run_dir, total_steps, n_prompts, samples)
    rows = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl")) if x.strip()]
    metric_steps = [r["step"] for r in rows if "time_unix" in r]  # step lines (eval lines carry eval/* only)
    if metric_steps != list(range(total_steps)):
        problems.append(f"metrics steps {metric_steps}")
    if ref_evals is not None and eval_lines(run_dir) != ref_evals:  # the same evaluations, once each, same numbers
        problems.append(f"eval series {eval_lines(run_dir)} != reference {ref_evals}")
    rep = verify(Archive.open(run_dir))
    if not rep.ok:
        problems.append(f"archive verify: {rep.problems[:3]}")
    bad = [(c.step, c.problem) for c in list_checkpoints(run_dir) if not c.valid]
    if bad:
        problems.append(f"invalid checkpoints {bad}")
    return problems


# -- one cycle -----------------------------------------------------------------------------------------
def kill_resume_cycle(
    run_dir: str,
    train_args: list[str],
    rng: random.Random,
    kills: int,
    max_steps_before_kill: int = 3,
    max_delay_s: float = 0.2,
    log: str | None = None,
) -> list[dict]:
    """Start `hpc-rlhf train TRAIN_ARGS run_dir=RUN_DIR`, SIGKILL it `kills` times at random instants while
    it trains, resuming each time, then resume to the end. Returns what happened per attempt."""
    events = []
    for k in range(kills + 1):
        t0 = time.time()
        if k == 0:
            proc = start("train", *train_args, f"run_dir={run_dir}", log=log)
        else:
            proc = start("resume", run_dir, log=log)
        if k == kills:
            code = proc.wait(timeout=600)
            events.append({"attempt": k, "killed": False, "exit": code})
            if code != 0:
                raise RuntimeError(f"final resume of {run_dir} exited {code} (log: {log})")
            break
        n = rng.randint(1, max_steps_before_kill)
        delay = rng.uniform(0.0, max_delay_s)
        reached = wait_steps(proc, run_dir, t0, n)
        if reached:
            time.sleep(delay)
        done = len(metrics_since(run_dir, t0))
        alive = proc.poll() is None
        kill_job(proc, run_dir)
        event = {"attempt": k, "killed": alive, "after_steps": done, "delay_s": round(delay, 3)}
        if not alive:  # it reached the end (or failed) before the kill instant
            event["exit"] = proc.returncode
        events.append(event)
    return events


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--kills", type=int, default=2, help="SIGKILLs per cycle (each followed by a resume)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/hpc_rlhf_kill_resume")
    ap.add_argument("--steps", type=int, default=12, help="total_steps of the tiny run")
    ap.add_argument("--every", type=int, default=2, help="checkpoint.every_steps")
    ap.add_argument("--layout", default="1+1+1", help="generate+score+train ranks")
    ap.add_argument("--rm", default=None, help="folder of an existing `hpc-rlhf train-rm` run (else trained)")
    ap.add_argument("--set", nargs="*", default=[], help="more config overrides, e.g. max_policy_lag=1")
    args = ap.parse_args(argv)

    os.makedirs(args.work, exist_ok=True)
    rm = args.rm or os.path.join(args.work, "rm")
    if not os.path.exists(os.path.join(rm, "reward_model")):
        run("train-rm", TINY, f"run_dir={rm}")
    g, s, t = args.layout.split("+")
    train_args = [
        TINY,
        f"model.reward_path={rm}/reward_model",
        f"model.tokenizer_path={rm}/tokenizer",
        f"total_steps={args.steps}",
        f"checkpoint.every_steps={args.every}",
        f"layout.generate={g}",
        f"layout.score={s}",
        f"layout.train={t}",
        *args.set,
    ]
    ref = os.path.join(args.work, "reference")  # always rerun: the code may have changed since the last time
    subprocess.run(["rm", "-rf", ref], check=True)
    run("train", *train_args, f"run_dir={ref}")
    ref_sha = final_sha(ref)
    print(f"reference {ref}: sha256 {ref_sha}", flush=True)

    good = 0
    t_all = time.monotonic()
    for c in range(args.cycles):
        run_dir = os.path.join(args.work, f"cycle_{c:03d}")
        subprocess.run(["rm", "-rf", run_dir], check=True)
        rng = random.Random(args.seed * 100003 + c)
        t0 = time.monotonic()
        try:
            events = kill_resume_cycle(run_dir, train_args, rng, args.kills, log=run_dir + ".log")
            problems = check_run(run_dir, args.steps, ref_sha, ref_evals=eval_lines(ref))
        except Exception as e:  # noqa: BLE001 - report the cycle as failed and go on
            events, problems = [], [f"{type(e).__name__}: {str(e)[:500]}"]
        good += not problems
        kills = ", ".join(
            f"killed after {e['after_steps']} steps +{e['delay_s']}s"
            if e.get("killed")
            else (f"ended before its kill (exit {e['exit']})" if "after_steps" in e else f"exit {e['exit']}")
            for e in events
        )
        verdict = "bit-identical" if not problems else "FAILED: " + "; ".join(problems)
        print(f"cycle {c:3d} ({time.monotonic() - t0:5.1f} s): {kills} -> {verdict}", flush=True)
    print(
        f"{good}/{args.cycles} cycles ended bit-identical ({args.kills} SIGKILLs each, layout {args.layout}, "
        f"{args.steps} steps, checkpoint every {args.every}{' ' + ' '.join(args.set) if args.set else ''}; "
        f"{time.monotonic() - t_all:.0f} s)",
        flush=True,
    )
    return 0 if good == args.cycles else 1


if __name__ == "__main__":
    sys.exit(main())
