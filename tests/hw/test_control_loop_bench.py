"""`robot-rl bench control-loop` end to end on a short run: the four node processes over Cyclone DDS on loopback."""

from robot_rl.workflows.benchmarks.control_loop import benchmark_control_loop


def test_control_loop_bench_measures_every_step_and_records_them(tmp_path):
    result = benchmark_control_loop(steps=60, warmup=20, directory=str(tmp_path))
    assert result["steps"] == 60 and result["warmup_steps"] == 20
    assert result["exit_codes"] == {"safety": 0, "sim_mirror": 0, "actor": 0, "recorder": 0}
    # every measured tick is answered or missed, and the recorder committed the run as one episode
    assert result["missed_deadlines"] <= result["steps"]
    assert 0 < result["obs_to_command_ms_p50"] <= result["obs_to_command_ms_p99"] <= result["obs_to_command_ms_max"]
    assert result["recorded_steps"] >= result["steps"]
    assert result["missed_during_steal"] is None or 0 <= result["missed_during_steal"] <= result["missed_deadlines"]
