"""Observation-to-command latency as the robot sees it, measured where the loop closes (the sim mirror).

Per control tick the mirror notes when it published `/joint_states`; the first `/robot_command` that arrives after
that, before the next tick's observation, is the command the observation caused (through actor and safety), and its
arrival time minus the publish time is the latency. A tick whose observation got no command before the next one is a
missed deadline. Ticks of a warm-up (process start, first inference) are not counted; times are `perf_counter`.

On a virtual machine the hypervisor can take the CPUs away (steal time): a real-time node then waits too, and no
scheduling inside the machine prevents it. With a `steal_clock` (`robot_rl.scheduling.cpu_steal_seconds`) the
monitor also counts the missed deadlines in runs that saw stolen time, and the ticks that saw any, so a report tells
the graph's misses from the host's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from robot_rl.files import write_json


def _rose(now: float | None, then: float | None) -> bool:
    """Whether the steal clock went up between two readings (False where either is unknown)."""
    return now is not None and then is not None and now > then


class LatencyMonitor:
    def __init__(self, warmup: int = 50, max_ticks: int = 0, steal_clock: Callable[[], float | None] | None = None):
        self.warmup, self.max_ticks, self.steal_clock = warmup, max_ticks, steal_clock
        self.ticks = 0  # observations published (warm-up included)
        self.latencies: list[float] = []
        self.missed = 0
        self.missed_during_steal = 0  # missed deadlines in a run that saw stolen CPU time (needs steal_clock)
        self.steal_ticks = 0  # counted ticks whose period saw the steal clock rise: how common theft is at all
        self._steal: float | None = None
        self._run_missed = 0  # misses of the current run not yet attributed
        self._run_steal: float | None = None  # the steal clock when that run began
        self._since_run = 0  # ticks answered since that run's last miss
        self.tick_times: list[float] = []
        self._published_at: float | None = None
        self._answered = True

    @property
    def counting(self) -> bool:
        return self.ticks > self.warmup

    @property
    def done(self) -> bool:
        return self.max_ticks > 0 and self.measured >= self.max_ticks

    @property
    def measured(self) -> int:
        """Counted ticks whose outcome (answered or missed) is known."""
        return len(self.latencies) + self.missed

    def on_observation(self, now: float) -> None:
        """`now`: when the observation went out. Call it after publishing (the steal clock reads a file)."""
        if self.done:
            return
        steal = self.steal_clock() if self.steal_clock is not None else None
        if self.counting and not self._answered:
            self.missed += 1
            if self._run_missed == 0:
                self._run_steal = self._steal
            self._run_missed, self._since_run = self._run_missed + 1, 0
        elif self._run_missed:
            self._since_run += 1
        if self.counting and _rose(steal, self._steal):
            self.steal_ticks += 1
        self._attribute_run(steal)
        self._steal = steal
        self.ticks += 1
        self._published_at, self._answered = now, False
        if self.counting:
            self.tick_times.append(now)

    def _attribute_run(self, steal: float | None) -> None:
        """A run of missed deadlines counts as stolen when the steal clock rose from the run's start to two ticks
        after its end: a stolen CPU's time is booked when it runs again, often after the run the theft caused."""
        if not self._run_missed:
            return
        if _rose(steal, self._run_steal):
            self.missed_during_steal += self._run_missed
            self._run_missed = 0
        elif self._since_run >= 2:
            self._run_missed = 0

    def on_command(self, now: float) -> None:
        if self._answered or self._published_at is None or self.done:
            return
        self._answered = True
        if self.counting:
            self.latencies.append(now - self._published_at)

    def summary(self) -> dict:
        ms = np.asarray(self.latencies) * 1e3
        times = np.asarray(self.tick_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        pct = lambda q: round(float(np.percentile(ms, q)), 4) if ms.size else None
        return {"obs_to_command_ms_p50": pct(50), "obs_to_command_ms_p99": pct(99),
                "obs_to_command_ms_max": round(float(ms.max()), 4) if ms.size else None,
                "missed_deadlines": self.missed,
                "missed_during_steal": self.missed_during_steal if self.steal_clock is not None else None,
                "ticks_with_steal": self.steal_ticks if self.steal_clock is not None else None,
                "rate_hz": round(float(rate), 3), "steps": self.measured,
                "warmup_steps": min(self.ticks, self.warmup)}

    def write(self, path: str | Path) -> None:
        """Atomically, so a reader polling for the file never sees half of it."""
        write_json(path, self.summary())
