"""The actor node: hot swap of verified residual weights, and a diffusion base through the async chunk scheduler."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hw_helpers import GATE_CALLS, LIMITS, NAMES, STATE_DIM, Rig, spec, tiny_weights

from hw import topics
from hw.msgs import Header, JointState, String, stamp_of
from hw.transport import LATCHED
from hw.weights import Announcement, ResidualPolicy, WeightsError, load_weights


class Feeder:
    """Plays the robot: one observation tick (joint states + task state) per call, on the rig's bus."""

    def __init__(self, rig: Rig):
        self.rig, self.t = rig, 0
        self.js = rig.publisher(topics.JOINT_STATES, JointState)
        self.task = rig.publisher(topics.TASK_STATE, JointState)

    def tick(self) -> None:
        self.t += 1
        header = Header(stamp=stamp_of(100.0 + 0.05 * self.t))
        rng = np.random.default_rng(self.t)
        self.task.publish(JointState(header=header, name=[f"v{i}" for i in range(STATE_DIM - 8)],
                                     position=rng.uniform(-0.2, 0.2, STATE_DIM - 8).tolist()))
        self.js.publish(JointState(header=header, name=NAMES, position=[0.1, 0.5, -1.0, -0.5],
                                   velocity=[0.0] * 4))
        self.rig.bus.deliver()

    def until(self, condition, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            self.tick()
            time.sleep(0.02)  # real time for the loader thread
        return condition()


def test_actor_hot_swaps_verified_weights_and_keeps_them_through_bad_ones(tmp_path):
    GATE_CALLS.clear()
    rig = Rig()
    actor = rig.add(spec("actor", gate="hw_helpers:refuse_version_4", stochastic=False))
    feed = Feeder(rig)
    announce = rig.publisher(topics.WEIGHTS, String, LATCHED)
    feed.tick()
    assert rig.infos[-1].weights_version == 0 and np.all(rig.infos[-1].residual == 0)  # the base alone

    good, residual = tiny_weights(tmp_path, 1, mean_bias=0.5)
    announce.publish(good.to_msg())
    assert feed.until(lambda: rig.infos[-1].weights_version == 1)
    np.testing.assert_allclose(rig.infos[-1].residual, residual, rtol=1e-5)
    np.testing.assert_allclose(rig.infos[-1].proposal, np.clip(rig.infos[-1].base + residual, -1, 1), atol=1e-12)

    v2, _ = tiny_weights(tmp_path, 2, mean_bias=-0.5)
    announce.publish(Announcement(2, v2.path, "0" * 64).to_msg())  # a hash that does not match the file
    feed.tick()  # announcements are latched keep-last-1: only the newest one waits for a late reader
    v3, _ = tiny_weights(tmp_path, 3, mean_bias=-0.5)
    data = bytearray(Path(v3.path).read_bytes())
    data[-1] ^= 0xFF  # the file changed after it was announced
    Path(v3.path).write_bytes(bytes(data))
    announce.publish(v3.to_msg())
    feed.tick()
    v4, _ = tiny_weights(tmp_path, 4, mean_bias=-0.5)
    announce.publish(v4.to_msg())  # the gate refuses it
    feed.tick()
    announce.publish(Announcement(5, str(tmp_path / "gone.msgpack"), "0" * 64).to_msg())
    assert feed.until(lambda: sum(actor.loader.counts.values()) >= 5)
    assert actor.loader.counts == {"weights_loaded": 1, "weights_rejected_hash": 2, "weights_rejected_gate": 1,
                                   "weights_rejected_unreadable": 1}
    assert GATE_CALLS == [1, 4]
    feed.tick()
    assert rig.infos[-1].weights_version == 1  # still the last good weights
    np.testing.assert_allclose(rig.infos[-1].residual, residual, rtol=1e-5)

    v6, residual6 = tiny_weights(tmp_path, 6, mean_bias=-0.5)
    announce.publish(v6.to_msg())
    assert feed.until(lambda: rig.infos[-1].weights_version == 6)
    np.testing.assert_allclose(rig.infos[-1].residual, residual6, rtol=1e-5)
    rig.run_until(lambda: rig.status.get("actor", {}).get("weights_version") == 6)
    assert rig.status["actor"]["weights_sha256"] == v6.sha256
    rig.close()


def test_weights_files_are_verified_before_use(tmp_path):
    good, _ = tiny_weights(tmp_path, 1, mean_bias=0.1)
    assert load_weights(good.path, good.sha256).version == 1
    with pytest.raises(WeightsError, match="announced") as bad:
        load_weights(good.path, "f" * 64)
    assert bad.value.reason == "hash"
    sidecar = tmp_path / "residual_v000001.json"
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "obs_dim": 5}))  # a sidecar describing another network
    with pytest.raises(WeightsError) as wrong:
        load_weights(good.path, good.sha256)
    assert wrong.value.reason == "network"


@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_the_robots_exploration_noise_follows_the_recipes_correlation(tmp_path, rho):
    """A stochastic residual on the robot samples as the simulation loop does: AR(1) noise with the recipe's
    `noise_correlation` across the steps of an episode, a fresh draw when an episode starts."""
    good, _ = tiny_weights(tmp_path, 1, mean_bias=0.0, overrides=(f"noise_correlation={rho}",))
    policy = ResidualPolicy(load_weights(good.path, good.sha256), stochastic=True, seed=0)
    state, base = np.zeros(STATE_DIM), np.zeros(len(NAMES))

    def episode(steps: int) -> np.ndarray:
        policy.new_episode()
        return np.arctanh(np.stack([policy(state, base) for _ in range(steps)]) / policy.weights.agent.scale)

    u = episode(400)  # mean 0 (zero bias, zero kernel): u = std * eps, one std for every step
    lag1 = np.mean(u[1:] * u[:-1]) / np.mean(u ** 2)
    assert abs(lag1 - rho) < 0.1
    ends = np.array([episode(2)[0] for _ in range(50)])  # each episode's first step: independent draws
    assert abs(np.mean(ends[1:] * ends[:-1]) / np.mean(ends ** 2)) < 0.3


@pytest.mark.parametrize("inference", ["process", "thread"])
def test_actor_runs_a_diffusion_base_through_the_async_scheduler(tmp_path, inference: str):
    from robot_rl.policies import PolicyConfig, PolicyModel, PolicySpec, save_policy

    config = PolicyConfig(kind="diffusion", horizon=8, n_obs_steps=2, n_action_steps=4, down_dims=(16, 32),
                          n_groups=4, step_embed_dim=16, ddim_steps=3, train_timesteps=20)
    pspec = PolicySpec(obs_keys=("state",), action_dim=4, horizon=8, n_obs_steps=2, rate_hz=20.0, task="PushCube",
                       obs_shapes={"state": (STATE_DIM,)}, n_action_steps=4, kind="diffusion")
    torch.manual_seed(0)
    path = save_policy(tmp_path / "policy.safetensors", PolicyModel(pspec, config))
    rig = Rig()
    actor = rig.add(spec("actor", policy=str(path), scheduler="async", task="PushCube", inference=inference))
    feed = Feeder(rig)
    for _ in range(24):
        feed.tick()
        time.sleep(0.02)
    infos = rig.infos
    assert len(infos) == 24
    ids = [i.chunk_id for i in infos]
    assert ids[0] == 0 and ids == sorted(ids) and ids[-1] >= 2  # chunks follow one another as the steps go on
    for a, b in zip(infos, infos[1:]):  # within a chunk the index advances one step per tick
        assert (b.chunk_index == a.chunk_index + 1) if b.chunk_id == a.chunk_id else b.chunk_index >= 0
    lower, upper = np.array(LIMITS["position_lower"]), np.array(LIMITS["position_upper"])
    for info in infos:
        assert np.all(np.abs(info.proposal) <= 1.0)
    commands = np.array([actor.limits.denormalize(i.proposal) for i in infos])
    assert np.all(commands >= lower) and np.all(commands <= upper)

    episode = rig.publisher(topics.EPISODE, String)
    episode.publish(topics.event_message("start"))
    rig.bus.deliver()
    feed.tick()
    assert rig.infos[-1].chunk_id == 0  # a new episode starts its chunks over
    rig.close()
