"""The node graph on the in-process transport: real MuJoCo mirror, real nodes, real zarr store, virtual time.

Virtual time makes the timing claims exact (a hold within one control period) without asserting on wall clocks.
"""

import json

import numpy as np
from hw_helpers import LIMITS, NAMES, PERIOD, Rig, spec

from hw import topics
from hw.msgs import Float64MultiArray, Header, Image, JointState, String, float64_array, stamp_of
from hw.nodes.sim_mirror import SIM_FAULT
from hw.observation import JointLimits
from hw.transport import LATCHED
from robot_rl.data import EpisodeStore, validate

LIM = JointLimits.of(NAMES, LIMITS["position_lower"], LIMITS["position_upper"])


def test_graph_records_episodes_with_takeovers_flagged_and_human_actions(tmp_path):
    """A base that always aims at a wrong goal drifts from the expert; the scripted teleop takes over for 8 steps,
    hands back, takes over again; every step lands in the store with the right flags and actions."""
    rig = Rig()
    rig.add(spec("safety"))
    rig.add(spec("sim_mirror", wait_subscribers=3))
    rig.add(spec("actor", expert_fail_prob=1.0, stochastic=False))
    teleop = rig.add(spec("teleop", drift_threshold=0.08, drift_patience=2, takeover_steps=8))
    rig.add(spec("recorder", store=str(tmp_path / "store")))
    rig.bus.advance(15.0)
    rig.close()

    assert validate(str(tmp_path / "store"))["valid"]
    store = EpisodeStore.open(tmp_path / "store")
    assert store.num_episodes >= 3
    assert teleop.counts["takeovers_drift"] >= 2 and teleop.counts["releases"] >= 1
    intervened_episodes = 0
    for i in range(store.num_episodes):
        ep, meta = store.episode(i), store.episode_meta(i)
        flags, human, action = ep["intervention"], ep["human_action"], ep["action"]
        intervened_episodes += bool(flags.any())
        assert np.all(np.isnan(human[~flags]))  # no human acted
        np.testing.assert_array_equal(human[flags], action[flags])  # the person's executed command
        assert np.all(np.abs(action) <= 1.0) and np.all(np.abs(ep["policy_action"]) <= 1.0)
        np.testing.assert_allclose(ep["policy_action"], np.clip(ep["base_action"] + ep["residual_action"], -1, 1),
                                   atol=1e-6)
        assert np.all(np.diff(ep["timestamp"]) > 0)
        assert ep["reward"][-1] == float(meta["success"]) and ep["reward"][:-1].sum() == 0
        assert ep["terminated"][-1] == meta["success"] and ep["truncated"][-1] == (not meta["success"])
        assert meta["source"] == "policy" and meta["task"] == "PushCube" and meta["length"] == len(action)
        # the executed action follows the policy's proposal where nobody intervened (the safety node only limits)
        free = ~flags
        assert np.abs(action[free] - ep["policy_action"][free]).mean() < 0.05
    assert intervened_episodes >= 2
    assert any(store.episode_meta(i)["success"] for i in range(store.num_episodes))  # the expert's takeovers help


def test_safety_holds_within_one_period_when_the_mirror_stops_publishing():
    rig = Rig()
    safety = rig.add(spec("safety"))
    rig.add(spec("sim_mirror", publish_events=False))
    rig.add(spec("actor"))
    fault = rig.publisher(SIM_FAULT, String)
    assert rig.run_until(lambda: len(rig.commands) >= 10)
    fault.publish(String(data=json.dumps({"fault": "stop"})))
    rig.bus.advance(10 * PERIOD)
    t_last_obs = rig.joint_states[-1][0]
    after = [(t, q) for t, q in rig.commands if t > t_last_obs]
    stale_after = safety.filter.obs_timeout
    assert after, "the safety node went silent instead of holding"
    assert after[0][0] <= t_last_obs + stale_after + PERIOD + 1e-9  # the first hold: within one control period
    held = np.array([q for _, q in after])
    np.testing.assert_array_equal(held, np.repeat(held[:1], len(held), axis=0))  # the robot does not move
    assert safety.filter.status()["mode"] == "hold" and safety.filter.status()["reason"] == "obs_stale"

    fault.publish(String(data=json.dumps({"fault": ""})))
    rig.bus.advance(5 * PERIOD)
    assert safety.filter.status()["mode"] == "policy"
    rig.close()


def test_mirror_faults_drop_and_delay_observations():
    rig = Rig()
    mirror = rig.add(spec("sim_mirror", publish_events=False, seed=3))
    fault = rig.publisher(SIM_FAULT, String)
    rig.run_until(lambda: len(rig.joint_states) >= 2)
    fault.publish(String(data=json.dumps({"fault": "drop", "drop_prob": 0.5})))
    before, ticks = len(rig.joint_states), mirror.ticks
    rig.bus.advance(40 * PERIOD)
    received, ticks = len(rig.joint_states) - before, mirror.ticks - ticks
    assert 0 < received < ticks and mirror.counts["dropped_observations"] == ticks - received

    fault.publish(String(data=json.dumps({"fault": "delay", "delay_s": 0.2})))
    rig.bus.advance(20 * PERIOD)
    ages = [t - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 - 1_700_000_000.0)
            for t, msg in rig.joint_states[-10:]]
    assert min(ages) >= 0.2 - 1e-6  # published late by the delay
    rig.close()


def test_malformed_messages_are_dropped_and_counted(tmp_path):
    rig = Rig()
    rig.add(spec("safety"))
    mirror = rig.add(spec("sim_mirror", publish_events=True, cameras=["front"], image_size=16))
    actor = rig.add(spec("actor"))
    teleop = rig.add(spec("teleop"))
    recorder = rig.add(spec("recorder", store=str(tmp_path / "store"), cameras=["front"]))
    assert rig.run_until(lambda: recorder.counts["steps"] >= 5)
    command = rig.publisher(topics.ROBOT_COMMAND, Float64MultiArray)
    js = rig.publisher(topics.JOINT_STATES, JointState)
    task = rig.publisher(topics.TASK_STATE, JointState)
    info = rig.publisher(topics.POLICY_INFO, Float64MultiArray)
    episode = rig.publisher(topics.EPISODE, String)
    weights = rig.publisher(topics.WEIGHTS, String, LATCHED)
    fault = rig.publisher(SIM_FAULT, String)
    image = rig.publisher(topics.camera_topic("front"), Image)
    proposals = len(rig.infos)

    command.publish(float64_array([0.1, 0.2]))  # wrong number of joints
    rig.bus.deliver()  # commands are keep-last-1: each must arrive before the next replaces it
    command.publish(float64_array([0.1, np.nan, 0.0, 0.0]))
    rig.bus.deliver()
    header = Header(stamp=stamp_of(1.0))
    js.publish(JointState(header=header, name=NAMES[:3], position=[0.0] * 3))  # a joint missing
    js.publish(JointState(header=header, name=NAMES, position=[0.0, np.inf, 0.0, 0.0]))
    js.publish(JointState(header=header, name=NAMES, position=[0.0] * 3))  # names and values disagree
    task.publish(JointState(header=header, name=["x"], position=[1.0]))  # the task state has 13 values
    info.publish(float64_array([1.0, 2.0]))
    episode.publish(String(data="not json"))
    episode.publish(String(data=json.dumps({"event": "teleport"})))
    weights.publish(String(data=json.dumps({"version": "one"})))
    fault.publish(String(data=json.dumps({"fault": "meteor"})))
    image.publish(Image(header=header, height=16, width=16, encoding="rgb8", step=48, data=bytes(10)))
    rig.bus.deliver()
    rig.bus.advance(3 * PERIOD)

    assert mirror.counts["malformed_commands"] == 2 and mirror.counts["malformed_faults"] == 1
    assert mirror.counts["malformed_events"] == 2
    assert actor.assembler.counts["malformed_joint_states"] == 3 and actor.assembler.counts["malformed_task_state"] == 1
    assert actor.counts["malformed_weights"] == 1 and actor.counts["malformed_events"] == 2
    assert teleop.counts["malformed_policy_info"] == 1 and recorder.counts["malformed_policy_info"] == 1
    assert recorder.counts["malformed_commands"] == 2 and recorder.assembler.counts["malformed_images"] == 1
    assert all(info.obs_stamp != 1.0 for info in rig.infos[proposals:])  # nothing acted on the bad tick
    assert np.all(np.isfinite(mirror.action)) and np.all(np.abs(mirror.action) <= 1.0)  # never applied
    assert len(rig.infos) > proposals  # and the loop went on
    assert rig.run_until(lambda: recorder.episodes >= 1)
    rig.close()
    episode = EpisodeStore.open(tmp_path / "store").episode(0)
    assert episode["obs/image_front"].shape[1:] == (16, 16, 3) and episode["obs/image_front"].std() > 0


def test_scripted_teleop_takes_over_on_time_and_hands_back_at_the_next_episode():
    rig = Rig()
    safety = rig.add(spec("safety"))
    rig.add(spec("sim_mirror", wait_subscribers=3))
    rig.add(spec("actor", expert_fail_prob=0.0))
    teleop = rig.add(spec("teleop", takeover_after_steps=3, drift_threshold=10.0, takeover_steps=0))
    assert rig.run_until(lambda: teleop.intervening)
    assert teleop.counts["takeovers_time"] == 1 and teleop.episode_steps == 3
    assert rig.run_until(lambda: safety.filter.mode == "teleop")
    episodes = len([e for e in rig.events if e["event"] == "start"])
    assert rig.run_until(lambda: len([e for e in rig.events if e["event"] == "start"]) > episodes)
    assert rig.run_until(lambda: teleop.counts["takeovers_time"] == 2)  # once per episode, released in between
    assert teleop.counts["releases"] >= 1
    rig.close()
