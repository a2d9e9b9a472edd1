"""Every variant parameter measurably changes the mirror; named variants come from configs/variant/*.yaml."""

import numpy as np
import pytest
import yaml

import sim
from sim.variants import VARIANT_DIR


def cube_slide(friction: float) -> float:
    """Distance a cube launched at 0.6 m/s slides on the table in 0.5 s."""
    env = sim.make_env("PushCube", variant={"friction": friction, "init_spread": 0.0})
    env.reset(seed=0)
    dof = env.model.joint("cube").dofadr[0]
    start = env.data.body("cube").xpos.copy()
    env.data.qvel[dof] = 0.6
    hold = env.robot.normalize(env.data.qpos[env._qpos_adr])
    for _ in range(10):
        env.step(hold)
    return float(np.linalg.norm(env.data.body("cube").xpos[:2] - start[:2]))


def test_lower_friction_lets_the_cube_slide_farther():
    nominal, slippery = cube_slide(1.0), cube_slide(0.5)
    assert slippery > 1.6 * nominal > 0  # sliding distance goes as 1 / friction


def shoulder_step_response(**variant) -> tuple[float, float]:
    """Shoulder progress and speed one control step after a step command, from rest."""
    env = sim.make_env("PushCube", variant={"init_spread": 0.0, **variant})
    obs, _ = env.reset(seed=0)
    action = env.robot.normalize(obs["state"][:4])
    action[1] += 0.3
    start = obs["state"][1]
    obs, *_ = env.step(action)
    return float(obs["state"][1] - start), float(obs["state"][5])


@pytest.mark.parametrize("parameter, value", [("mass", 2.0), ("damping", 2.0), ("gain", 0.5)])
def test_heavier_links_more_damping_and_weaker_servos_slow_the_joints(parameter, value):
    (moved, speed), (moved_changed, speed_changed) = shoulder_step_response(), shoulder_step_response(
        **{parameter: value})
    assert moved > 0.1 and moved_changed < 0.97 * moved  # lags behind the nominal arm after one control step
    assert abs(speed_changed - speed) > 0.1 * abs(speed)  # and is still on its way at a clearly different speed


def joint_trajectory(latency: int) -> np.ndarray:
    env = sim.make_env("PushCube", variant={"latency": latency, "init_spread": 0.0})
    obs, _ = env.reset(seed=0)
    start = env.robot.normalize(obs["state"][:4])
    trajectory = []
    for t in range(8):
        action = start + (0.2 if t >= 1 else 0.0)
        obs, *_ = env.step(action)
        trajectory.append(obs["state"][:4])
    return np.array(trajectory)


def test_latency_delays_the_response_by_whole_control_steps():
    prompt, delayed = joint_trajectory(0), joint_trajectory(2)
    assert np.abs(prompt[1] - prompt[0]).max() > 0.05  # without latency the joints move at once
    np.testing.assert_allclose(delayed[2:], prompt[:-2], atol=1e-5)  # with latency 2, the same motion 2 steps later


def test_obs_noise_perturbs_the_state_with_the_given_std():
    quiet = sim.make_env("PickPlace")
    obs, _ = quiet.reset(seed=0)
    np.testing.assert_array_equal(obs["state"], quiet.state())
    noisy = sim.make_env("PickPlace", variant={"obs_noise": 0.01})
    errors = []
    for seed in range(20):
        obs, _ = noisy.reset(seed=seed)
        errors.append(obs["state"] - noisy.state())
    assert np.std(errors) == pytest.approx(0.01, rel=0.1)


def start_positions(spread: float) -> np.ndarray:
    env = sim.make_env("PickPlace", variant={"init_spread": spread})
    starts = []
    for seed in range(12):
        obs, _ = env.reset(seed=seed)
        starts.append(obs["state"][env.robot.state_slices["cube_pos"]][:2])
    return np.array(starts)


def test_init_spread_scales_the_start_distribution():
    assert np.ptp(start_positions(0.0), axis=0).max() == 0.0
    narrow, wide = start_positions(0.5).std(axis=0), start_positions(1.0).std(axis=0)
    np.testing.assert_allclose(wide, 2 * narrow, rtol=1e-6)  # same draws, scaled about the centre


def test_randomized_samples_every_parameter_per_episode_within_its_ranges():
    ranges = yaml.safe_load((VARIANT_DIR / "randomized.yaml").read_text())
    env = sim.make_env("Reach", variant="randomized")
    drawn = []
    for seed in range(8):
        _, info = env.reset(seed=seed)
        drawn.append(info["variant"])
    for key in sim.PARAMETERS:
        values = [d[key] for d in drawn]
        low, high = ranges[key]
        assert all(low <= v <= high for v in values) and len(set(values)) > 1, key
    assert all(isinstance(d["latency"], int) for d in drawn)
    np.testing.assert_allclose(env.model.dof_damping[env._dof_adr] / sim.make_env("Reach").model.dof_damping[
        env._dof_adr], drawn[-1]["damping"])  # the last draw is the one in force


def test_named_variants_and_overrides():
    assert set(sim.variant_names()) >= {"nominal", "randomized", "real_a", "real_b"}
    real_a = sim.load_variant("real_a")
    assert real_a.params() == {k: v for k, v in yaml.safe_load((VARIANT_DIR / "real_a.yaml").read_text()).items()
                               if k != "name"}
    changed = sim.resolve_variant({"name": "real_a", "friction": 0.6, "mass": real_a.mass})
    assert changed.name == "real_a[friction=0.6]" and changed.friction == 0.6 and changed.gain == real_a.gain
    nominal_but = sim.resolve_variant({"friction": 0.6})
    assert nominal_but.name == "nominal[friction=0.6]" and nominal_but.latency == 0 and nominal_but.mass == 1.0
    fixed = sim.resolve_variant({"name": "randomized", "latency": 1})
    assert fixed.latency == 1 and fixed.friction == (0.6, 1.4)
