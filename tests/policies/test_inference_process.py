"""Async chunk inference served by a child process: the same actions as the thread worker, seeds followed across
episodes, and failures (a bad checkpoint, a killed child, a policy without a checkpoint) reported, never hung on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from policy_helpers import tiny_policy
from test_scheduler import obs_at, wait_for_delivery

from robot_rl.errors import UserError
from robot_rl.policies import ChunkPolicy, ChunkScheduler, PolicyModel, PolicySpec, load_policy, save_policy

STATE_DIM, ACTION_DIM = 3, 2


@pytest.fixture(scope="module")
def diffusion_checkpoint(tmp_path_factory) -> Path:
    """An untrained diffusion policy: its chunks depend on the observation and on the sampling noise. Rate 0: the
    scheduler counts inference latency in steps, not seconds, so both workers request chunks at the same steps."""
    config = tiny_policy("diffusion", horizon=8, n_action_steps=4)
    spec = PolicySpec(obs_keys=("state",), action_dim=ACTION_DIM, horizon=8, n_obs_steps=2, rate_hz=0.0,
                      task="PointReach", obs_shapes={"state": (STATE_DIM,)}, n_action_steps=4, kind="diffusion")
    torch.manual_seed(0)
    return save_policy(tmp_path_factory.mktemp("ckpt") / "policy.safetensors", PolicyModel(spec, config))


def run_episodes(scheduler: ChunkScheduler, seeds: list[int], steps: int) -> list[tuple[np.ndarray, dict]]:
    executed = []
    for seed in seeds:
        scheduler.reset(seed)
        for t in range(steps):
            executed.append(scheduler.step(obs_at(t)))
            wait_for_delivery(scheduler)
    return executed


def test_process_inference_executes_the_same_actions_as_the_thread(diffusion_checkpoint: Path):
    seeds = [3, 4]
    with ChunkScheduler(load_policy(diffusion_checkpoint), mode="async") as threaded:
        expected = run_episodes(threaded, seeds, 20)
    with ChunkScheduler(load_policy(diffusion_checkpoint), mode="async", inference="process") as served:
        assert served.worker.pid != os.getpid()
        got = run_episodes(served, seeds, 20)
    assert [info for _, info in got] == [info for _, info in expected]
    np.testing.assert_array_equal(np.stack([a for a, _ in got]), np.stack([a for a, _ in expected]))
    # the seeds matter: the two episodes' actions differ although their observations are the same
    assert not np.array_equal(got[0][0], got[20][0])


def test_a_killed_inference_process_is_an_error_on_the_next_step(diffusion_checkpoint: Path):
    with ChunkScheduler(load_policy(diffusion_checkpoint), mode="async", inference="process") as scheduler:
        scheduler.step(obs_at(0))
        os.kill(scheduler.worker.pid, signal.SIGKILL)
        scheduler.worker.process.wait()
        with pytest.raises(RuntimeError, match="inference process"):
            for t in range(1, 40):
                scheduler.step(obs_at(t))
                wait_for_delivery(scheduler)


def test_process_inference_needs_a_loadable_checkpoint(tmp_path: Path, diffusion_checkpoint: Path):
    policy = load_policy(diffusion_checkpoint)
    policy.checkpoint = None
    with pytest.raises(UserError, match="inference=thread"):
        ChunkScheduler(policy, mode="async", inference="process")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(diffusion_checkpoint.read_bytes()[:200])
    policy.checkpoint = str(truncated)
    with pytest.raises(UserError, match="did not start.*truncated"):
        ChunkScheduler(policy, mode="async", inference="process")
    with pytest.raises(UserError, match="inference"):
        ChunkScheduler(ChunkPolicy(PolicyModel(policy.spec, policy.config)), mode="async", inference="cloud")


@pytest.mark.skipif(os.geteuid() != 0, reason="real-time scheduling needs root or CAP_SYS_NICE")
def test_a_real_time_actor_serves_inference_at_normal_scheduling(diffusion_checkpoint: Path):
    """The actor runs SCHED_FIFO; a 30 ms denoising loop at that priority would starve the rest of the machine."""
    probe = f"""
import json, os
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))
from robot_rl.policies.inference_process import InferenceProcess
worker = InferenceProcess({str(diffusion_checkpoint)!r}, nice=2)
tasks = [int(t) for t in os.listdir(f"/proc/{{worker.pid}}/task")]
print(json.dumps([[os.sched_getscheduler(t), os.getpriority(os.PRIO_PROCESS, t)] for t in tasks]))
worker.close()
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    threads = {tuple(t) for t in json.loads(out.strip().splitlines()[-1])}
    assert threads == {(os.SCHED_OTHER, os.getpriority(os.PRIO_PROCESS, 0) + 2)}
