"""The chunk scheduler: which action of which chunk runs at each step, and async steps never wait on inference."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from policy_helpers import tiny_policy

from robot_rl.errors import UserError
from robot_rl.policies import ChunkPolicy, ChunkScheduler, PolicyModel, PolicySpec
from robot_rl.policies.batched import BatchedChunkPolicy

STATE_DIM, ACTION_DIM = 3, 2


def bc_policy(horizon: int = 8, n_action_steps: int = 4) -> ChunkPolicy:
    """An untrained BC-MLP: deterministic, fast, and its chunks depend on the observation."""
    config = tiny_policy("bc", horizon=horizon, n_action_steps=n_action_steps)
    spec = PolicySpec(obs_keys=("state",), action_dim=ACTION_DIM, horizon=horizon, n_obs_steps=2, rate_hz=20.0,
                      task="PointReach", obs_shapes={"state": (STATE_DIM,)}, n_action_steps=n_action_steps,
                      kind="bc")
    torch.manual_seed(0)
    return ChunkPolicy(PolicyModel(spec, config))


def obs_at(step: int) -> dict[str, np.ndarray]:
    return {"state": np.array([np.sin(step), np.cos(step), step / 10], np.float32)}


def test_open_loop_executes_n_action_steps_of_each_chunk_in_order():
    policy = bc_policy(horizon=8, n_action_steps=3)
    reference = bc_policy(horizon=8, n_action_steps=3)
    scheduler = ChunkScheduler(policy, mode="open_loop")
    for t in range(10):
        reference.observe(obs_at(t))
        if t % 3 == 0:
            expected_chunk = reference.predict(reference.obs_history())
        action, info = scheduler.step(obs_at(t))
        assert (info["chunk_id"], info["chunk_index"]) == (t // 3, t % 3)
        np.testing.assert_array_equal(action, expected_chunk[t % 3])


def test_reset_starts_chunk_ids_and_history_over():
    scheduler = ChunkScheduler(bc_policy(), mode="open_loop")
    first = [scheduler.step(obs_at(t))[0] for t in range(6)]
    scheduler.reset()
    again = [scheduler.step(obs_at(t)) for t in range(6)]
    assert again[0][1]["chunk_id"] == 0
    np.testing.assert_array_equal(np.stack(first), np.stack([a for a, _ in again]))


def test_ensemble_averages_every_chunk_covering_the_step():
    horizon, decay = 4, 0.5
    scheduler = ChunkScheduler(bc_policy(horizon=horizon), mode="ensemble", ensemble_decay=decay)
    reference = bc_policy(horizon=horizon)
    chunks = []
    for t in range(7):
        reference.observe(obs_at(t))
        chunks.append(reference.predict(reference.obs_history()))
        action, info = scheduler.step(obs_at(t))
        covering = [chunks[s][t - s] for s in range(max(0, t - horizon + 1), t + 1)]  # oldest first
        weights = np.exp(-decay * np.arange(len(covering)))
        np.testing.assert_allclose(action, (weights[:, None] * np.stack(covering)).sum(0) / weights.sum(), rtol=1e-5)
        assert info["chunk_id"] == t and info["ensembled"] == len(covering)


def wait_for_delivery(scheduler: ChunkScheduler) -> None:
    """Test harness: let an in-flight inference hand its chunk over before the next control step, as a real-time
    loop does between ticks (a bare Python loop would otherwise outrun the worker thread)."""
    deadline = time.monotonic() + 20.0
    while scheduler.pending is not None and scheduler.worker.results.empty() and time.monotonic() < deadline:
        time.sleep(0.0005)


class GatedPolicy(ChunkPolicy):
    """A real policy whose inferences (after the first) finish only when the test opens a gate.

    The test opens it once the control loop has run `gate` steps past the request. If a scheduler step ever waited
    for inference, the loop could not reach that point, the inference would time out, and the test fails: it
    counts steps, not seconds.
    """

    def __init__(self) -> None:
        super().__init__(bc_policy(horizon=8, n_action_steps=4).model)
        self.gate = threading.Semaphore(0)
        self.calls = 0
        self.timed_out = False

    def predict(self, obs_history: dict[str, np.ndarray]) -> np.ndarray:
        self.calls += 1
        if self.calls > 1:  # the first chunk of an episode is waited for by design
            self.timed_out |= not self.gate.acquire(timeout=20.0)
        return super().predict(obs_history)


@pytest.mark.parametrize("gate", [3, 6])
def test_async_steps_never_wait_for_a_slow_inference(gate: int):
    """Inference lasting `gate` control steps: 3 fits within the 4 actions executed per chunk, 6 does not (the
    current chunk then runs out before the next arrives and its last action is held)."""
    steps, horizon = 60, 8
    policy = GatedPolicy()
    infos, requests = [], []
    with ChunkScheduler(policy, mode="async") as scheduler:
        for t in range(steps):
            _, info = scheduler.step(obs_at(t))
            infos.append(info)
            if scheduler.pending is not None and scheduler.pending not in requests:
                requests.append(scheduler.pending)
            if scheduler.pending is not None and t + 1 - scheduler.pending == gate:
                policy.gate.release()
                wait_for_delivery(scheduler)
        policy.gate.release()  # let the last in-flight inference finish so the worker stops promptly
    assert not policy.timed_out, "a scheduler step waited for inference"
    first_step = {}
    for t, info in enumerate(infos):
        first_step.setdefault(info["chunk_id"], (t, info["chunk_index"]))
    assert list(first_step) == list(range(len(first_step))), "chunk ids count up, one chunk at a time"
    assert len(first_step) >= steps // gate - 1, "new chunks kept arriving"
    # each chunk takes over `gate` steps after the observation it was conditioned on, at index `gate`
    assert all(index == gate for _, index in list(first_step.values())[1:])
    assert [t - index for t, index in first_step.values()][1:] == requests[:len(first_step) - 1]
    held = [t for t, info in enumerate(infos) if info["held"]]
    assert all(infos[t]["chunk_index"] == horizon - 1 for t in held)
    assert bool(held) == (gate + gate > horizon)  # a chunk lasts H - gate steps after arriving, the next takes gate


def test_async_actions_are_the_aligned_rows_of_chunks_conditioned_on_their_request_step():
    """The action at step t is row t - s of the chunk inferred from the observation history of step s."""
    policy, reference = bc_policy(), bc_policy()
    histories, executed = [], []
    with ChunkScheduler(policy, mode="async") as scheduler:
        for t in range(40):
            reference.observe(obs_at(t))
            histories.append(reference.obs_history())
            executed.append(scheduler.step(obs_at(t)))
            wait_for_delivery(scheduler)
    assert executed[-1][1]["chunk_id"] >= 5
    for t, (action, info) in enumerate(executed):
        start = t - info["chunk_index"]
        np.testing.assert_array_equal(action, reference.predict(histories[start])[info["chunk_index"]])


def test_scheduler_rejects_bad_settings():
    with pytest.raises(UserError, match="mode"):
        ChunkScheduler(bc_policy(), mode="sometimes")
    with pytest.raises(UserError, match="n_action_steps"):
        ChunkScheduler(bc_policy(horizon=8), n_action_steps=9)


def test_batched_wrappers_sharing_a_policy_keep_their_own_sampling_noise():
    """A run's training and evaluation bases share one diffusion policy: evaluating (which restarts the evaluation
    wrapper's noise) must not change the training wrapper's draws, and each restart replays the same noise."""
    config = tiny_policy("diffusion")
    spec = PolicySpec(obs_keys=("state",), action_dim=ACTION_DIM, horizon=config.horizon, n_obs_steps=2,
                      rate_hz=20.0, task="PointReach", obs_shapes={"state": (STATE_DIM,)}, n_action_steps=1,
                      kind="diffusion")
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyModel(spec, config))
    batch = {"state": np.stack([obs_at(1)["state"], obs_at(2)["state"]])}

    def draws(wrapper: BatchedChunkPolicy, between=lambda: None) -> list[np.ndarray]:
        wrapper.reset()
        out = []
        for _ in range(3):
            out.append(wrapper(batch))
            between()
        return out

    alone = draws(BatchedChunkPolicy(policy, 2, n_action_steps=1))
    assert not np.allclose(alone[0], alone[1])  # the same observations, fresh noise: sampling is stochastic
    evaluation = BatchedChunkPolicy(policy, 2, n_action_steps=1)
    first_eval = draws(evaluation)
    interleaved = draws(BatchedChunkPolicy(policy, 2, n_action_steps=1), between=lambda: draws(evaluation))
    for a, b in zip(alone, interleaved):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first_eval, draws(evaluation)):  # a restart replays the noise: paired evaluations
        np.testing.assert_array_equal(a, b)
