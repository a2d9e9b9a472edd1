"""Teleop: device parsing from synthetic input bytes, and the teleop node with the safety node on the in-process bus,
fed through a real FIFO (the gamepad's device file stand-in): takeover, jogging, unplugging mid-takeover."""

import os
import struct

import numpy as np
import pytest
from hw_helpers import NAMES, PERIOD, Rig, spec

from hw import topics
from hw.msgs import Bool, Float64MultiArray, Header, JointState, String, array_of, float64_array, stamp_of
from hw.teleop_devices import (
    EV_ABS,
    EV_KEY,
    GamepadDevice,
    KeyboardDevice,
    SpaceMouseDevice,
    gamepad_record,
)

Q0 = np.array([0.1, 0.5, -1.0, -0.5])


@pytest.fixture
def fifo(tmp_path):
    """A device file stand-in: (path, open for writing after the reader opened it)."""
    path = tmp_path / "device"
    os.mkfifo(path)
    return path


def test_gamepad_events_parse_into_axes_and_buttons_across_partial_reads(fifo):
    reader = GamepadDevice(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK), axis_range=32767.0)
    writer = os.open(fifo, os.O_WRONLY)
    assert reader.poll().connected  # nothing written yet is not unplugged
    data = gamepad_record(EV_ABS, 0x00, 16384) + gamepad_record(EV_ABS, 0x04, -32767) + \
        gamepad_record(EV_KEY, 0x130, 1) + gamepad_record(0x00, 0, 0)  # a SYN record is ignored
    os.write(writer, data[:30])  # a record split across reads
    first = reader.poll()
    np.testing.assert_allclose(first.axes[0], 16384 / 32767)
    os.write(writer, data[30:])
    state = reader.poll()
    assert state.axes[3] == -1.0 and state.buttons == {"BTN_SOUTH"} and state.connected
    os.write(writer, gamepad_record(EV_KEY, 0x130, 0))
    assert reader.poll().buttons == frozenset()
    os.close(writer)  # unplugged
    gone = reader.poll()
    assert not gone.connected and not np.any(gone.axes)
    reader.close()


def test_spacemouse_reports_and_keyboard_keys(fifo):
    reader = SpaceMouseDevice(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK), full_scale=350.0)
    writer = os.open(fifo, os.O_WRONLY)
    os.write(writer, bytes([1]) + struct.pack("<3h", 350, -175, 0) + bytes([2]) + struct.pack("<3h", 0, 0, 70)
             + bytes([3, 0b10, 0]))
    state = reader.poll()
    np.testing.assert_allclose(state.axes, [1.0, -0.5, 0.0, 0.0, 0.0, 0.2])
    assert state.buttons == {"BUTTON_1"}
    os.close(writer)
    reader.close()

    six = SpaceMouseDevice(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK), six_axis=True)
    writer = os.open(fifo, os.O_WRONLY)
    os.write(writer, bytes([1]) + struct.pack("<6h", 0, 0, 0, 35, 0, -350))
    np.testing.assert_allclose(six.poll().axes, [0, 0, 0, 0.1, 0, -1.0])
    os.close(writer)
    six.close()

    keys = KeyboardDevice(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    writer = os.open(fifo, os.O_WRONLY)
    os.write(writer, b"qs 2")
    state = keys.poll()
    assert state.axes.tolist() == [1.0, -1.0, 0, 0, 0, 0] and state.buttons == {"KEY_2", "KEY_SPACE"}
    assert not np.any(keys.poll().axes)  # a key press jogs for one tick
    os.close(writer)
    keys.close()


class Robot:
    """Plays the driver (joint states at q) and the actor (a policy command at `target`) on the rig's bus."""

    def __init__(self, rig: Rig):
        self.rig, self.t, self.q = rig, 0, Q0.copy()
        self.js = rig.publisher(topics.JOINT_STATES, JointState)
        self.policy = rig.publisher(topics.POLICY_COMMAND, Float64MultiArray)
        self.intervention: list[bool] = []
        self.teleop: list[np.ndarray] = []
        rig.h.subscribe(topics.TELEOP_INTERVENTION, Bool, lambda m: self.intervention.append(m.data))
        rig.h.subscribe(topics.TELEOP_COMMAND, Float64MultiArray, lambda m: self.teleop.append(array_of(m)))

    def tick(self, policy_target=None) -> None:
        self.t += 1
        self.js.publish(JointState(header=Header(stamp=stamp_of(self.t * PERIOD)), name=NAMES,
                                   position=self.q.tolist()))
        self.rig.bus.deliver()
        if policy_target is not None:
            self.policy.publish(float64_array(policy_target))
        self.rig.bus.advance(PERIOD)
        if self.rig.commands:
            self.q = self.rig.commands[-1][1]  # a perfect robot: it is where it was sent


def test_gamepad_takeover_jogs_and_unplugging_holds_until_an_explicit_start(fifo):
    rig = Rig()
    safety = rig.add(spec("safety"))
    device = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened by the node by path below; this keeps it readable
    teleop = rig.add(spec("teleop", backend="gamepad", device=str(fifo), jog_speed=0.5, release_after_s=10.0,
                          task=None))
    os.close(device)
    writer = os.open(fifo, os.O_WRONLY)
    robot = Robot(rig)
    policy_target = Q0 + [0.3, 0.0, 0.0, 0.0]
    for _ in range(5):
        robot.tick(policy_target)
    assert safety.filter.mode == "policy" and robot.q[0] > Q0[0]

    os.write(writer, gamepad_record(EV_ABS, 0x01, -32767))  # left stick y fully down: joint 1 backwards
    robot.tick(policy_target)
    assert robot.intervention and all(robot.intervention)  # the takeover, re-asserted with every command
    np.testing.assert_allclose(robot.teleop[0], robot.q, atol=0.2)  # the takeover starts where the robot is
    start = robot.teleop[0].copy()
    for _ in range(4):
        robot.tick(policy_target)
    steps = np.diff(np.array(robot.teleop), axis=0)
    np.testing.assert_allclose(steps[:, 1], -0.5 * PERIOD)  # jog_speed * deflection * period on joint 1 only
    np.testing.assert_allclose(steps[:, [0, 2, 3]], 0.0)
    assert robot.q[1] < start[1] and safety.filter.mode == "teleop"

    os.close(writer)  # unplugged mid-takeover
    sent = len(robot.teleop)
    for _ in range(10):
        robot.tick(policy_target)
    assert len(robot.teleop) == sent and teleop.device_lost  # no command after the device is gone
    assert safety.filter.status()["reason"] == "teleop_lost"
    held = robot.q.copy()
    for _ in range(5):
        robot.tick(policy_target)
    np.testing.assert_array_equal(robot.q, held)  # the policy does not get the robot back by itself

    rig.publisher(topics.EPISODE, String).publish(topics.event_message("start"))
    rig.bus.deliver()
    for _ in range(5):
        robot.tick(policy_target)
    assert safety.filter.mode == "policy" and not teleop.intervening and robot.intervention[-1] is False
    assert np.abs(robot.q - policy_target).max() < np.abs(held - policy_target).max()  # moving to the policy's
    rig.close()


def test_leader_arm_takes_over_when_moved_and_is_lost_when_silent():
    rig = Rig()
    teleop = rig.add(spec("teleop", backend="leader", leader_joint_names=[f"leader_{n}" for n in NAMES],
                          release_after_s=0.2, lost_after_s=0.15, task=None))
    robot = Robot(rig)
    leader = rig.publisher("/leader/joint_states", JointState)
    pose = Q0 + 0.3
    for k in range(8):
        moving = k < 5
        pose = pose + (0.05 if moving else 0.0)
        leader.publish(JointState(name=[f"leader_{n}" for n in NAMES], position=pose.tolist()))
        robot.tick()
    assert robot.intervention[0] is True
    np.testing.assert_allclose(robot.teleop[0], Q0)  # the takeover starts where the robot is
    np.testing.assert_allclose(robot.teleop[-1], pose)  # then follows the leader (safety removes the offset)
    for _ in range(10):
        robot.tick()  # the leader went silent
    assert teleop.device_lost and teleop.counts["device_lost"] == 1
    rig.close()


def test_buttons_publish_episode_events(fifo):
    rig = Rig()
    rig.add(spec("teleop", backend="gamepad", device=str(fifo), task=None))
    writer = os.open(fifo, os.O_WRONLY)
    os.write(writer, gamepad_record(EV_KEY, 0x13B, 1))  # START pressed
    rig.bus.advance(2 * PERIOD)  # held: one event, not one per tick
    os.write(writer, gamepad_record(EV_KEY, 0x13B, 0) + gamepad_record(EV_KEY, 0x130, 1))  # released, then A
    rig.bus.advance(2 * PERIOD)
    assert [e["event"] for e in rig.events] == ["start", "success"]
    os.close(writer)
    rig.close()
