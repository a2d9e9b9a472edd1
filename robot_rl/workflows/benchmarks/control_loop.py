"""`robot-rl bench control-loop`: observation-to-command latency of the real node graph, each node its own process.

The sim mirror (at `rate_hz`), the actor (a diffusion base policy through the async chunk scheduler, its chunks
inferred in a child process unless `inference=thread`, plus a residual loaded from a verified weights file, sampled
as while learning), the safety node and the recorder (writing every step to an episode store) run over Cyclone
DDS on loopback, with the shipped graph's process scheduling (`realtime`, `nice` in configs/hw/sim_pushcube.yaml).
The mirror measures, per control step, the time from publishing `/joint_states` to receiving the `/robot_command`
it caused (through actor and safety), and counts the steps whose command did not arrive within the period.
One episode spans the run, so the only blocking inference (the first step of an episode) falls in the warm-up.
Without `policy`, the base is a diffusion policy of the default architecture with untrained weights: inference
costs the same trained or not.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from robot_rl.errors import UserError
from robot_rl.scheduling import cpu_steal_seconds, cpu_steal_since


def _default_policy(path: Path, task: str, state_dim: int, action_dim: int, rate_hz: float) -> Path:
    import torch

    from robot_rl.policies import PolicyConfig, PolicyModel, PolicySpec, save_policy

    config = PolicyConfig()
    spec = PolicySpec(obs_keys=("state",), action_dim=action_dim, horizon=config.horizon,
                      n_obs_steps=config.n_obs_steps, rate_hz=rate_hz, task=task, obs_shapes={"state": (state_dim,)},
                      n_action_steps=config.n_action_steps, kind="diffusion")
    torch.manual_seed(0)
    return save_policy(path, PolicyModel(spec, config), info={"note": "untrained, for latency benchmarks"})


def _initial_residual(directory: Path, recipe: str, state_dim: int, action_dim: int) -> str:
    from hw.weights import write_weights
    from robot_rl.rl.agent import ResidualAgent
    from robot_rl.rl.config import load_recipe

    cfg = load_recipe(recipe)
    state = ResidualAgent(cfg, state_dim, action_dim).init(0)
    return write_weights(directory, 1, cfg, state_dim, action_dim, state.actor).path


def benchmark_control_loop(steps: int = 10_000, rate_hz: float = 50.0, task: str = "PushCube",
                           policy: str | None = None, ddim_steps: int = 0, scheduler: str = "async",
                           recipe: str = "ours", warmup: int = 50, domain_id: int | None = None,
                           directory: str | None = None, inference: str = "process") -> dict:
    import sim
    from hw.graph import NodeSpec, load_graph
    from hw.launcher import start_graph, stop
    from robot_rl.data import EpisodeStore

    if steps < 1 or rate_hz <= 0 or warmup < 0:
        raise UserError("bench control-loop: steps >= 1, rate_hz > 0 and warmup >= 0 please")
    robot = sim.make_env(task).unwrapped.robot
    state_dim, n = robot.obs_spec["state"][0][0], robot.action_dim
    work = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="bench_control_loop_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        policy_path = policy or str(_default_policy(work / "policy.safetensors", task, state_dim, n, rate_hz))
        residual = _initial_residual(work / "weights", recipe, state_dim, n)
        latency_file = work / "latency.json"
        latency_file.unlink(missing_ok=True)
        limits = {"joint_names": list(robot.joint_names), "position_lower": [r[0] for r in robot.joint_ranges],
                  "position_upper": [r[1] for r in robot.joint_ranges]}
        specs = [
            NodeSpec("safety", "hw.nodes.safety:SafetyNode", {
                **limits, "rate_hz": rate_hz, "max_delta": [3.0 / rate_hz] * n, "stale_periods": 2.0}),
            NodeSpec("sim_mirror", "hw.nodes.sim_mirror:SimMirrorNode", {
                **limits, "task": task, "control_hz": rate_hz, "max_steps": warmup + steps + 5,
                "wait_subscribers": 3, "latency_out": str(latency_file), "latency_warmup": warmup,
                "latency_ticks": steps}),
            NodeSpec("actor", "hw.nodes.actor:ActorNode", {
                **limits, "task": task, "policy": policy_path, "scheduler": scheduler, "residual": residual,
                "stochastic": True, "ddim_steps": ddim_steps, "inference": inference}),
            NodeSpec("recorder", "hw.nodes.recorder:RecorderNode", {
                **limits, "task": task, "store": str(work / "store")}),
        ]
        shipped = {s.name: s for s in load_graph("sim_pushcube")}  # the shipped graph's process scheduling
        specs = [replace(s, nice=shipped[s.name].nice, realtime=shipped[s.name].realtime) for s in specs]
        domain = random.SystemRandom().randint(100, 232) if domain_id is None else domain_id
        steal_before = cpu_steal_seconds()
        processes = start_graph(specs, domain, loopback=True, log_dir=work / "logs")
        deadline = time.monotonic() + 180 + 3 * (steps + warmup) / rate_hz
        try:
            while not latency_file.is_file():
                dead = [name for name, proc in processes.items() if proc.poll() is not None]
                if dead or time.monotonic() > deadline:
                    what = f"node(s) {', '.join(dead)} died" if dead else "timed out"
                    raise UserError(f"bench control-loop: {what}; see the logs in {work / 'logs'} "
                                    "(run with dir=DIR to keep them)")
                time.sleep(0.5)
            result = json.loads(latency_file.read_text())
            store_deadline = time.monotonic() + 30  # the run is one episode: wait for the recorder's commit
            recorded = 0
            while time.monotonic() < store_deadline and not recorded:
                time.sleep(0.5)
                if (work / "store" / "zarr.json").is_file():
                    recorded = EpisodeStore.open(work / "store").num_steps
        finally:
            codes = stop(processes, grace_s=15.0)
        steal = cpu_steal_since(steal_before)
        return {**result, "recorded_steps": recorded, "target_rate_hz": rate_hz,
                "base": policy or "diffusion, default architecture, untrained", "scheduler": scheduler,
                "inference": inference, "residual_recipe": recipe, "exit_codes": codes,
                "load_avg_1min": round(os.getloadavg()[0], 2), "cpu_steal_s": steal}
    finally:
        if not directory:
            shutil.rmtree(work, ignore_errors=True)


def run(cfg: DictConfig) -> dict:
    return benchmark_control_loop(int(cfg.steps), float(cfg.rate_hz), str(cfg.task), cfg.policy, int(cfg.ddim_steps),
                                  str(cfg.scheduler), str(cfg.recipe), int(cfg.warmup), cfg.domain_id, cfg.dir,
                                  str(cfg.inference))
