"""Stop signals -> a flag. The handler only sets it; ranks agree on it at the next step boundary.

SIGUSR2 (Slurm's warning before preemption or the time limit, sent by `--signal` or submitit),
SIGTERM (scancel, preemption) and SIGINT (Ctrl-C) all mean: checkpoint at the next step boundary
and exit with `runtime.requeue_exit_code`.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


class StopFlag:
    def __init__(self) -> None:
        self.why = ""

    def is_set(self) -> bool:
        return bool(self.why)

    def set(self, why: str) -> None:
        self.why = self.why or why

    def install(self, signals=STOP_SIGNALS) -> StopFlag:
        for s in signals:
            signal.signal(s, lambda num, frame: self.set(signal.Signals(num).name))
        return self
