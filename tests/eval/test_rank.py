"""`robot-rl rank` end to end on a tiny store with tiny candidates (two base policies and a base + residual), and its
one-line errors for bad input. Real MuJoCo, real zarr, real torch and JAX; sizes cut to the bone."""

import dataclasses
import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from robot_rl.cli.main import main
from robot_rl.data import EpisodeStore, ReplayCache
from robot_rl.errors import UserError
from robot_rl.eval.blend import blend, discounted_return
from robot_rl.eval.chunked_td import ChunkedTDEvaluator, EvaluatorConfig
from robot_rl.eval.model_based import ModelConfig, task_success
from robot_rl.policies import PolicyConfig, TrainConfig, train_policy
from robot_rl.workflows.candidates import load_candidate, parse_spec
from robot_rl.workflows.collect import collect
from robot_rl.workflows.rank import (
    format_table,
    load_cache,
    mc_by_candidate,
    model_estimates,
    own_returns,
    rank_policies,
)

TINY = [f"{group}.{key}" for group in ("evaluator", "baseline")
        for key in ("updates=10", "updates_per_call=10", "hidden_dim=16", "num_critics=2", "batch_size=32")]
TINY += ["model.updates=10", "model.updates_per_call=10", "model.hidden_dim=16", "model.ensemble=2", "progress=false"]


CAMERA = ["evaluator.encoder.image_keys=[obs/image_front]", "evaluator.encoder.channels=[4]",
          "evaluator.encoder.feature_dim=4", "baseline.encoder.image_keys=[obs/image_front]"]  # critics with a camera


def camera_store(root: Path) -> Path:
    """Two PushCube episodes with a 12-pixel front camera."""
    collect("PushCube", root, episodes=2, noise=0.1, seed=0, progress=False, cameras=["front"], image_size=12)
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank")
    store = root / "store"
    collect("PushCube", store, episodes=4, noise=0.1, seed=0, progress=False)
    train = TrainConfig(steps=4, warmup_steps=1, val_every=4, ckpt_every=4, batch_size=8)
    bases = []
    for name, n_obs in (("a", 1), ("b", 2)):  # b reads a history of two states
        policy = PolicyConfig(kind="bc", n_obs_steps=n_obs, horizon=8, n_action_steps=8, mlp_hidden=(16,))
        train_policy(store, root / name, policy, train, task="PushCube", progress=False)
        bases.append(str(root / name / "policy.safetensors"))
    from robot_rl.rl.agent import ResidualAgent
    from robot_rl.rl.checkpoint import save_checkpoint
    from robot_rl.rl.config import AgentConfig

    cfg = AgentConfig(actor={"hidden_dim": 16}, critic={"hidden_dim": 16})
    agent = ResidualAgent(cfg, 21, 4)
    save_checkpoint(root / "residual", agent.init(0), {"agent": cfg.to_dict(), "obs_dim": 21, "action_dim": 4}, 0)
    return root, store, [bases[0], bases[1], f"{bases[0]}+{root / 'residual'}"]


def test_rank_end_to_end_writes_table_json_and_plots(setup, capsys):
    root, store, candidates = setup
    out = root / "run"
    candidates = [candidates[1], candidates[2]]  # a base reading a history, and a base + residual
    code = main(["rank", f"candidates=[{','.join(candidates)}]", f"data={store}", "truth=sim", "truth_episodes=1",
                 f"out={out}", *TINY])
    stdout = capsys.readouterr().out
    assert code == 0
    lines = stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["n_policies"] == 2 and sorted(r["rank"] for r in result["candidates"]) == [1, 2]
    for row in result["candidates"]:
        assert row["pessimistic"] <= row["estimate"] and row["spread"] >= 0 and row["mc_episodes"] == 0
        assert row["name"] in candidates and "true" in row
        assert row["model_pessimistic"] <= row["model"] <= 1 and row["model_spread"] >= 0
    assert set(result["scores"]) == {"chunked_td", "fqe", "mc", "pessimistic", "blend", "model"}
    assert "spearman" in result["scores"]["chunked_td"] and "sharpe_at_3" in result["scores"]["fqe"]
    assert any(line.split()[:1] == ["1"] for line in lines[:-1])  # the table, best first
    written = json.loads((out / "ranking.json").read_text())
    assert written["candidates"] == result["candidates"]
    assert (out / "estimate_vs_true.png").stat().st_size > 0 and (out / "top_k.png").stat().st_size > 0


def test_candidate_specs_and_residual_chunks(setup):
    root, _, candidates = setup
    assert parse_spec("x.safetensors+res") == (Path("x.safetensors"), Path("res"))
    plain, with_residual = load_candidate(candidates[0]), load_candidate(candidates[2])
    states = np.random.default_rng(0).normal(size=(5, 21)).astype(np.float32)
    chunks = with_residual({"state": states})
    assert chunks.shape == (5, 8, 4) and np.all(np.abs(chunks) <= 1)
    np.testing.assert_allclose(chunks, plain({"state": states}), atol=1e-6)  # zero-initialized residual: no change
    history = load_candidate(candidates[1])
    assert history.n_obs_steps == 2 and history({"state": states[:, None].repeat(2, 1)}).shape == (5, 8, 4)


@pytest.mark.parametrize("args, message", [
    (["candidates=[/nonexistent/policy.safetensors]"], "base policy /nonexistent/policy.safetensors does not exist"),
    (["evaluator.obs_key=obs/missing", "baseline.obs_key=obs/missing"], "has no key 'obs/missing'"),
    (["candidates=[]"], "no candidates"),
    (["truth=/nonexistent/truth.csv"], "truth file /nonexistent/truth.csv does not exist"),
    (["{candidate}+/nonexistent/residual"], "residual checkpoint /nonexistent/residual does not exist"),
])
def test_bad_input_is_one_line(setup, capsys, args, message):
    root, store, candidates = setup
    args = [f"candidates=[{a.format(candidate=candidates[0])}]" if a.startswith("{") else a for a in args]
    if not any(a.startswith("candidates=") for a in args):
        args.append(f"candidates=[{candidates[0]}]")
    code = main(["rank", f"data={store}", f"out={root / 'bad'}", *args, *TINY])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (root / "bad").exists()  # nothing partial


def test_leave_out_fits_each_candidate_without_its_own_episodes(setup, tmp_path):
    root, store, candidates = setup
    data = tmp_path / "logged"
    shutil.copytree(store, data)
    own, never = load_candidate(candidates[0]), load_candidate(candidates[1])
    with EpisodeStore.open(data, mode="a") as logged:  # two episodes "of" the first candidate
        steps = logged.read_steps(0, int(logged.episode_ends[0]))
        with logged.writer() as writer:
            for _ in range(2):
                for i in range(len(steps["reward"])):
                    writer.add_step({key: value[i] for key, value in steps.items()})
                writer.end_episode(success=True, source="policy", policy_id=own.name)
    evaluator = EvaluatorConfig(horizon=8, updates=10, updates_per_call=10, hidden_dim=16, num_critics=2, batch_size=32)
    model = ModelConfig(ensemble=2, hidden_dim=16, updates=20, updates_per_call=10)
    rank = functools.partial(rank_policies, [own, never], data, evaluator, out=None, progress=False, model=model)
    seen, left_out = rank(), rank(leave_out=True)
    assert [r["data_episodes"] for r in seen["candidates"]] == [6, 6]
    assert [r["mc_episodes"] for r in seen["candidates"]] == [2, 0]
    assert [r["data_episodes"] for r in left_out["candidates"]] == [4, 6]  # only its own episodes leave
    assert [r["mc_episodes"] for r in left_out["candidates"]] == [0, 0]
    assert left_out["candidates"][0]["mc"] == left_out["candidates"][1]["mc"] == seen["behavior_value"]
    cache, _ = load_cache(data, evaluator.obs_key)
    alone = ChunkedTDEvaluator(evaluator, cache.select(range(4))).fit(own)  # the store's first four episodes
    assert left_out["candidates"][0]["estimate"] == pytest.approx(alone.value, abs=1e-6)
    assert left_out["candidates"][0]["estimate"] != seen["candidates"][0]["estimate"]
    assert left_out["candidates"][1]["estimate"] == seen["candidates"][1]["estimate"]  # same data, same seed
    by_hand = model_estimates(model, cache.select(range(4)), evaluator.obs_key, [own], task_success("PushCube", 21),
                              evaluator.gamma, 100)[0]  # the model, too, fitted without its own episodes
    assert left_out["candidates"][0]["model_spread"] == pytest.approx(by_hand.spread, abs=1e-9)
    assert left_out["candidates"][0]["model"] == pytest.approx(by_hand.value, abs=1e-9)
    assert left_out["candidates"][1]["model"] == seen["candidates"][1]["model"]
    with EpisodeStore.open(store) as logged:
        expert = str(logged.meta["policy_id"][0])
    with pytest.raises(UserError, match="nothing is left to value it on"):  # every episode is its own
        rank_policies([dataclasses.replace(own, name=expert)], store, evaluator, out=None, progress=False,
                      leave_out=True)


def test_blend_uses_a_candidates_own_episodes(setup, tmp_path):
    """Five episodes logged as the first candidate's: two ran its proposals throughout; one ran 0.01 off them from
    step 3 on (each chunk's return corrected by the critic's advantage of the candidate's chunk over what ran); one
    0.2 off from step 10 (beyond blend_tolerance: its return ends there and the critic's value of the candidate's
    chunk stands in for the rest); one taken over at step 3 (the same there). The blend weighs the five returns
    against the critic; the candidate that never ran keeps its estimate; under leave_out nothing is blended."""
    root, store, candidates = setup
    data = tmp_path / "logged"
    shutil.copytree(store, data)
    own, never = load_candidate(candidates[0]), load_candidate(candidates[1])
    with EpisodeStore.open(data, mode="a") as logged:
        first, second = (logged.episode(i) for i in (0, 1))
        with logged.writer() as writer:
            for steps, offset, taken in ((first, 0.0, False), (second, 0.0, False), (first, (0.01, 3), False),
                                         (first, (0.2, 10), False), (first, 0.0, True)):
                for i in range(len(steps["reward"])):
                    off = offset[0] if offset and i >= offset[1] else 0.0
                    writer.add_step({**{key: value[i] for key, value in steps.items()},
                                     "policy_action": steps["action"][i] + off, "intervention": taken and i >= 3})
                writer.end_episode(success=True, source="policy", policy_id=own.name)
    evaluator = EvaluatorConfig(horizon=8, updates=10, updates_per_call=10, hidden_dim=16, num_critics=2, batch_size=32)
    rows = rank_policies([own, never], data, evaluator, out=None, progress=False)["candidates"]
    assert (rows[0]["mc_episodes"], len(rows[0]["blend_returns"]), rows[1]["blend_returns"]) == (5, 5, [])
    n1, n2 = len(first["reward"]), len(second["reward"])  # beyond 0.05: the 0.2 from step 10; 3 steps not taken over
    assert rows[0]["off_proposal"] == pytest.approx((n1 - 10) / (3 * n1 + n2 + 3)) and rows[1]["off_proposal"] is None

    cache, _ = load_cache(data, evaluator.obs_key)  # the same fit by hand: same data, same seed
    critic = ChunkedTDEvaluator(evaluator, cache)
    proposals = critic.policy_chunks(own, np.flatnonzero(cache.valid))
    assert critic.fit(own, proposals).value == pytest.approx(rows[0]["estimate"], abs=1e-6)
    returns = own_returns(critic, proposals, [4, 5, 6, 7, 8], tolerance=0.05)  # the store's four episodes first
    starts = cache.episode_starts()

    def q(slot, chunk):
        return critic.q_values(cache.data[evaluator.obs_key][[slot]], chunk.reshape(1, 8, -1),
                               cache.step[[slot]]).mean()

    gamma, n = evaluator.gamma, len(first["reward"])
    explored = discounted_return(first["reward"], gamma)
    for c in range(0, n, 8):  # every chunk a little off (the first from its step 3), the last partial one filled in
        slot, ran = int(starts[6]) + c, min(8, n - c)
        chunk = proposals[slot].reshape(8, -1).copy()
        chunk[:ran] = cache.data["action"][slot:slot + ran]
        explored += gamma ** c * (q(slot, proposals[slot]) - q(slot, chunk))
    far, taken = int(starts[7]) + 10, int(starts[8]) + 3
    expected = [discounted_return(first["reward"], gamma), discounted_return(second["reward"], gamma), explored,
                discounted_return(first["reward"][:10], gamma) + gamma ** 10 * q(far, proposals[far]),
                discounted_return(first["reward"][:3], gamma) + gamma ** 3 * q(taken, proposals[taken])]
    np.testing.assert_allclose(returns, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rows[0]["blend_returns"], returns, rtol=1e-5, atol=1e-6)
    assert abs(returns[2] - returns[0]) > 1e-5  # the correction moved the explored episode's return
    values, weights = blend([r["estimate"] for r in rows], [returns, []])
    assert [r["blend"] for r in rows] == pytest.approx(list(values), abs=1e-6) and rows[1]["blend_weight"] == 0.0
    assert [r["blend_weight"] for r in rows] == pytest.approx(list(weights)) and rows[1]["blend"] == rows[1]["estimate"]
    assert rank_policies([own, never], data, evaluator, out=None, progress=False,
                         leave_out=True)["candidates"][0]["blend_returns"] == []
    with pytest.raises(UserError, match="blend_tolerance must be >= 0"):
        rank_policies([own], data, evaluator, out=None, progress=False, blend_tolerance=-1.0)


def test_the_table_notes_candidates_logged_with_more_noise_than_the_blend_uses():
    row = {"rank": 1, "name": "a", "estimate": 0.5, "pessimistic": 0.4, "spread": 0.1, "fqe": 0.3, "mc": 0.2,
           "blend": 0.5, "off_proposal": 0.02}
    result = {"candidates": [row, {**row, "rank": 2, "name": "b", "off_proposal": None}], "blend_tolerance": 0.05,
              "leave_out": False}
    assert "note:" not in format_table(result)
    row["off_proposal"] = 0.3
    assert "note: a: more than 5% of their own logged steps ran further than blend_tolerance 0.05" in format_table(
        result)
    assert "note:" not in format_table({**result, "leave_out": True})  # no own episodes in the fits: nothing to say


def test_monte_carlo_by_candidate_by_hand():
    spec = {"obs/state": ((1,), np.float32), "reward": ((), np.float32), "terminated": ((), bool)}
    cache = ReplayCache(100, spec)
    for rewards in ([0, 0, 1], [0, 1], [0, 0, 0, 0]):
        n = len(rewards)
        cache.add_episode({"obs/state": np.zeros((n, 1)), "reward": np.array(rewards, np.float32),
                           "terminated": np.arange(n) == n - 1}, "policy")
    values, counts = mc_by_candidate(cache, ["p", "p", "q"], ["p", "q", "never"], gamma=0.5)
    assert values[0] == pytest.approx((0.25 + 0.5) / 2) and values[1] == 0.0
    assert values[2] == pytest.approx((0.25 + 0.5 + 0) / 3)  # never logged: the value of all logged data
    assert counts == [2, 1, 0]


def test_rank_with_a_camera_critic(setup, tmp_path, capsys):
    """`evaluator.encoder.image_keys` gives the critics the store's camera images (the learner's encoder design); the
    blend's own returns query the same critic; a camera the store lacks is a one-line error."""
    root, _, candidates = setup
    store = camera_store(tmp_path / "camera_store")
    code = main(["rank", f"candidates=[{candidates[0]}]", f"data={store}", f"out={tmp_path / 'run'}", *CAMERA, *TINY])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and np.isfinite(result["candidates"][0]["estimate"])
    with EpisodeStore.open(store, mode="a") as logged:  # an episode of the candidate: the blend queries the critic
        steps = logged.read_steps(0, int(logged.episode_ends[0]))
        with logged.writer() as writer:
            for i in range(len(steps["reward"])):
                writer.add_step({key: value[i] for key, value in steps.items()})
            writer.end_episode(success=True, source="policy", policy_id=candidates[0])
    evaluator = EvaluatorConfig(horizon=8, updates=10, updates_per_call=10, hidden_dim=16, num_critics=2,
                                batch_size=32, encoder={"image_keys": ["obs/image_front"], "channels": [4],
                                                        "feature_dim": 4})
    row = rank_policies([candidates[0]], store, evaluator, out=None, progress=False)["candidates"][0]
    assert len(row["blend_returns"]) == 1 and np.isfinite(row["blend_returns"][0])
    code = main(["rank", f"candidates=[{candidates[0]}]", f"data={root / 'store'}", f"out={tmp_path / 'bad'}",
                 *CAMERA, *TINY])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no key 'obs/image_front'" in err, err


def camera_residual(path: Path, size: int) -> Path:
    """A residual reading `image_front` at `size` pixels, its actor perturbed from the zero-initialized heads so that
    what it outputs depends on its inputs, the image included."""
    import jax

    from robot_rl.rl.agent import ResidualAgent
    from robot_rl.rl.checkpoint import save_checkpoint
    from robot_rl.rl.config import AgentConfig

    cfg = AgentConfig(actor={"hidden_dim": 16}, critic={"hidden_dim": 16},
                      encoder={"image_keys": ["image_front"], "channels": [4], "feature_dim": 4})
    agent = ResidualAgent(cfg, 21, 4, {"image_front": (size, size, 3)})
    state = agent.init(0)
    rng = np.random.default_rng(0)
    jitter = functools.partial(jax.tree_util.tree_map, lambda x: x + rng.normal(0, 0.5, np.shape(x)).astype(np.float32))
    state = dataclasses.replace(state, actor=jitter(state.actor), critic=jitter(state.critic))  # the critic holds the
    # encoder the actor reads
    meta = {"agent": cfg.to_dict(), "obs_dim": 21, "action_dim": 4, "image_shapes": {"image_front": [size, size, 3]}}
    save_checkpoint(path, state, meta, 0)
    return path


def test_a_residual_reading_a_camera_is_ranked_and_rolled_out_with_its_images(setup, tmp_path, capsys):
    """A residual trained with a camera gets the images as a candidate: in the chunks the evaluator scores (from the
    store, through the critic's cameras), step by step in the mirror (which renders its camera at its size), and in
    `rank ... truth=sim`; a caller without the images gets a one-line error naming the setting."""
    root, _, candidates = setup
    base = candidates[0]
    spec = f"{base}+{camera_residual(tmp_path / 'residual', 12)}"
    candidate = load_candidate(spec)
    env = candidate.mirror()
    try:
        obs, _ = env.reset(seed=0)
        assert obs["image_front"].shape == (12, 12, 3) and obs["image_front"].max() > 0
        actor = candidate.actor()
        actor.reset(0)
        batch = {key: value[None] for key, value in obs.items()}
        np.testing.assert_allclose(actor(obs), candidate(batch)[0, 0], atol=1e-5)  # one residual, two paths
        actor.close()
    finally:
        env.close()
    other = {**batch, "image_front": 255 - batch["image_front"]}
    assert np.abs(candidate(other) - candidate(batch)).max() > 1e-3  # the residual reads the image
    with pytest.raises(UserError, match=r"evaluator.encoder.image_keys to \['obs/image_front'\]"):
        candidate({"state": batch["state"]})
    with pytest.raises(UserError, match="at the size it was trained on"):
        candidate({**batch, "image_front": np.zeros((1, 8, 8, 3), np.uint8)})

    store = camera_store(tmp_path / "camera_store")
    code = main(["rank", f"candidates=[{base},{spec}]", f"data={store}", f"out={tmp_path / 'run'}", "truth=sim",
                 "truth_episodes=1", *CAMERA, *TINY])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    rows = {row["name"]: row for row in result["candidates"]}
    assert np.isfinite(rows[spec]["estimate"]) and rows[spec]["estimate"] != rows[base]["estimate"]
    assert "predicts states" in result["model_note"] and "model" not in rows[spec]  # no images to roll out on
    assert 0.0 <= rows[spec]["true_success"] <= 1.0
    code = main(["rank", f"candidates=[{spec}]", f"data={store}", f"out={tmp_path / 'bad'}", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "evaluator.encoder.image_keys" in err, err


def test_evaluate_runs_a_checkpoint_steered_by_a_critic_fitted_on_a_store(setup, capsys):
    """`robot-rl evaluate checkpoint=CKPT steer.k=K steer.data=ROOT`: the critic is fitted for the checkpoint on ROOT
    and every chunk is the best of K samples; the result says what steered it. Bad steering input is one line."""
    root, store, candidates = setup
    tiny = [f"steer.evaluator.{key}" for key in ("updates=10", "updates_per_call=10", "hidden_dim=16",
                                                  "num_critics=2", "batch_size=32")]
    run = ["evaluate", f"checkpoint={candidates[1]}", "episodes=2", "progress=false"]  # the base reading a history
    assert main([*run, "steer.k=4", f"steer.data={store}", *tiny]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0
    steer = result["steer"]
    assert (steer["k"], steer["keep"], steer["data"]) == (4, 4, str(store)) and np.isfinite(steer["critic_value"])
    assert main([*run, "seed=9"]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*run, "seed=9", "steer.k=1", f"steer.data={store}", *tiny]) == 0  # one sample: the base itself
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [alone[k] for k in ("success_rate", "mean_return", "mean_length")] == \
        [plain[k] for k in ("success_rate", "mean_return", "mean_length")]
    for args, message in ((["steer.k=4"], "steer.data=ROOT"), ([f"steer.data={store}", "steer.k=-1"], "steer.k=-1"),
                          (["steer.k=4", f"steer.data={store}", "+steer.width=3"], "unknown steer setting"),
                          (["steer.k=4", f"steer.data={store}", "steer.temperature=-1"], "steer.temperature=-1"),
                          (["steer.k=4", f"steer.data={store}", "steer.evaluator.encoder.image_keys=[obs/image_front]"],
                           "steer.evaluator.encoder.image_keys")):
        assert main([*run, *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert main(["evaluate", "task=Reach", "steer.k=4", f"steer.data={store}", "progress=false"]) == 2
    assert "needs a policy checkpoint" in capsys.readouterr().err


def test_evaluate_records_episodes_that_rank_finds_as_the_candidates_own(setup, tmp_path, capsys):
    """`robot-rl evaluate checkpoint=CKPT record=ROOT` logs a candidate as it runs (what the robot's recorder would
    write): a valid store whose episodes rank counts as that candidate's own; noise shows as action != proposal."""
    root, store, candidates = setup
    logged = tmp_path / "logged"
    shutil.copytree(store, logged)  # demos first, then the candidate's own episodes appended
    run = ["evaluate", f"checkpoint={candidates[0]}", "episodes=2", "progress=false", f"record={logged}"]
    assert main([*run, "action_noise=0.05"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with EpisodeStore.open(logged, mode="r") as reader:
        assert reader.num_episodes == 6 and list(reader.meta["policy_id"][-2:]) == [candidates[0]] * 2
        assert list(reader.meta["source"][-2:]) == ["policy", "policy"]
        steps = reader.read_steps(int(reader.episode_ends[3]), int(reader.episode_ends[5]))
        assert len(steps["reward"]) == 2 * evaluated["mean_length"]
        gap = np.abs(steps["action"] - steps["policy_action"])
        assert 0 < gap.max() <= 1.0 and np.all(np.isnan(steps["human_action"]))
    evaluator = EvaluatorConfig(horizon=8, updates=10, updates_per_call=10, hidden_dim=16, num_critics=2, batch_size=32)
    row = rank_policies([candidates[0]], logged, evaluator, out=None, progress=False)["candidates"][0]
    assert row["mc_episodes"] == 2 and (row["mc"] > 0) == (evaluated["mean_return"] > 0)  # their returns, discounted
    assert main(["data", "validate", str(logged)]) == 0
