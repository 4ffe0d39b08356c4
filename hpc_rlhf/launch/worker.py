"""One MPI rank of a run: `python -m hpc_rlhf.launch.worker RUN_DIR` (what mpiexec/srun start).

Reads RUN_DIR/config.yaml, finds the nodes (cluster/nodes.py: every node must see the same RUN_DIR; rank 0
logs hosts and clocks), its role from the world size, the layout and `placement.*` (stage=sft or rm: every
rank runs that stage, stages/), its device (GPU <local rank>), resumes from the latest checkpoint, and runs its
role loop. Exit status: 0 = run finished; runtime.requeue_exit_code
(75) = stopped by a signal after a checkpoint, requeue me; 1 = this rank failed: it prints its rank,
role and error, then aborts the whole MPI world so no rank is left waiting.

The stop-signal handlers (SIGUSR2, SIGTERM, SIGINT -> a flag) are installed before torch is imported,
so a signal during the seconds of start-up is not fatal. Each rank records its pid, host and role in
RUN_DIR/.ranks/rank_RRRRR.json at start and rank_RRRRR.exit just before it leaves (or aborts): the
local launcher names a rank that vanished without an exit note as dead (SIGKILL, OOM killer).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
import uuid

from hpc_rlhf.cluster.ranks import note_exit, register_rank
from hpc_rlhf.cluster.start_watchdog import StartWatchdog
from hpc_rlhf.config.schema import RuntimeConfig
from hpc_rlhf.launch.orphans import watch_launcher
from hpc_rlhf.launch.signals import StopFlag
from hpc_rlhf.rundir import RunDir


def _threads(cfg, comm) -> int:
    if cfg.runtime.torch_threads > 0:
        return cfg.runtime.torch_threads
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    return max(1, len(os.sched_getaffinity(0)) // local)


@dataclasses.dataclass
class _Attempt:
    """What this rank knows of itself so far (its failure report names the role once it has one)."""

    rank: int
    token: str
    role: str = "?"
    heartbeat: object = None


def main(argv: list[str] | None = None) -> int:
    """Run rank RUN_DIR (argv[0]) of the job; its exit status (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    run_dir = argv[0]
    stop = StopFlag().install()  # first: a stop signal during the imports below only sets the flag
    watch_launcher()  # a local run's rank ends with its launcher, however that dies (launch/orphans.py)
    if not os.path.isfile(RunDir(run_dir).config):  # checked before the seconds of importing torch
        return _missing_run_dir(run_dir)
    import torch  # noqa: F401 - before the config and MPI, as the ranks have always started

    from hpc_rlhf.config import load_config

    cfg = dataclasses.replace(load_config(RunDir(run_dir).config), run_dir=run_dir)
    dog = StartWatchdog(cfg.runtime.start_timeout_s)  # until the heartbeats run (cluster/start_watchdog.py)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if not _world_is_slurms(comm):
        dog.done()
        return 2
    me = _Attempt(comm.Get_rank(), comm.bcast(uuid.uuid4().hex[:12] if comm.Get_rank() == 0 else None, root=0))
    try:
        nodes, topo = _join(cfg, run_dir, comm, me, dog)
        verdict = _run(cfg, run_dir, comm, me, nodes, topo, stop)
    except BaseException as e:  # noqa: BLE001 - any failure must take the whole world down
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        return _fail(e, run_dir, comm, me, dog)
    code = 0 if verdict == "done" else cfg.runtime.requeue_exit_code
    if me.heartbeat is not None:
        me.heartbeat.stop()
    note_exit(run_dir, me.rank, str(code), me.token)
    return code


def _missing_run_dir(run_dir: str) -> int:
    """A node-local run_dir: the submitting host wrote it elsewhere. Say so, and end every rank (exit 2)."""
    import socket

    print(
        f"error: {RunDir(run_dir).config} does not exist on host {socket.gethostname()}: run_dir must be a "
        "prepared run directory every node sees (a shared filesystem, not a node-local path)",
        file=sys.stderr,
        flush=True,
    )
    StartWatchdog(RuntimeConfig.start_timeout_s)  # MPI_Init must not block this task for ever
    from mpi4py import MPI

    MPI.COMM_WORLD.Abort(2)  # ranks on nodes that do see it must not wait for this one
    return 2


def _world_is_slurms(comm) -> bool:
    """Under srun, MPI's world is Slurm's tasks; else srun's --mpi plugin does not match this MPI (said)."""
    ntasks = os.environ.get("SLURM_NTASKS") if os.environ.get("SLURM_STEP_ID") is not None else None
    if ntasks is None or int(ntasks) == comm.Get_size():
        return True
    print(
        f"error: MPI world size {comm.Get_size()} != SLURM_NTASKS {ntasks}: srun's --mpi plugin does not "
        f"match this MPI (use --mpi=pmi2 with MPICH)",
        file=sys.stderr,
    )
    return False


def _join(cfg, run_dir: str, comm, me: _Attempt, dog):
    """Find the nodes and this rank's role, register it and start the heartbeats. Returns (nodes, topology;
    None for a supervised stage, where every rank trains)."""
    from hpc_rlhf.cluster.nodes import NodeMap, check_shared_run_dir
    from hpc_rlhf.cluster.topology import Topology

    nodes = NodeMap.gather(comm)  # which node each rank is on, by MPI itself (cluster/nodes.py)
    if me.rank == 0:
        print(nodes.report(), flush=True)  # hosts and clocks, in the run's log
    if nodes.count > 1:
        check_shared_run_dir(comm, run_dir, nodes, me.token)
    topo = None
    if cfg.stage == "rl":
        topo = Topology.build(comm.Get_size(), cfg.layout, cfg.placement, nodes.node_of_rank)
    me.role = topo.role(me.rank) if topo is not None else cfg.stage  # sft, rm: every rank trains
    register_rank(run_dir, me.rank, me.role, topo.index(me.rank) if topo is not None else me.rank, me.token)
    me.heartbeat = _start_heartbeat(cfg, run_dir, comm, me.role, me.token)
    dog.done()  # from here a lost peer is the heartbeats' to report
    return nodes, topo


def _run(cfg, run_dir: str, comm, me: _Attempt, nodes, topo, stop) -> str:
    """This rank's part of the run on its device: a stage, the whole run in one process, or a role loop."""
    import torch

    from hpc_rlhf.cluster.nodes import local_device

    torch.set_num_threads(_threads(cfg, comm))
    device = local_device(cfg.runtime, nodes, me.rank)  # cuda:<local rank> + set_device, or cpu
    if topo is None:
        return _run_stage(cfg, run_dir, comm, device, stop)
    _render_prompts_once(cfg, run_dir, comm)
    if topo.single:
        from hpc_rlhf.launch.single import run_single

        return run_single(cfg, run_dir, device, stop)
    return _run_role(cfg, run_dir, comm, topo, device, stop)


def _fail(e: BaseException, run_dir: str, comm, me: _Attempt, dog) -> int:
    """Name this rank and its error, then abort the whole MPI world so no rank is left waiting."""
    from hpc_rlhf.cluster.heartbeat import lost_peer
    from hpc_rlhf.errors import UserError, first_line

    dog.done()
    if me.heartbeat is not None and lost_peer(e):  # a peer vanished (e.g. a trainer on another node): the
        me.heartbeat.wait_verdict()  # heartbeats name it, with its host, and end the job (they abort the world)
    line = f"rank {me.rank} ({me.role}) failed: {type(e).__name__}: {first_line(e)}"
    note_exit(run_dir, me.rank, "failed", me.token, line)
    print(f"error: {line}", file=sys.stderr, flush=True)
    if not isinstance(e, UserError):
        traceback.print_exc(file=sys.stderr)
    sys.stderr.flush()
    comm.Abort(1)
    return 1


def _render_prompts_once(cfg, run_dir: str, comm) -> None:
    """A prompt file's set is in RUN_DIR/prompts.h5 before any rank reads it (rollout/prompt_file.py): the
    launcher wrote it; where none did (a recipe's RL stage, a run dir of an earlier version) rank 0 renders
    and writes it while the others wait."""
    from hpc_rlhf.rollout.prompts import FILE_SOURCES

    if cfg.task.name not in FILE_SOURCES:
        return
    if comm.Get_rank() == 0:
        from hpc_rlhf.models.build import load_tokenizer
        from hpc_rlhf.rollout.prompt_file import prompts_sha256, write_prompts
        from hpc_rlhf.rollout.prompts import PromptSet

        if prompts_sha256(run_dir, cfg) is None:
            write_prompts(run_dir, cfg, PromptSet(cfg, load_tokenizer(cfg, run_dir)).flat())
    comm.bcast(None, root=0)  # the others read it after this


def _start_heartbeat(cfg, run_dir: str, comm, role: str, attempt: str):
    """Heartbeats with every other rank (cluster/heartbeat.py); a silent peer ends the job, named. None in a
    world of one or with runtime.heartbeat_timeout_s=0."""
    from hpc_rlhf.cluster.heartbeat import Heartbeat

    rank, world, timeout = comm.Get_rank(), comm.Get_size(), cfg.runtime.heartbeat_timeout_s
    if world == 1 or timeout <= 0:
        return None

    def peer_lost(msg: str) -> None:  # on the heartbeat thread: name the peer, then end the whole job
        print(f"error: rank {rank} ({role}): {msg}; ending the job", file=sys.stderr, flush=True)
        note_exit(run_dir, rank, "failed", attempt, f"rank {rank} ({role}): {msg}")
        job = os.environ.get("SLURM_JOB_ID")
        if job:  # what `hpc-rlhf status` reports once Slurm forgot the job
            from hpc_rlhf.launch.slurm_events import record_event

            record_event(run_dir, "end", job_id=job, status=1, rank=rank, error=msg, via="heartbeat")
        comm.Abort(1)

    return Heartbeat(run_dir, rank, world, timeout, peer_lost, attempt=attempt).start()


def _run_stage(cfg, run_dir: str, comm, device, stop) -> str:
    """A supervised stage (stage=sft or rm, stages/): every rank of the world trains, data-parallel."""
    if comm.Get_size() != cfg.world_size:
        from hpc_rlhf.errors import ConfigError

        raise ConfigError(f"MPI world size {comm.Get_size()} != {cfg.stage}.ranks = {cfg.world_size}")
    if cfg.stage == "sft":
        from hpc_rlhf.stages.sft import run_rank
    else:
        from hpc_rlhf.stages.reward_model import run_rank
    return run_rank(cfg, run_dir, comm, device, stop)


def _run_role(cfg, run_dir: str, comm, topo, device, stop) -> str:
    """This rank's role loop in a world of several ranks; its verdict ('done' or 'stop')."""
    from hpc_rlhf.cluster.control import Control

    rank = comm.Get_rank()
    role = topo.role(rank)
    train_comm = comm.Split(1 if topo.is_trainer(rank) else 0, rank)
    ctl = Control(comm, topo, cfg.runtime.wait_timeout_s, stop)
    start = _agree_start(comm, topo, run_dir)
    start_step = start.step if start else 0
    if role == "generate":
        from hpc_rlhf.roles.generator import run_generator

        verdict = run_generator(cfg, run_dir, topo, ctl, device, start_step)
    elif role == "score":
        from hpc_rlhf.roles.scorer import run_scorer

        verdict = run_scorer(cfg, run_dir, topo, ctl, device, start_step)
    else:
        from hpc_rlhf.roles.trainer_loop import run_trainer

        verdict = run_trainer(cfg, run_dir, topo, ctl, device, train_comm, stop, start)
    ctl.finish(cfg.generate.shards_per_step)  # no message left in flight for MPI_Finalize
    return verdict


def _agree_start(comm, topo, run_dir: str):
    """The checkpoint every rank starts from (None: a fresh start). The train lead finds and verifies
    it (sha256 of every file, warning about newer damaged ones) and tells the others: one verification
    per attempt instead of one per rank, and no rank can pick a different step."""
    info = None
    if comm.Get_rank() == topo.trainer0:
        from hpc_rlhf.checkpoint.store import find_latest

        info = find_latest(run_dir)
    return comm.bcast(info, root=topo.trainer0)


if __name__ == "__main__":
    sys.exit(main())
