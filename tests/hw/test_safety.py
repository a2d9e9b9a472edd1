"""The safety filter as a pure class, time passed explicitly: every rule of hw/safety.py's docstring."""

import numpy as np
import pytest

from hw.safety import SafetyFilter, SafetyParams
from hw.workspace import pusher_tcp

NAMES = ("j0", "j1", "j2")
PERIOD = 0.02


def make(**overrides) -> SafetyFilter:
    params = dict(joint_names=NAMES, position_lower=(-1.0, -1.0, -1.0), position_upper=(1.0, 1.0, 1.0),
                  max_delta=(0.1, 0.1, 0.1), rate_hz=1 / PERIOD, stale_periods=2.0, teleop_stale_periods=4.0)
    return SafetyFilter(SafetyParams(**{**params, **overrides}))


def observe(f: SafetyFilter, q, t: float) -> None:
    f.on_joint_state(NAMES, q, t)


def test_in_limit_commands_pass_unchanged():
    f = make()
    observe(f, [0.0, 0.0, 0.0], 0.0)
    out = f.on_policy_command([0.05, -0.05, 0.0], 0.001)
    np.testing.assert_allclose(out, [0.05, -0.05, 0.0])
    assert f.mode == "policy" and f.counts["forwarded_policy"] == 1


def test_outputs_always_respect_position_and_delta_limits():
    f = make()
    rng = np.random.default_rng(0)
    observe(f, [0.0, 0.0, 0.0], 0.0)
    previous, t = np.zeros(3), 0.0
    for _ in range(300):
        t += PERIOD
        observe(f, previous, t)
        out = f.on_policy_command(rng.normal(0.0, 3.0, size=3), t)  # mostly far out of limits
        assert out is not None
        assert np.all(out >= -1.0) and np.all(out <= 1.0)
        assert np.all(np.abs(out - previous) <= 0.1 + 1e-12)
        previous = out
    assert f.counts["clipped_position"] > 100 and f.counts["clipped_delta"] > 100
    np.testing.assert_allclose(f.on_policy_command([5.0, 5.0, 5.0], t), np.minimum(previous + 0.1, 1.0))


def test_nan_inf_and_wrong_length_are_dropped_and_counted():
    f = make()
    observe(f, [0.2, 0.2, 0.2], 0.0)
    good = f.on_policy_command([0.25, 0.2, 0.2], 0.001)
    for bad in ([np.nan, 0.0, 0.0], [0.0, np.inf, 0.0], [0.0, 0.0, -np.inf]):
        assert f.on_policy_command(bad, 0.002) is None
    assert f.on_policy_command([0.1, 0.1], 0.003) is None
    assert f.on_policy_command([0.1, 0.1, 0.1, 0.1], 0.003) is None
    assert f.on_teleop_command([np.nan] * 3, 0.003) is None
    assert f.counts["policy_nonfinite"] == 3 and f.counts["policy_wrong_length"] == 2
    assert f.counts["teleop_nonfinite"] == 1
    np.testing.assert_allclose(f.last_cmd, good)  # the robot target did not move


def test_malformed_joint_states_are_counted_and_do_not_feed_the_watchdog():
    f = make()
    f.on_joint_state(["j0", "j1"], [0.0, 0.0], 0.0)  # a joint missing
    f.on_joint_state(["j0", "j1", "j2"], [0.0, np.nan, 0.0], 0.0)
    f.on_joint_state([], [0.0, 0.0], 0.0)  # unnamed, wrong length
    assert f.counts["malformed_joint_states"] == 3 and f.q_meas is None
    assert f.on_policy_command([0.0, 0.0, 0.0], 0.001) is None  # never observed: nothing may pass
    f.on_joint_state(["extra", "j2", "j1", "j0"], [9.0, 0.3, 0.2, 0.1], 0.002)  # by name, any order
    np.testing.assert_allclose(f.q_meas, [0.1, 0.2, 0.3])


def test_workspace_box_rejects_commands_whose_tcp_leaves_it():
    # The PushCube arm's real forward kinematics; a box that keeps the TCP above z = 0.05 m.
    params = dict(joint_names=("waist", "shoulder", "elbow", "wrist_angle"), position_lower=(-1.6, -0.4, -2.7, -2.3),
                  position_upper=(1.6, 1.9, 0.4, 0.8), max_delta=(0.5,) * 4, rate_hz=50.0,
                  workspace_lower=(-1.0, -1.0, 0.05), workspace_upper=(1.0, 1.0, 1.0))
    f = SafetyFilter(SafetyParams(**params), fk=pusher_tcp)
    home = np.array([0.0, 0.8, -1.2, -1.0])
    assert pusher_tcp(home)[2] > 0.05
    f.on_joint_state(params["joint_names"], home, 0.0)
    np.testing.assert_allclose(f.on_policy_command(home, 0.001), home)
    low = np.array([0.0, 0.3, -1.0, -0.8])  # arm lowered: TCP below the box
    assert pusher_tcp(low)[2] < 0.05
    assert f.on_policy_command(low, 0.002) is None
    assert f.counts["rejected_workspace"] == 1
    np.testing.assert_allclose(f.last_cmd, home)


def test_watchdog_holds_within_one_period_when_observations_stop_and_resumes():
    f = make()
    t = 0.0
    for _ in range(5):
        t += PERIOD
        observe(f, f.last_cmd if f.last_cmd is not None else np.zeros(3), t)
        f.on_policy_command([0.3, 0.0, 0.0], t)
        assert f.tick(t) is None
    last_obs, sent = t, f.last_cmd.copy()
    # Observations stop; the policy keeps commanding and the watchdog ticks every period.
    for _ in range(20):
        t += PERIOD
        out = f.on_policy_command([0.9, 0.9, 0.9], t)
        if f.mode != "hold":
            assert t - last_obs <= f.obs_timeout  # forwarded only while the last observation is fresh
            sent = out
            out = f.tick(t)
        if out is not None and f.mode == "hold":
            np.testing.assert_allclose(out, sent)  # holds the last command it sent
            break
    else:
        pytest.fail("never held")
    assert t - last_obs <= f.obs_timeout + PERIOD  # staleness acted on within one control period
    assert f.status()["reason"] == "obs_stale"
    safe = sent
    np.testing.assert_allclose(f.tick(t + PERIOD), safe)  # the hold is re-sent every period
    # Observations come back: commands pass again, rate limited from the held position.
    t += 2 * PERIOD
    observe(f, safe, t)
    np.testing.assert_allclose(f.on_policy_command([0.9, 0.9, 0.9], t), safe + 0.1)
    assert f.mode == "policy"


def test_watchdog_holds_when_policy_commands_stop():
    f = make()
    observe(f, [0.0, 0.0, 0.0], 0.0)
    f.on_policy_command([0.05, 0.0, 0.0], 0.0)
    t = 0.0
    while t < 0.04 - 1e-9:
        t += PERIOD
        observe(f, [0.05, 0.0, 0.0], t)
        assert f.tick(t) is None
    t += PERIOD
    observe(f, [0.05, 0.0, 0.0], t)
    np.testing.assert_allclose(f.tick(t), [0.05, 0.0, 0.0])
    assert f.status()["reason"] == "cmd_stale"


def test_mux_teleop_wins_while_intervening():
    f = make(teleop_relative=False)
    observe(f, [0.0, 0.0, 0.0], 0.0)
    assert f.on_teleop_command([0.05, 0.0, 0.0], 0.001) is None  # nobody intervenes: device ignored
    f.on_intervention(True, 0.002)
    assert f.on_policy_command([0.1, 0.1, 0.1], 0.003) is None
    np.testing.assert_allclose(f.on_teleop_command([-0.05, 0.0, 0.0], 0.004), [-0.05, 0.0, 0.0])
    assert f.mode == "teleop"
    f.on_intervention(False, 0.005)
    np.testing.assert_allclose(f.on_policy_command([0.0, 0.0, 0.0], 0.006), [0.0, 0.0, 0.0])
    assert f.counts["policy_overridden"] == 1 and f.counts["teleop_ignored"] == 1 and f.counts["takeovers"] == 1


def test_takeover_is_bumpless_relative_to_the_robot_position():
    f = make()
    robot = np.array([0.4, -0.3, 0.1])
    observe(f, robot, 0.0)
    f.on_policy_command(robot, 0.001)
    f.on_intervention(True, 0.002)
    device_start = np.array([-0.9, 0.9, 0.5])  # the leader arm / device is far from the robot
    np.testing.assert_allclose(f.on_teleop_command(device_start, 0.003), robot)  # no jump at takeover
    observe(f, robot, 0.004)
    out = f.on_teleop_command(device_start + [0.05, 0.02, -0.03], 0.005)
    np.testing.assert_allclose(out, robot + [0.05, 0.02, -0.03])  # the device's motion, from the robot's pose


def test_device_unplugged_mid_takeover_holds_until_an_explicit_start_event():
    f = make()
    observe(f, [0.0, 0.0, 0.0], 0.0)
    f.on_policy_command([0.0, 0.0, 0.0], 0.0)
    f.on_intervention(True, 0.0)
    t = 0.0
    for _ in range(3):
        t += PERIOD
        observe(f, f.last_cmd, t)
        f.on_teleop_command([0.01 * t, 0.0, 0.0], t)
        assert f.tick(t) is None
    held = f.last_cmd.copy()
    # Unplugged: teleop commands stop; the observations and the policy carry on.
    for _ in range(10):
        t += PERIOD
        observe(f, held, t)
        f.on_policy_command([0.5, 0.5, 0.5], t)
        f.tick(t)
    assert f.status()["reason"] == "teleop_lost" and f.mode == "hold"
    f.on_intervention(False, t)  # the teleop node gives up the takeover: still no policy
    t += PERIOD
    observe(f, held, t)
    assert f.on_policy_command([0.5, 0.5, 0.5], t) is None
    np.testing.assert_allclose(f.tick(t), held)
    f.on_episode_event("success", t)  # not a resume
    assert f.on_policy_command([0.5, 0.5, 0.5], t) is None
    f.on_episode_event("start", t)
    np.testing.assert_allclose(f.on_policy_command([0.5, 0.5, 0.5], t), held + 0.1)
    assert f.mode == "policy"


def test_estop_latches_until_released_and_started():
    f = make()
    observe(f, [0.0, 0.0, 0.0], 0.0)
    first = f.on_policy_command([0.05, 0.05, 0.05], 0.001)
    np.testing.assert_allclose(f.on_estop(True, 0.002), first)  # hold sent at once
    assert f.on_policy_command([0.1, 0.1, 0.1], 0.003) is None
    f.on_intervention(True, 0.003)
    assert f.on_teleop_command([0.1, 0.1, 0.1], 0.003) is None
    f.on_episode_event("start", 0.004)
    assert f.status()["reason"] == "estop" and f.counts["start_refused_estop"] == 1
    assert f.on_estop(False, 0.005) is None
    observe(f, first, 0.005)
    assert f.on_policy_command([0.1, 0.1, 0.1], 0.006) is None  # released, not restarted
    f.on_episode_event("start", 0.007)
    np.testing.assert_allclose(f.on_policy_command([0.1, 0.1, 0.1], 0.008), [0.1, 0.1, 0.1])
    np.testing.assert_allclose(f.on_episode_event("estop", 0.009), [0.1, 0.1, 0.1])  # the event form
    assert f.mode == "hold" and f.counts["latched_estop"] == 2


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="max_delta"):
        make(max_delta=(0.1, 0.1))
    with pytest.raises(ValueError, match="position_lower < position_upper"):
        make(position_lower=(1.0, -1.0, -1.0))
    with pytest.raises(ValueError, match="positive"):
        make(max_delta=(0.1, 0.0, 0.1))


def test_a_takeover_reasserted_after_a_late_start_event_is_restored():
    """Topics from different processes are not ordered: a `start` may reach the safety node after the teleop's new
    takeover. The teleop re-asserts the takeover with every command, so control returns to the person at once."""
    from hw.safety import SafetyFilter, SafetyParams

    f = SafetyFilter(SafetyParams(joint_names=["a", "b"], position_lower=[-1, -1], position_upper=[1, 1],
                                  max_delta=[0.5, 0.5]))
    f.on_joint_state(["a", "b"], [0.0, 0.0], 0.0)
    f.on_policy_command([0.1, 0.1], 0.0)
    f.on_intervention(True, 0.01)  # the teleop's new takeover...
    f.on_episode_event("start", 0.02)  # ...overtaken by the start event that preceded it
    assert not f.intervention
    f.on_intervention(True, 0.03)  # re-asserted with the teleop's next command
    assert f.mode == "teleop" and f.on_policy_command([0.2, 0.2], 0.04) is None


def test_an_automatic_episode_start_does_not_release_a_latch():
    from hw.safety import SafetyFilter, SafetyParams

    f = SafetyFilter(SafetyParams(joint_names=["a"], position_lower=[-1], position_upper=[1], max_delta=[0.5]))
    f.on_joint_state(["a"], [0.0], 0.0)
    f.on_intervention(True, 0.0)
    f.on_joint_state(["a"], [0.0], 0.99)
    f.tick(1.0)  # no teleop command for a second: the device is lost, the robot holds
    assert f.latch == "teleop_lost"
    f.on_joint_state(["a"], [0.0], 1.01)
    f.on_episode_event("start", 1.02, source="sim_mirror")  # the mirror resets its episode on its own
    assert f.latch == "teleop_lost" and f.counts["start_refused_latched"] == 1
    f.on_episode_event("start", 1.03, source="operator")  # a person decides to go on
    assert f.latch is None
