"""Start node specs as processes over Cyclone DDS (what `robot-rl hw up` does without ROS 2), and stop them.

Each node is its own process running `hw.graph.node_command(spec)`; a crash of one leaves the others running
(the safety node holds when its inputs go silent). Stopping sends SIGINT so nodes close cleanly, then kills
whatever is left after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from hw.graph import NodeSpec, check_entries, node_command


def start_node(spec: NodeSpec, domain_id: int, loopback: bool = False, log_dir: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen:
    """One node process on DDS domain `domain_id`; its output goes to `log_dir/<name>.log` when given."""
    cmd = node_command(spec, "dds") + ["--domain-id", str(domain_id)] + (["--loopback"] if loopback else [])
    out = open(Path(log_dir) / f"{spec.name}.log", "w") if log_dir is not None else None  # noqa: SIM115
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None,
                                env={**os.environ, **(env or {})})
    finally:
        if out is not None:
            out.close()  # the child holds its own descriptor


def start_graph(specs: list[NodeSpec], domain_id: int, loopback: bool = False,
                log_dir: Path | None = None) -> dict[str, subprocess.Popen]:
    """Every spec as a process, after checking that every node class imports."""
    check_entries(specs)
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
    return {spec.name: start_node(spec, domain_id, loopback, log_dir) for spec in specs}


def stop(processes: dict[str, subprocess.Popen] | list[subprocess.Popen], grace_s: float = 5.0) -> dict[str, int]:
    """SIGINT every process, wait up to `grace_s` for all, kill the rest; returns the exit codes."""
    procs = processes if isinstance(processes, dict) else {str(p.pid): p for p in processes}
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {name: proc.returncode for name, proc in procs.items()}
