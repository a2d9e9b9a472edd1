"""`robot-rl hw up` and `hw node NAME`: the Hydra-composed graph, started and stopped for real."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hw.graph import graph_path
from hw.verb import hw_node
from robot_rl.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def test_hw_up_starts_the_enabled_nodes_and_stops_them_cleanly(tmp_path, domain_id):
    off = [f"hw.nodes.{name}.enabled=false" for name in ("actor", "teleop", "recorder", "learner")]
    result = subprocess.run(
        [sys.executable, "-m", "robot_rl.cli.main", "hw", "up", "duration=4", "loopback=true",
         f"domain_id={domain_id}", f"log_dir={tmp_path / 'logs'}", *off,
         "hw.nodes.sim_mirror.parameters.wait_subscribers=1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["nodes"] == ["safety", "sim_mirror"] and summary["exit_codes"] == {"safety": 0, "sim_mirror": 0}
    assert summary["exited_early"] == [] and (tmp_path / "logs" / "sim_mirror.log").is_file()


def test_hw_node_runs_one_node_of_the_graph(domain_id):
    graph = OmegaConf.to_container(OmegaConf.load(graph_path("sim_pushcube")), resolve=True)
    assert hw_node(graph, "safety", domain_id=domain_id, loopback=True, duration=0.5)["node"] == "safety"
    with pytest.raises(UserError, match="no enabled node 'nope'"):
        hw_node(graph, "nope")


def test_hw_verb_rejects_a_missing_action():
    result = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "hw"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 2 and "hw up" in result.stderr and len(result.stderr.strip().splitlines()) == 1
