"""CPU scheduling of a whole process: niceness and real-time priority for every one of its threads.

Linux schedules threads, not processes: a new thread inherits its creator's settings, but changing the main thread
later leaves the threads already running (BLAS pools started by imports, DDS receive threads) where they were. So
every setting here is applied to each thread listed in /proc/self/task. Used by `hw.run` (a node spec's `nice` and
`realtime`) and by the chunk inference process (which must not inherit the actor's real-time priority).

On a virtual machine no setting here keeps the host from taking a CPU away (steal time): `cpu_steal_seconds` lets
the timing benchmarks report how much it did.
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_steal_seconds() -> float | None:
    """CPU time the hypervisor gave to others while this machine's CPUs were runnable (Linux `/proc/stat`, summed
    over CPUs, in 1/USER_HZ steps); `None` where it is not reported."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def cpu_steal_since(before: float | None) -> float | None:
    """Seconds stolen since `before` (a `cpu_steal_seconds()` reading), to 0.01 s; None where unknown."""
    now = cpu_steal_seconds()
    return None if before is None or now is None else round(now - before, 2)


def thread_ids() -> list[int]:
    """This process's threads (0, meaning the calling thread, where /proc is unavailable)."""
    tasks = Path("/proc/self/task")
    return [int(tid) for tid in os.listdir(tasks)] if tasks.is_dir() else [0]


def set_process_scheduling(nice: int = 0, realtime: int | None = None) -> None:
    """Add `nice` to the process's niceness; `realtime` 1..99 runs it SCHED_FIFO at that priority, 0 back on normal
    time-sharing (SCHED_OTHER), None leaves the policy alone. Raises PermissionError where raising priority is not
    allowed (negative nice or real time without root or CAP_SYS_NICE)."""
    if realtime is not None and not 0 <= realtime <= 99:
        raise ValueError(f"realtime priority {realtime} is outside 0..99")
    threads = thread_ids()
    if realtime is not None and hasattr(os, "sched_setscheduler"):
        policy = os.SCHED_FIFO if realtime > 0 else os.SCHED_OTHER
        for tid in threads:
            os.sched_setscheduler(tid, policy, os.sched_param(realtime))
    if nice:
        target = os.getpriority(os.PRIO_PROCESS, 0) + nice
        for tid in threads:
            os.setpriority(os.PRIO_PROCESS, tid, target)
