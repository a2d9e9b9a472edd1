"""Process scheduling: every thread of the process follows (not only the main one), real time on and back off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, os, sys, threading, time
from robot_rl.scheduling import set_process_scheduling, thread_ids
stop = threading.Event()
worker = threading.Thread(target=stop.wait)  # a thread that exists before the change, like a BLAS pool
worker.start()
report = []
for nice, realtime in json.loads(sys.argv[1]):
    set_process_scheduling(nice, realtime)
    report.append([[os.getpriority(os.PRIO_PROCESS, t), os.sched_getscheduler(t)] for t in thread_ids()])
stop.set()
print(json.dumps(report))
"""


def probe(steps: list[tuple[int, int | None]]) -> list[set[tuple[int, int]]]:
    """Run the steps in a fresh process; per step, the set of (niceness, policy) over its threads."""
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(steps)], capture_output=True, text=True,
                         check=True).stdout
    return [{tuple(t) for t in threads} for threads in json.loads(out)]


def test_nice_applies_to_threads_started_before_the_change():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    (after,) = probe([(3, None)])
    assert after == {(base + 3, os.SCHED_OTHER)}


@pytest.mark.skipif(os.geteuid() != 0, reason="real-time scheduling needs root or CAP_SYS_NICE")
def test_realtime_on_every_thread_and_back_to_time_sharing():
    """What a real-time actor and its chunk inference process do: FIFO for the node, normal for the child."""
    fifo, normal = probe([(0, 7), (0, 0)])
    assert {policy for _, policy in fifo} == {os.SCHED_FIFO}
    assert {policy for _, policy in normal} == {os.SCHED_OTHER}


def test_bad_priority_is_refused():
    from robot_rl.scheduling import set_process_scheduling

    with pytest.raises(ValueError, match="outside"):
        set_process_scheduling(0, 120)
