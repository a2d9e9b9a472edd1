"""train-residual end to end on a tiny budget: the verb's outputs, its rollout store, demo relabelling, bad input."""

import json
import shutil

import numpy as np
import pytest

import sim
from robot_rl.cli.main import main
from robot_rl.data import EpisodeStore, ReplayCache, validate
from robot_rl.errors import UserError
from robot_rl.policies import ChunkScheduler, PolicyConfig, TrainConfig, load_policy
from robot_rl.rl.checkpoint import read_checkpoint
from robot_rl.rl.config import load_recipe
from robot_rl.rl.loop import LoopConfig, evaluate
from robot_rl.rl.replay import EpisodeReplay, replay_spec
from robot_rl.workflows.collect import collect
from robot_rl.workflows.train_base import train_base
from robot_rl.workflows.train_residual import (
    check_resumed_limit,
    evaluate_residual,
    load_base,
    load_demos,
    load_rollouts,
    restore_replay,
    train_residual,
)

# a small learner: the test proves the wiring, tests/rl proves the learning
SMALL = ["residual.warmup_steps=120", "residual.batch_size=32", "residual.critic_warmup_updates=4",
         "residual.actor.hidden_dim=32", "residual.critic.hidden_dim=32", "residual.critic.num_bins=21"]


@pytest.fixture(scope="module")
def reach(tmp_path_factory):
    """A Reach demo store and a deterministic BC base trained briefly on it (imperfect on purpose)."""
    root = tmp_path_factory.mktemp("reach")
    collect("Reach", root / "demos", episodes=6, seed=3, progress=False)
    policy = PolicyConfig.from_dict({"kind": "bc", "obs_keys": ["state"], "horizon": 8, "n_obs_steps": 2,
                                     "n_action_steps": 4, "mlp_hidden": [64, 64]})
    result = train_base(root / "demos", root / "base", task="Reach", policy=policy,
                        train=TrainConfig.from_dict({"steps": 60, "batch_size": 32, "val_every": 60,
                                                     "ckpt_every": 60}), progress=False)
    return root / "demos", result["checkpoint"]


def test_cli_trains_logs_checkpoints_and_records_every_rollout(reach, tmp_path, capsys):
    demos, base = reach
    out = tmp_path / "run"
    code = main(["train-residual", "task=Reach", f"base={base}", f"demos={demos}", "steps=240", "num_envs=4",
                 "eval.every=120", "eval.episodes=4", "eval.num_envs=4", "eval.variants=[nominal,real_a]",
                 "log_every=60", f"out={out}", "progress=false", "gate.enabled=true", "gate.updates=40", *SMALL])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["env_steps"] == 240 and summary["demo_episodes"] == 6
    assert [step for step, _ in summary["curve"]] == [0, 120, 240]
    assert "success/real_a" in summary and 0.0 <= summary["final_success"] <= 1.0
    gate = summary["gate"]  # the gate ran on the rollouts and its decision follows its own rule
    assert gate["accept"] == (gate["candidate"] > gate["deployed"] + gate["margin"]) and "beat" in gate["reason"]
    # the untrained residual is exactly zero: the first evaluation is the base's own, on the same seeds
    assert summary["base_success"] == evaluate_residual("Reach", base, None, episodes=4, num_envs=4)["success"]
    for name in ("log.csv", "eval.csv", "learning_curve.png", "summary.json"):
        assert (out / name).stat().st_size > 0
    assert any((out / "tensorboard").iterdir()) and any((out / "checkpoints").iterdir())
    assert "success/real_a" in (out / "eval.csv").read_text().splitlines()[0]

    # the first most successful evaluation's state is kept apart, and scores again what it scored
    successes = [success for _, success in summary["curve"]]
    assert summary["best_success"] == max(successes)
    assert summary["best_steps"] == summary["curve"][successes.index(max(successes))][0]
    assert read_checkpoint(summary["best_checkpoint"])[1]["step"] == summary["best_steps"]
    assert evaluate_residual("Reach", base, summary["best_checkpoint"], episodes=4,
                             num_envs=4)["success"] == summary["best_success"]

    # every finished online episode is in the rollout store, with what the robot did and why
    assert validate(str(out / "rollouts"))["valid"]
    store = EpisodeStore.open(out / "rollouts")
    assert store.num_episodes == summary["online_episodes"] >= 4
    for i in range(store.num_episodes):
        meta, steps = store.episode_meta(i), store.episode(i)
        assert meta["source"] == "policy" and meta["task"] == "Reach"
        np.testing.assert_allclose(steps["action"], np.clip(steps["base_action"] + steps["residual_action"], -1, 1),
                                   atol=1e-6)
        assert np.isnan(steps["human_action"]).all() and not steps["intervention"].any()
        assert bool(steps["terminated"][-1]) == meta["success"]


def test_simulated_takeovers_are_recorded_like_real_ones(reach, tmp_path, capsys):
    demos, base = reach
    out = tmp_path / "run"
    code = main(["train-residual", "task=Reach", f"base={base}", f"demos={demos}", "steps=160", "num_envs=4",
                 "eval.every=0", "eval.episodes=4", "eval.num_envs=4", "log_every=40", f"out={out}",
                 "progress=false", "takeover.enabled=true", "takeover.threshold=0", "takeover.patience=2",
                 "takeover.hold=3", *SMALL])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["takeover"] == {"enabled": True, "threshold": 0.0, "patience": 2, "hold": 3}
    store = EpisodeStore.open(out / "rollouts")
    finished = sum(int(store.episode(i)["intervention"].sum()) for i in range(store.num_episodes))
    assert 0 < finished / 160 <= summary["takeover_share"] < 1  # unfinished episodes' takeovers count too
    rates = [float(row.split(",")[2]) for row in (out / "log.csv").read_text().splitlines()[1:]]
    assert rates and all(0 < r < 1 for r in rates)  # any proposal differs from the expert's: 3 of every 4 steps
    assert validate(str(out / "rollouts"))["valid"] and store.num_episodes >= 1
    for i in range(store.num_episodes):
        steps = store.episode(i)
        taken = steps["intervention"]
        assert not taken[0] and taken[1:4].all()  # patience 2: the expert acts from the 2nd step, for hold = 3
        np.testing.assert_array_equal(steps["action"][taken], steps["human_action"][taken])
        assert np.isnan(steps["human_action"][~taken]).all()
        np.testing.assert_allclose(steps["policy_action"],  # what the policy proposed, also where it was overruled
                                   np.clip(steps["base_action"] + steps["residual_action"], -1, 1), atol=1e-6)
        assert not np.allclose(steps["policy_action"][taken], steps["action"][taken])
        assert (steps["reward"] >= 0).all()  # the store keeps the task's reward; the penalty is the learner's


def test_a_resumed_run_refills_its_replay_and_continues_its_records(reach, tmp_path, capsys):
    """resume=true: the run continues from its checkpoint with its recorded rollouts back in the replay (the newest
    that fit), appends to the same rollout store, and its CSV and summary carry the whole run once: records the
    stopped run made after its last checkpoint are made again, not kept twice. It keeps the state statistics its
    networks learned with, though the demos grew in between."""
    source, base = reach
    demos, out = tmp_path / "demos", tmp_path / "run"
    shutil.copytree(source, demos)
    args = ["train-residual", "task=Reach", f"base={base}", f"demos={demos}", "num_envs=2", "eval.every=100",
            "eval.episodes=4", "eval.num_envs=4", "log_every=50", f"out={out}", "progress=false", *SMALL]
    assert main([*args, "steps=200"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    columns = (out / "eval.csv").read_text().splitlines()[0].count(",")
    with open(out / "eval.csv", "a") as handle:  # an evaluation past the checkpoint, as a killed run leaves one
        handle.write("250" + ",0.5" * columns + "\n")
    with EpisodeStore.open(out / "rollouts") as store:
        recorded = store.num_episodes
    assert recorded == first["online_episodes"] >= 4
    collect("Reach", demos, episodes=2, seed=11, progress=False)
    stats = read_checkpoint(out / "checkpoints")[1]["meta"]["agent"]["obs_stats"]

    assert main([*args, "steps=300", "resume=true"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [step for step, _ in summary["curve"]] == [0, 100, 200, 300]
    assert summary["curve"][:3] == first["curve"] and summary["base_success"] == first["base_success"]
    assert [int(row.split(",")[0]) for row in (out / "eval.csv").read_text().splitlines()[1:]] == [0, 100, 200, 300]
    log_steps = [int(float(row.split(",")[0])) for row in (out / "log.csv").read_text().splitlines()[1:]]
    assert log_steps == sorted(set(log_steps)) and log_steps[-1] == 300
    assert summary["rollouts"] == str(out / "rollouts") and summary["env_steps"] == 300
    assert summary["resumed"] == {"env_steps": 200, "replay_episodes": recorded} and first["resumed"] is None
    assert summary["demo_episodes"] == 8
    assert read_checkpoint(out / "checkpoints")[1]["meta"]["agent"]["obs_stats"] == stats
    with EpisodeStore.open(out / "rollouts") as store:
        assert store.num_episodes == summary["online_episodes"] > recorded
        assert validate(str(out / "rollouts"))["valid"]

        # the replay holds the demos, then the recorded episodes that fit, oldest first
        cache = ReplayCache(10_000, replay_spec(store.schema["obs/state"].shape[0], store.schema["action"].shape[0]))
        replay = EpisodeReplay(cache, load_recipe("ours"), 4)
        episodes, sources = load_demos(demos, "Reach", base)
        for episode, source in zip(episodes, sources):
            replay.add_episode(episode, source)
        assert restore_replay(replay, out / "rollouts", 10_000, {}) == store.num_episodes
        assert cache.num_episodes == len(episodes) + store.num_episodes
        lengths = np.diff(np.concatenate([[0], store.episode_ends]))
        tail = load_rollouts(store, int(lengths[-3:].sum()), {})  # room for the newest three, not one step more
        assert [len(e["reward"]) for e in tail] == list(lengths[-3:])
        last = store.episode(store.num_episodes - 1)
        for key, stored in (("obs", last["obs/state"]), ("base_action", last["base_action"]),
                            ("intervention", last["intervention"])):
            np.testing.assert_array_equal(tail[-1][key], stored)

    # a run's folder is never written over; resuming needs a checkpoint behind the steps asked for
    assert main([*args, "steps=300"]) == 2
    assert "already holds a run; give a new out=DIR, or resume=true" in capsys.readouterr().err
    assert main([*args, "steps=300", "resume=true"]) == 2
    assert "already at 300 env steps; give steps= more than that" in capsys.readouterr().err
    assert main([*args, "steps=400", "resume=true", "num_envs=4"]) == 2
    assert "resume it with num_envs=2" in capsys.readouterr().err
    assert main([*args, "steps=400", "resume=true", "episode_steps=5"]) == 2
    assert "the run trained with episode_steps=null; resume it with episode_steps=null" in capsys.readouterr().err
    shutil.rmtree(out / "checkpoints")
    assert main([*args, "steps=400", "resume=true"]) == 2
    assert "has no checkpoint to continue from" in capsys.readouterr().err


def test_demo_base_actions_are_the_base_replayed_along_each_demo(reach):
    demos, base = reach
    episodes, sources = load_demos(demos, "Reach", base)
    assert sources == ["scripted"] * 6
    scheduler = ChunkScheduler(load_policy(base), mode="open_loop")
    with EpisodeStore.open(demos) as store:
        for i in (0, 5):
            scheduler.reset()  # a fresh chunk queue per demo: no chunk crosses into the next episode
            expected = [scheduler.step({"state": s})[0] for s in store.episode(i)["obs/state"]]
            np.testing.assert_allclose(episodes[i]["base_action"], np.stack(expected), atol=1e-5)
            np.testing.assert_array_equal(episodes[i]["action"], store.episode(i)["action"])


def test_episode_steps_cuts_training_episodes_and_not_evaluations(reach, tmp_path, capsys, monkeypatch):
    """`episode_steps` truncates the training episodes (the critic bootstraps through the cut); the evaluations keep
    the task's time limit, so a run's success stays comparable with its base's."""
    demos, base = reach
    out = tmp_path / "run"
    gate_limits = []  # the gate values the rollouts under the limit they ran under

    def gate(*args, time_limit, encoder):
        gate_limits.append(time_limit)
        return {"accept": False}

    monkeypatch.setattr("robot_rl.workflows.train_residual.gate_against_base", gate)
    code = main(["train-residual", "task=Reach", f"base={base}", f"demos={demos}", "steps=160", "num_envs=4",
                 "episode_steps=3", "eval.every=0", "eval.episodes=8", "eval.num_envs=4", "log_every=40",
                 f"out={out}", "progress=false", "gate.enabled=true", *SMALL])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["episode_steps"] == 3 and gate_limits == [3]
    store = EpisodeStore.open(out / "rollouts")
    assert store.num_episodes >= 4 * (160 // 4 // 3)
    for i in range(store.num_episodes):  # each ends on success or is cut at 3 steps, never later
        steps, success = store.episode(i), store.episode_meta(i)["success"]
        assert len(steps["reward"]) <= 3 and bool(steps["terminated"][-1]) == success
        assert success or (len(steps["reward"]) == 3 and steps["truncated"][-1])
    # the evaluations ran to the task's limit: they scored what the base scores there, not in 3-step episodes
    full = evaluate_residual("Reach", base, None, episodes=8, num_envs=4)["success"]
    cut_envs = sim.make_vec_env("Reach", 4, same_step_reset=True, max_steps=3)
    try:
        cut = evaluate(cut_envs, 8, load_base(base, "Reach", 4), None, None, obs_key="state")["success"]
    finally:
        cut_envs.close()
    assert summary["base_success"] == full != cut

    # a resumed run keeps the limit it trained under: another one (the task's, when left out) is refused
    resume = ["train-residual", "task=Reach", f"base={base}", f"demos={demos}", "steps=200", "num_envs=4",
              "eval.every=0", "eval.episodes=8", "eval.num_envs=4", f"out={out}", "progress=false", "resume=true",
              *SMALL]
    assert main(resume) == 2
    assert "the run trained with episode_steps=3; resume it with episode_steps=3" in capsys.readouterr().err
    assert main([*resume, "episode_steps=3"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["resumed"]["env_steps"] == 160 and resumed["env_steps"] == 200
    with EpisodeStore.open(out / "rollouts") as store:  # the episodes the resumed part added are cut at 3 too
        assert store.num_episodes > summary["online_episodes"]
        assert max(np.diff(np.concatenate([[0], store.episode_ends]))) <= 3
    # a checkpoint from before the limit was recorded: a finished run's summary says it; else a warning, no refusal
    with pytest.raises(UserError, match="trained with episode_steps=3; resume it with episode_steps=3"):
        check_resumed_limit(out, {}, None)
    check_resumed_limit(tmp_path, {}, None)
    assert "does not record the episode limit it trained under" in capsys.readouterr().err


def test_bad_input_is_a_clear_error(reach, tmp_path):
    demos, base = reach
    recipe, loop = load_recipe("ours"), LoopConfig(total_steps=8)
    with pytest.raises(UserError, match="trained for task 'Reach', not 'PushCube'"):
        train_residual("PushCube", base, recipe, loop, tmp_path / "a")
    with pytest.raises(UserError, match="needs its base policy"):
        train_residual("Reach", None, recipe, loop, tmp_path / "b")
    with pytest.raises(UserError, match="does not exist"):
        train_residual("Reach", tmp_path / "missing.safetensors", recipe, loop, tmp_path / "c")
    with pytest.raises(UserError, match="episode_steps=0: give a positive number"):
        train_residual("Reach", base, recipe, loop, tmp_path / "d", episode_steps=0)
    with pytest.raises(UserError, match="holds Reach episodes, not PushCube"):
        load_demos(demos, "PushCube", None)


def test_base_expert_with_a_bias_is_a_controlled_base(tmp_path, capsys):
    """base=expert base_bias=[...]: the scripted expert off by a constant bias drives the run (no checkpoint); a bias
    of the wrong length, or the gate (which needs a checkpoint), is a one-line error."""
    import sim
    from robot_rl.policies.expert_base import ExpertBase

    action_dim = sim.make_env("Reach").robot.action_dim
    bias = [0.5] + [0.0] * (action_dim - 1)
    args = ["train-residual", "task=Reach", "base=expert", f"base_bias=[{','.join(map(str, bias))}]", "steps=128",
            "num_envs=2", "eval.every=0", "eval.episodes=4", "eval.num_envs=2", "progress=false",
            "rollouts=false", *SMALL]
    assert main([*args, f"out={tmp_path / 'run'}"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["base"].startswith("expert+bias[0.5") and summary["env_steps"] == 128
    envs = sim.make_vec_env("Reach", 2, same_step_reset=True)
    from robot_rl.rl.loop import evaluate

    biased = evaluate(envs, 4, ExpertBase("Reach", 2, bias), obs_key="state")["success"]
    assert summary["base_success"] == biased < evaluate(envs, 4, ExpertBase("Reach", 2), obs_key="state")["success"]
    assert main([*args, "base_bias=[0.1]", f"out={tmp_path / 'bad'}"]) == 2
    assert "base_bias has 1 values" in capsys.readouterr().err
    assert main([*args, "gate.enabled=true", f"out={tmp_path / 'gate'}"]) == 2
    assert "base=expert has none" in capsys.readouterr().err


def test_a_recipe_with_a_camera_trains_on_rendered_images(reach, tmp_path):
    """encoder.image_keys=[image_front]: the mirrors render the camera, demos must carry it at the same size, the
    learner's encoder trains on it, the rollout store records it, and the gate's critic reads it."""
    demos, base = reach
    recipe = load_recipe("ours", warmup_steps=32, batch_size=16, critic_warmup_updates=2, **{
        "actor.hidden_dim": 16, "critic.hidden_dim": 16, "critic.num_bins": 21, "encoder.image_keys": ["image_front"],
        "encoder.channels": [8], "encoder.feature_dim": 8, "encoder.shift": 1})
    loop = LoopConfig(total_steps=64, eval_episodes=2)
    with pytest.raises(UserError, match="has obs/image_front of shape none, the learner reads"):
        train_residual("Reach", base, recipe, loop, tmp_path / "a", demos=demos, num_envs=2, eval_num_envs=2,
                       image_size=16, progress=False)
    camera_demos = tmp_path / "camera_demos"
    collect("Reach", camera_demos, episodes=2, seed=5, cameras=["front"], image_size=16, progress=False)
    summary = train_residual("Reach", base, recipe, loop, tmp_path / "b", demos=camera_demos, num_envs=2,
                             eval_num_envs=2, image_size=16, progress=False, gate={"margin": 0.0, "updates": 8},
                             episode_steps=8)
    assert summary["env_steps"] == 64 and summary["demo_episodes"] == 2
    gate = summary["gate"]  # valued by a critic reading the camera too: the residual needs its images
    assert gate["accept"] == (gate["candidate"] > gate["deployed"] + gate["margin"])
    with EpisodeStore.open(summary["rollouts"]) as store:
        assert tuple(store.schema["obs/image_front"].shape) == (16, 16, 3)
        assert store.num_episodes >= 2 and store.episode(0)["obs/image_front"].max() > 0  # rendered, not blank
    from robot_rl.workflows.candidates import load_candidate

    candidate = load_candidate(f"{base}+{summary['checkpoint_dir']}")  # ranked with its camera (tests/eval/test_rank)
    assert candidate.residual.image_shapes == {"image_front": (16, 16, 3)}
    env = candidate.mirror()
    assert env.reset(seed=0)[0]["image_front"].shape == (16, 16, 3)
    env.close()
    held_out = evaluate_residual("Reach", base, summary["checkpoint_dir"], episodes=2, num_envs=2, seed=9)
    assert 0.0 <= held_out["success"] <= 1.0  # its mirrors render the camera the residual reads


def test_a_trained_base_checkpoint_runs_through_evaluate(reach, capsys):
    _, base = reach
    assert main(["evaluate", f"checkpoint={base}", "episodes=3", "progress=false"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == "Reach" and result["episodes"] == 3 and 0.0 <= result["success_rate"] <= 1.0
    assert main(["evaluate", "task=PushCube", f"checkpoint={base}", "episodes=1", "progress=false"]) == 2
    assert "trained for task 'Reach', not 'PushCube'" in capsys.readouterr().err
