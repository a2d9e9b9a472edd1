"""The benchmark's latency bookkeeping, and the MCAP export read back by the mcap reader with the ROS 2 decoder."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from hw.export_mcap import export_mcap
from hw.latency import LatencyMonitor
from robot_rl.data import EpisodeStore, make_step_schema
from robot_rl.errors import UserError
from robot_rl.scheduling import cpu_steal_seconds


def test_latency_monitor_pairs_each_observation_with_the_first_command_in_its_period(tmp_path):
    monitor = LatencyMonitor(warmup=2, max_ticks=5)
    timeline = [("obs", 0.00), ("cmd", 0.01),  # warm-up
                ("obs", 0.02), ("cmd", 0.021),  # warm-up
                ("obs", 0.04), ("cmd", 0.042), ("cmd", 0.043),  # 2 ms; a second command is not a second answer
                ("obs", 0.06),  # no command before the next observation: missed
                ("obs", 0.08), ("cmd", 0.083),  # 3 ms
                ("obs", 0.10), ("cmd", 0.101),  # 1 ms
                ("obs", 0.12), ("cmd", 0.124),  # 4 ms: the fifth counted tick
                ("obs", 0.14), ("cmd", 0.141)]  # past max_ticks: not counted
    for kind, t in timeline:
        (monitor.on_observation if kind == "obs" else monitor.on_command)(t)
    summary = monitor.summary()
    assert monitor.done and summary["steps"] == 5 and summary["missed_deadlines"] == 1
    np.testing.assert_allclose(sorted(np.array(monitor.latencies) * 1e3), [1, 2, 3, 4], atol=1e-9)
    assert summary["obs_to_command_ms_p50"] == pytest.approx(2.5) and summary["rate_hz"] == pytest.approx(50.0)
    assert summary["missed_during_steal"] is None and summary["ticks_with_steal"] is None  # unknown, not zero
    monitor.write(tmp_path / "latency.json")
    assert json.loads((tmp_path / "latency.json").read_text()) == summary


def test_latency_monitor_tells_missed_deadlines_in_stolen_time_from_the_rest():
    # The steal clock is read once per observation; a stolen CPU's time is booked when it runs again.
    steal = iter([0.0] * 8 + [0.1] * 4)
    answered = [True, False, True, True, True,  # a one-tick miss (at 0.02), no steal within two ticks after it
                False, False, True, True,  # a run of two misses (0.10, 0.12); the steal shows at 0.16
                True, True, True]
    monitor = LatencyMonitor(warmup=0, max_ticks=20, steal_clock=lambda: next(steal))
    for tick, ok in enumerate(answered):
        monitor.on_observation(0.02 * tick)
        if ok:
            monitor.on_command(0.02 * tick + 0.002)
    summary = monitor.summary()
    assert summary["missed_deadlines"] == 3 and summary["missed_during_steal"] == 2
    assert summary["ticks_with_steal"] == 1


def test_cpu_steal_seconds_reads_the_kernel_counter():
    first = cpu_steal_seconds()
    if not Path("/proc/stat").is_file():
        assert first is None
        return
    assert first is not None and first >= 0.0 and cpu_steal_seconds() >= first


def store_with_two_episodes(root):
    rng = np.random.default_rng(0)
    schema = make_step_schema({"state": ((6,), "float32"), "image_front": ((4, 5, 3), "uint8")}, 3)
    store = EpisodeStore.create(root, schema)
    with store.writer() as w:
        for length in (4, 3):
            for t in range(length):
                a = rng.uniform(-1, 1, 3).astype(np.float32)
                human = a if t == 1 else np.full(3, np.nan, np.float32)
                w.add_step({"obs/state": rng.normal(size=6).astype(np.float32),
                            "obs/image_front": rng.integers(0, 256, (4, 5, 3), dtype=np.uint8), "action": a,
                            "policy_action": a, "base_action": a, "residual_action": np.zeros(3, np.float32),
                            "human_action": human, "intervention": t == 1, "reward": np.float32(t == length - 1),
                            "terminated": t == length - 1, "truncated": False,
                            "timestamp": 100.0 + 0.05 * t})  # both episodes on their own clock: they overlap
            w.end_episode(success=True, source="policy", task="Toy")
    store.close()
    return EpisodeStore.open(root)


def test_mcap_export_reads_back_as_ros2_messages(tmp_path):
    store = store_with_two_episodes(tmp_path / "store")
    summary = export_mcap(str(tmp_path / "store"), str(tmp_path / "out.mcap"), joint_names=["a", "b", "c"])
    assert summary["episodes"] == 2 and summary["steps"] == 7
    by_topic: dict[str, list] = {}
    times = []
    with open(tmp_path / "out.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=False):
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            by_topic.setdefault(channel.topic, []).append((schema.name, decoded))
            times.append(message.log_time)
    assert np.all(np.diff(times) >= 0)  # the second episode was moved after the first
    steps = {t: len(v) for t, v in by_topic.items()}
    assert steps["/robot_rl/obs/state"] == steps["/camera/front/image_raw"] == steps["/joint_states"] == 7
    assert [json.loads(d.data)["event"] for _, d in by_topic["/robot_rl/episode"]] == ["start", "success"] * 2
    first = store.episode(0)
    name, image = by_topic["/camera/front/image_raw"][0]
    assert name == "sensor_msgs/msg/Image" and image.encoding == "rgb8"
    np.testing.assert_array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(4, 5, 3),
                                  first["obs/image_front"][0])
    np.testing.assert_allclose(by_topic["/robot_rl/obs/state"][2][1].data, first["obs/state"][2])
    joints = by_topic["/joint_states"][0][1]
    assert list(joints.name) == ["a", "b", "c"]
    np.testing.assert_allclose(list(joints.position) + list(joints.velocity), first["obs/state"][0])
    human = [d.data for _, d in by_topic["/robot_rl/human_action"][:2]]
    assert all(math.isnan(x) for x in human[0]) and np.allclose(human[1], first["human_action"][1])
    assert [d.data for _, d in by_topic["/teleop/intervention"][:3]] == [False, True, False]
    assert by_topic["/robot_rl/reward"][3][1].data == [1.0, 1.0, 0.0]


def test_mcap_export_refuses_an_empty_store(tmp_path):
    EpisodeStore.create(tmp_path / "empty", make_step_schema({"state": ((2,), "float32")}, 1)).close()
    with pytest.raises(UserError, match="no committed episodes"):
        export_mcap(str(tmp_path / "empty"), str(tmp_path / "x.mcap"))
    assert not (tmp_path / "x.mcap").exists()
