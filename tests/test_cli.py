"""The `robot-rl` command as users run it: real subprocesses, exit codes, one-line errors, JSON last lines."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data"))
from crash_writer import SCHEMA  # noqa: E402
from store_checks import write_episodes  # noqa: E402

from robot_rl.data import EpisodeStore  # noqa: E402


def robot_rl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "store"
    store = EpisodeStore.create(root, SCHEMA)
    write_episodes(store, range(5))
    store.close()
    return root


def test_data_info_table_and_json(store_root):
    table = robot_rl("data", "info", str(store_root))
    assert table.returncode == 0, table.stderr
    assert "episodes   5" in table.stdout and "obs/image_wrist" in table.stdout
    as_json = robot_rl("data", "info", str(store_root), "--json")
    summary = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 5 and summary["keys"]["obs/state"]["shape"] == [6]
    assert summary["sources"] == {"scripted": 2, "teleop": 2, "policy": 1}


def test_data_validate_ok_and_first_violation(store_root, tmp_path):
    ok = robot_rl("data", "validate", str(store_root))
    assert ok.returncode == 0 and "is valid (5 episodes" in ok.stdout
    import shutil

    import zarr

    broken = tmp_path / "broken"
    shutil.copytree(store_root, broken)
    zarr.open_group(str(broken), mode="r+")["meta/episodes/length"][1] = 999
    bad = robot_rl("data", "validate", str(broken))
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and "episode 1 records length 999" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["data", "info", "/nonexistent/store"], "does not exist"),
    (["data", "frobnicate", "x"], "unknown data action 'frobnicate'"),
    (["data", "info"], "missing ROOT"),
    (["bench", "nope"], "unknown bench 'nope'"),
    (["launch-rockets"], "unknown verb 'launch-rockets'"),
    (["data", "info", "x", "y", "z"], "unexpected argument"),
    (["demo", "no_such_key=1"], "bad configuration override"),
    (["collect", "task=Nope", "out=/tmp/never"], "unknown task 'Nope'; choose one of: BimanualHandover"),
    (["collect", "variant.friction=-1", "out=/tmp/never"], "friction=-1.0 is invalid"),
])
def test_bad_input_exits_non_zero_with_one_line(args, message):
    result = robot_rl(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_bench_store_prints_one_json_object_last(tmp_path):
    result = robot_rl("bench", "store", "episodes=2", "episode_length=30", "image_size=32", "sample_batches=20",
                      "progress=false", f"dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("write_frames_per_s", "raw_write_frames_per_s", "write_ratio", "sample_batches_per_s"):
        assert figures[key] > 0
    assert not list(tmp_path.iterdir()), "the benchmark cleans up its temporary store"


def test_demo_writes_a_report(tmp_path):
    result = robot_rl("demo", "name=t", f"runs_dir={tmp_path}", "collect.episodes=6", "base.train.steps=60",
                      "base.train.val_every=30", "base.train.ckpt_every=60", "base.eval_episodes=2",
                      "residual.steps=416", "residual.num_envs=4", "residual.eval_every=0", "residual.eval_episodes=2",
                      "residual.eval_num_envs=2", "residual.eval_variants=[nominal]",
                      "+residual.overrides.warmup_steps=48", "+residual.overrides.critic_warmup_updates=2",
                      "rank.updates=50", "rank.model_updates=20", "rank.truth_episodes=2")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    report = Path(summary["report"]).read_text()
    assert "## Episode store" in report and "| True |" in report
    assert "## Demonstrations" in report and summary["collect"]["success_rate"] >= 0.9
    assert "## Base policy" in report and 0.0 <= summary["base"]["success_rate"] <= 1.0
    assert Path(summary["base"]["checkpoint"]).is_file()
    assert "## Residual RL" in report and summary["residual"]["env_steps"] == 416
    assert (tmp_path / "t" / "residual" / "learning_curve.png").stat().st_size > 1000
    assert "## Offline ranking" in report and sorted(r["rank"] for r in summary["rank"]["candidates"]) == [1, 2]
    assert all(0.0 <= r["model"] <= 1.0 for r in summary["rank"]["candidates"])  # the model-based estimate beside
    assert (tmp_path / "t" / "data_episode_lengths.png").stat().st_size > 1000


def test_demo_ranks_the_best_residual_only_when_it_is_neither_the_base_nor_the_last():
    from robot_rl.workflows.demo import demo_candidates

    run = {"checkpoint_dir": "r/checkpoints", "best_checkpoint": "r/checkpoints/best", "env_steps": 6000}
    assert list(demo_candidates("b.safetensors", {**run, "best_steps": 0}).values()) == [
        "b.safetensors", "b.safetensors+r/checkpoints"]  # best at step 0: the untrained residual, i.e. the base
    assert len(demo_candidates("b.safetensors", {**run, "best_steps": 6000})) == 2  # the last is the best
    middle = demo_candidates("b.safetensors", {**run, "best_steps": 2000})
    assert middle["base + best residual (2000 steps)"] == "b.safetensors+r/checkpoints/best"


def test_bench_residual_base_settings_follow_the_task():
    """Each task's base gets its `base_per_task` entry (so it lands at 30-70% success), other tasks the plain `base`,
    and a command-line override of the entry wins."""
    from robot_rl.cli.main import VERBS, load_config, split_args
    from robot_rl.workflows.benchmarks.residual import base_settings

    def settings(*args: str) -> dict:
        return base_settings(load_config(VERBS["bench"], *split_args(["residual", *args])))

    pushcube, bimanual = settings("task=PushCube"), settings("task=BimanualHandover")
    assert pushcube["train"]["steps"] == 1500 and bimanual["train"]["steps"] == 800
    assert {k: v for k, v in bimanual.items() if k != "train"} == {k: v for k, v in pushcube.items() if k != "train"}
    assert settings("task=BimanualHandover", "base_per_task.BimanualHandover.train.steps=900")["train"]["steps"] == 900


@pytest.mark.parametrize("args, task", [
    (["bench", "residual", "task=PickPlace", "recipe=scratch"], "PickPlace"),  # a plain key named like a group
    (["bench", "residual-ceiling", "task=BimanualHandover"], "BimanualHandover"),  # ... inherited from residual
    (["bench", "sim", "task=Reach"], "Reach"),
    (["train-residual", "task=PushCube"], {"name": "PushCube"}),  # the config group itself
    (["bench", "sim2real", "task=PickPlace"], {"name": "PickPlace"}),
])
def test_task_override_works_on_plain_keys_and_groups(args, task):
    from robot_rl.cli.main import VERBS, load_config, split_args

    verb = VERBS[args[0]]
    positionals, overrides, flags = split_args(args[1:])
    cfg = load_config(verb, positionals, overrides, flags)
    if isinstance(task, str):
        assert cfg.task == task
    else:
        assert cfg.task.name == task["name"]
    if args[1] == "residual":
        assert cfg.recipe == "scratch"
