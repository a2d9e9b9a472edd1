"""Sim-to-real ranking: the candidate sweep is cached by config, rankings are scored correctly on constructed cases,
the workflow writes its table, JSON and plots, and bad input fails with one line."""

import json
from pathlib import Path

import numpy as np
import pytest

from robot_rl.cli.main import compose
from robot_rl.data import EpisodeStore, make_step_schema
from robot_rl.errors import UserError
from robot_rl.workflows import sim2real
from robot_rl.workflows.collect import collect
from robot_rl.workflows.sweep import run_sweep, sweep_configs

TINY_POLICY = {"kind": "bc", "horizon": 4, "n_obs_steps": 2, "n_action_steps": 4, "mlp_hidden": [32, 32]}
TINY_TRAIN = {"steps": 30, "batch_size": 16, "val_every": 30, "ckpt_every": 30, "val_fraction": 0.0}
SETTINGS = {"nominal": {"name": "nominal"}, "slippery": {"name": "nominal", "friction": [0.5, 0.8]}}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cache = tmp_path_factory.mktemp("candidates")
    configs = sweep_configs("PushCube", SETTINGS, [0], demos=3, expert_noise=0.0, policy=TINY_POLICY,
                            train=TINY_TRAIN)
    return cache, configs, run_sweep(configs, cache, progress=False)


@pytest.fixture(scope="module")
def real_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real") / "store"
    collect("PushCube", root, 3, variant="real_b", noise=0.02, seed=5, progress=False)
    return root


def test_sweep_is_cached_by_config(sweep):
    cache, configs, candidates = sweep
    assert [c.name for c in candidates] == ["nominal-s0", "slippery-s0"]
    record = json.loads((candidates[1].folder / "candidate.json").read_text())
    assert record["config"]["randomization"] == SETTINGS["slippery"]  # the training config is recorded
    stamps = [c.checkpoint.stat().st_mtime_ns for c in candidates]
    again = run_sweep(configs, cache, progress=False)
    assert [c.folder for c in again] == [c.folder for c in candidates]
    assert [c.checkpoint.stat().st_mtime_ns for c in again] == stamps  # nothing retrained
    other = sweep_configs("PushCube", SETTINGS, [1], 3, 0.0, TINY_POLICY, TINY_TRAIN)
    assert {c.key() for c in other}.isdisjoint({c.key() for c in configs})


def test_rankings_scored_on_a_constructed_case():
    """Real success = simulated success unless the real data looks unfamiliar: only the combination gets the order."""
    sim = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    ood_rank = np.array([0, 3, 4, 6, 1, 5, 2])  # candidates 3 and 5 find the real data least familiar
    ood = 1.0 + 0.5 * ood_rank
    true = 0.5 + 0.05 * ((6 - np.arange(7)) - ood_rank)  # rank(sim) - rank(ood): no two candidates tie
    rows = [{"sim_success": s, "ood": {"mahalanobis": o, "knn": o, "ensemble": 2 * o}} for s, o in zip(sim, ood)]
    scores = sim2real.score_rankings(true, sim2real.estimates(rows, "rank", 1.0, "consensus"))
    assert scores["combined"]["spearman"] == pytest.approx(1.0)
    assert scores["combined"]["mmrv"] == 0.0 and scores["combined"]["regret_at_1"] == 0.0
    for name in ("sim_only", "ood_mahalanobis", "ood_knn", "ood_ensemble"):
        assert scores[name]["spearman"] < 0.9, name
    with pytest.raises(UserError, match="ood_source"):
        sim2real.estimates(rows, "rank", 1.0, "density")
    perfect = sim2real.score_rankings(true, {"oracle": true})["oracle"]
    assert perfect == {"spearman": 1.0, "kendall": 1.0, "regret_at_1": 0.0, "mmrv": 0.0}


def test_rank_workflow_writes_table_json_and_plots(sweep, real_data, tmp_path, capsys):
    cache, _, _ = sweep
    cfg = compose("rank/sim2real", [f"candidates={cache}", f"real_data={real_data}", f"out={tmp_path / 'run'}",
                                    "truth=real_b", "sim_episodes=3", "truth_episodes=3", "progress=false",
                                    "sim_variant=training",
                                    "ood.width=32", "++method=sim2real"])
    result = sim2real.run(cfg)
    assert result["n_candidates"] == 2
    assert sorted(r["rank"] for r in result["candidates"]) == [1, 2]
    for row in result["candidates"]:
        assert set(row["ood"]) == {"mahalanobis", "knn", "ensemble"} and all(v > 0 for v in row["ood"].values())
        assert 0.0 <= row["sim_success"] <= 1.0 and 0.0 <= row["true_value"] <= 1.0
    for key in ("sim_only", "combined", *(f"ood/{m}" for m in ("mahalanobis", "knn", "ensemble"))):
        card = result["ood"][key.split("/")[1]] if "/" in key else result[key]
        assert set(card) == {"spearman", "kendall", "regret_at_1", "mmrv"}
    run_dir = tmp_path / "run"
    assert {"ranking.json", "report.md", "estimate_vs_true.png", "sim_vs_ood.png"} <= {p.name for p in
                                                                                        run_dir.iterdir()}
    assert "combined" in capsys.readouterr().out  # the ranking table
    assert json.loads((run_dir / "ranking.json").read_text())["n_candidates"] == 2


def test_bad_input_is_one_line(sweep, real_data, tmp_path):
    cache, _, candidates = sweep
    other = tmp_path / "other_keys"
    schema = make_step_schema({"joints": ((4,), "float32")}, action_dim=4)
    store = EpisodeStore.create(other, schema)
    with store.writer() as writer:
        for t in range(3):
            writer.add_step({"obs/joints": np.zeros(4, np.float32), "action": np.zeros(4, np.float32),
                             "policy_action": np.zeros(4, np.float32), "base_action": np.zeros(4, np.float32),
                             "residual_action": np.zeros(4, np.float32),
                             "human_action": np.full(4, np.nan, np.float32), "intervention": False, "reward": 0.0,
                             "terminated": False, "truncated": t == 2, "timestamp": float(t)})
        writer.end_episode(success=False, source="teleop", domain="real")
    store.close()
    with pytest.raises(UserError, match="has no obs/state, which the candidates observe") as err:
        sim2real.rank_sim2real(cache, other, tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="does not exist"):
        sim2real.rank_sim2real(cache, tmp_path / "missing", tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="at least 2 candidates"):
        sim2real.rank_sim2real([candidates[0].folder], real_data, tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="neither a candidate folder"):
        sim2real.rank_sim2real([tmp_path / "nothing", candidates[0].folder], real_data, tmp_path / "out",
                               progress=False)
