"""The four mirrors behave like robots behind the gymnasium API: checked spaces, determinism, rate, clear errors."""

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim

TASKS = ["Reach", "PushCube", "PickPlace", "BimanualHandover"]


@pytest.mark.filterwarnings("ignore:.*Box observation space m.* value is")  # joint velocities are unbounded
@pytest.mark.parametrize("task", TASKS)
def test_gymnasium_env_checker(task):
    env = gymnasium.make(sim.gym_id(task), cameras=["front"], image_size=32).unwrapped
    check_env(env, skip_render_check=True)
    env.close()


def test_render_returns_the_first_camera_image():
    env = sim.make_env("PickPlace", render_mode="rgb_array", cameras=("wrist",), image_size=16)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.render(), obs["image_wrist"])
    env.close()


def test_importing_sim_registers_every_task():
    assert all(sim.gym_id(task) in gymnasium.registry for task in TASKS)
    env = gymnasium.make("robot_rl/BimanualHandover-v0")
    assert env.action_space.shape[0] >= 14
    env.close()


@pytest.mark.parametrize("task", TASKS)
def test_interface_describes_the_observations_and_actions(task):
    env = sim.make_env(task, cameras=("front",), image_size=(24, 40))
    obs, _ = env.reset(seed=0)
    robot = env.robot
    assert robot.control_hz == 20 and "front" in robot.cameras and "top" in robot.cameras
    assert len(robot.joint_names) == robot.action_dim == env.action_space.shape[0]
    assert {k: (v.shape, str(v.dtype)) for k, v in obs.items()} == {k: (s, d) for k, (s, d) in robot.obs_spec.items()}
    assert obs["image_front"].shape == (24, 40, 3) and obs["image_front"].std() > 1  # a real picture, not blank
    state = obs["state"]
    joints = state[robot.state_slices["joint_pos"]]
    np.testing.assert_allclose(joints, env.data.qpos[env._qpos_adr], atol=1e-6)
    assert np.all(np.abs(robot.normalize(joints)) <= 1)
    env.close()


def test_same_seed_same_trajectory_and_other_seed_differs():
    def rollout(seed):
        env = sim.make_env("PickPlace")
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        states = [obs["state"]]
        for _ in range(15):
            obs, *_ = env.step(rng.uniform(-1, 1, env.robot.action_dim))
            states.append(obs["state"])
        return np.array(states)

    first, again, other = rollout(3), rollout(3), rollout(4)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_control_rate_and_time_limit():
    env = sim.make_env("Reach", max_steps=7, control_hz=10)
    obs, _ = env.reset(seed=0)
    hold = env.robot.normalize(obs["state"][env.robot.state_slices["joint_pos"]])
    for t in range(7):
        obs, reward, terminated, truncated, _ = env.step(hold)
        assert env.data.time == pytest.approx((t + 1) * 0.1)
    assert truncated and not terminated and reward == 0.0


def test_success_gives_reward_one_and_terminates():
    env = sim.make_env("Reach")
    obs, _ = env.reset(seed=0)
    target = obs["state"][env.robot.state_slices["goal_pos"]]
    expert = sim.make_expert("Reach")
    for _ in range(50):
        obs, reward, terminated, truncated, info = env.step(expert.act(obs))
        if terminated:
            break
    tcp = obs["state"][env.robot.state_slices["tcp_pos"]]
    assert terminated and reward == 1.0 and info["is_success"] and np.linalg.norm(tcp - target) < 0.02


def test_absolute_actions_reach_their_joint_targets():
    env = sim.make_env("PushCube")
    env.reset(seed=0)
    action = np.array([0.3, 0.5, -0.2, 0.1])
    for _ in range(30):
        obs, *_ = env.step(action)
    joints = obs["state"][env.robot.state_slices["joint_pos"]]
    np.testing.assert_allclose(env.robot.normalize(joints), action, atol=0.02)


def test_delta_actions_move_the_target_by_delta_scale():
    env = sim.make_env("PushCube", action_mode="delta")
    obs, _ = env.reset(seed=0)
    start = env.robot.normalize(obs["state"][env.robot.state_slices["joint_pos"]])
    step = np.array([1.0, 0.0, 0.0, 0.0])
    for _ in range(3):
        env.step(step)
    for _ in range(30):
        obs, *_ = env.step(np.zeros(4))
    moved = env.robot.normalize(obs["state"][env.robot.state_slices["joint_pos"]]) - start
    np.testing.assert_allclose(moved, 3 * env.robot.delta_scale * step, atol=0.02)


def test_vector_env_steps_all_copies():
    envs = sim.make_vec_env("Reach", 3)
    obs, _ = envs.reset(seed=0)
    assert obs["state"].shape == (3, 14)
    obs, reward, terminated, truncated, _ = envs.step(np.zeros((3, 4), np.float32))
    assert obs["state"].shape == (3, 14) and reward.shape == (3,)
    assert len({tuple(s[-3:]) for s in obs["state"]}) == 3  # each copy drew its own target
    envs.close()


def test_async_vector_env_matches_sync():
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 2, 4)).astype(np.float32)
    results = []
    for mode in ("sync", "async"):
        envs = sim.make_vec_env("PushCube", 2, vectorization_mode=mode)
        envs.reset(seed=5)
        for action in actions:
            obs, *_ = envs.step(action)
        results.append(obs["state"])
        envs.close()
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)


@pytest.mark.parametrize("call, words", [
    (lambda: sim.make_env("Stack"), ["unknown task 'Stack'", "PushCube"]),
    (lambda: sim.make_env("Reach", variant="real_z"), ["unknown variant 'real_z'", "real_a"]),
    (lambda: sim.make_env("Reach", variant={"friction": -1}), ["friction=-1.0", "> 0"]),
    (lambda: sim.make_env("Reach", variant={"stiffness": 2}), ["unknown variant parameter", "friction"]),
    (lambda: sim.make_env("Reach", variant={"latency": 1.5}), ["latency=1.5", "whole number"]),
    (lambda: sim.make_env("Reach", cameras=("side",)), ["unknown camera(s) side", "front"]),
    (lambda: sim.make_env("Reach", action_mode="velocity"), ["action_mode='velocity'", "absolute or delta"]),
    (lambda: sim.make_expert("Reach", fail_prob=2), ["fail_prob=2"]),
    (lambda: sim.make_vec_env("Reach", 2, vectorization_mode="threads"), ["use sync or async"]),
])
def test_bad_settings_raise_one_line_errors(call, words):
    with pytest.raises(sim.SimError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in words)


@pytest.mark.parametrize("action, words", [
    (np.zeros(3), ["shape (3,)", "expects (4,)", "waist"]),
    (np.array([0.0, np.nan, 0.0, 0.0]), ["NaN", "finite"]),
])
def test_bad_actions_raise_one_line_errors(action, words):
    env = sim.make_env("PushCube")
    env.reset(seed=0)
    with pytest.raises(sim.SimError) as info:
        env.step(action)
    assert "\n" not in str(info.value) and all(word in str(info.value) for word in words)
