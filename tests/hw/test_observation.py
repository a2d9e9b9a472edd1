"""Joining a tick's messages into one observation, the normalized <-> joint-target map, and the safety node's
episode start (the rate limit counts from where the robot is, never from a stale target)."""

import numpy as np

from hw.msgs import Header, JointState, stamp_of
from hw.observation import JointLimits, ObservationAssembler, task_state_names
from hw.policy_info import PolicyInfo
from hw.safety import SafetyFilter, SafetyParams

NAMES = ["a", "b"]


def js(t: float, q, names=NAMES) -> JointState:
    return JointState(header=Header(stamp=stamp_of(t)), name=list(names), position=list(q), velocity=[0.0] * len(q))


def task(t: float, values) -> JointState:
    return JointState(header=Header(stamp=stamp_of(t)), name=[f"v/{i}" for i in range(len(values))],
                      position=list(values))


def test_parts_of_a_tick_join_in_any_order_and_stragglers_are_dropped():
    asm = ObservationAssembler(NAMES, task_state=True, state_dim=2 * 2 + 3)
    assert asm.on_joint_state(js(1.0, [0.1, 0.2], names=["b", "a"])) is None  # waits for the task state
    ob = asm.on_task_state(task(1.0, [7.0, 8.0, 9.0]))
    np.testing.assert_allclose(ob.obs["state"], [0.2, 0.1, 0, 0, 7, 8, 9])  # joints in our order, by name
    assert ob.stamp == 1.0 and ob.obs["state"].dtype == np.float32
    assert asm.on_task_state(task(2.0, [1.0, 1.0, 1.0])) is None
    assert asm.on_task_state(task(3.0, [2.0, 2.0, 2.0])) is None
    assert asm.on_joint_state(js(3.0, [0.0, 0.0])).stamp == 3.0  # tick 2 never completed
    assert asm.on_joint_state(js(2.0, [0.0, 0.0])) is None  # its joint states came too late
    assert asm.on_task_state(task(4.0, [1.0])) is None  # the wrong length for this policy
    assert dict(asm.counts) == {"observations": 2, "incomplete_ticks": 1, "late_parts": 1, "malformed_task_state": 1}


def test_joint_limits_map_normalized_actions_to_targets_and_back():
    limits = JointLimits.of(NAMES, [-1.0, 0.0], [1.0, 2.0])
    np.testing.assert_allclose(limits.denormalize([-1.0, 1.0]), [-1.0, 2.0])
    np.testing.assert_allclose(limits.normalize(limits.denormalize([0.3, -0.7])), [0.3, -0.7])
    np.testing.assert_allclose(limits.normalize([5.0, -5.0]), [1.0, -1.0])  # unreachable targets clip
    assert task_state_names((("joint_pos", 2), ("joint_vel", 2), ("cube", 2)), 2) == ["cube/0", "cube/1"]


def test_policy_info_round_trip_and_wrong_layouts():
    info = PolicyInfo(12.5, 3, 1, 7, np.array([0.1, 0.2]), np.array([0.0, -0.1]), np.array([0.1, 0.1]))
    back = PolicyInfo.from_msg(info.to_msg(), 2)
    assert (back.obs_stamp, back.chunk_id, back.chunk_index, back.weights_version) == (12.5, 3, 1, 7)
    np.testing.assert_array_equal(back.residual, info.residual)
    assert PolicyInfo.from_msg(info.to_msg(), 3) is None


def test_episode_start_moves_the_rate_limit_base_to_the_measured_pose_only_with_fresh_observations():
    f = SafetyFilter(SafetyParams(joint_names=("a",), position_lower=(-2.0,), position_upper=(2.0,),
                                  max_delta=(0.1,), rate_hz=50.0))
    f.on_joint_state(["a"], [0.0], 0.0)
    assert f.on_policy_command([0.05], 0.001)[0] == 0.05
    f.on_joint_state(["a"], [1.0], 0.01)  # the robot was reset elsewhere between episodes
    f.on_episode_event("start", 0.011)
    assert f.on_policy_command([1.0], 0.012)[0] == 1.0  # from where it is, not 0.05 + 0.1
    f.on_joint_state(["a"], [1.2], 0.02)
    assert f.tick(0.2) is not None and f.status()["reason"] == "obs_stale"
    held = f.tick(0.22)
    f.on_episode_event("start", 0.23)  # observations are stale: keep holding the same target
    np.testing.assert_array_equal(f.tick(0.24), held)
