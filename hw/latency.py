"""Observation-to-command latency as the robot sees it, measured where the loop closes (the sim mirror).

Per control tick the mirror notes when it published `/joint_states`; the first `/robot_command` that arrives after
that, before the next tick's observation, is the command the observation caused (through actor and safety), and its
arrival time minus the publish time is the latency. A tick whose observation got no command before the next one is a
missed deadline. Ticks of a warm-up (process start, first inference) are not counted; times are `perf_counter`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


class LatencyMonitor:
    def __init__(self, warmup: int = 50, max_ticks: int = 0):
        self.warmup, self.max_ticks = warmup, max_ticks
        self.ticks = 0  # observations published (warm-up included)
        self.latencies: list[float] = []
        self.missed = 0
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
        if self.done:
            return
        if self.counting and not self._answered:
            self.missed += 1
        self.ticks += 1
        self._published_at, self._answered = now, False
        if self.counting:
            self.tick_times.append(now)

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
                "missed_deadlines": self.missed, "rate_hz": round(float(rate), 3), "steps": self.measured,
                "warmup_steps": min(self.ticks, self.warmup)}

    def write(self, path: str | Path) -> None:
        """Atomically, so a reader polling for the file never sees half of it."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.summary()))
        os.replace(tmp, path)
