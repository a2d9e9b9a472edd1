"""The learner node: tails a real episode store, trains the real residual agent, publishes verified versions, and a
restarted learner resumes its training state and numbering."""

import json
from pathlib import Path

import numpy as np
from hw_helpers import STATE_DIM, TINY_OVERRIDES, N, Rig

from hw import topics
from hw.graph import NodeSpec
from hw.msgs import String
from hw.transport import LATCHED
from hw.weights import Announcement, load_weights
from robot_rl.data import EpisodeStore, make_step_schema


def write_episodes(root, episodes: int, seed: int, length: int = 30) -> None:
    """Random robot-loop episodes: every other one with a takeover in the middle (human actions recorded)."""
    rng = np.random.default_rng(seed)
    schema = make_step_schema({"state": ((STATE_DIM,), "float32")}, N)
    store = EpisodeStore.create(root, schema, exist_ok=True)
    with store.writer() as w:
        for e in range(episodes):
            for t in range(length):
                base = rng.uniform(-0.5, 0.5, N).astype(np.float32)
                residual = rng.uniform(-0.1, 0.1, N).astype(np.float32)
                intervened = e % 2 == 1 and 10 <= t < 20
                action = rng.uniform(-1, 1, N).astype(np.float32) if intervened else base + residual
                w.add_step({"obs/state": rng.normal(size=STATE_DIM).astype(np.float32), "action": action,
                            "policy_action": base + residual, "base_action": base, "residual_action": residual,
                            "human_action": action if intervened else np.full(N, np.nan, np.float32),
                            "intervention": intervened, "reward": np.float32(t == length - 1),
                            "terminated": t == length - 1, "truncated": False, "timestamp": 10.0 * e + 0.05 * t})
            w.end_episode(success=True, source="policy", task="PushCube")
    store.close()


def learner_spec(tmp_path) -> NodeSpec:
    return NodeSpec("learner", "hw.nodes.learner:LearnerNode", {
        "store": str(tmp_path / "store"), "weights_dir": str(tmp_path / "weights"), "overrides": TINY_OVERRIDES,
        "min_steps": 60, "publish_every": 3, "checkpoint_every": 3, "sync_every_s": 0.2, "status_period_s": 0.2})


def test_learner_publishes_versions_tails_the_store_and_resumes(tmp_path):
    write_episodes(tmp_path / "store", episodes=4, seed=0)
    rig = Rig()
    announced: list[Announcement] = []
    rig.h.subscribe(topics.WEIGHTS, String, lambda m: announced.append(Announcement.parse(m)), LATCHED)
    learner = rig.add(learner_spec(tmp_path))
    assert rig.run_until(lambda: len(announced) >= 2, real_timeout=240)
    assert [a.version for a in announced] == [1, 2]
    for a in announced:
        weights = load_weights(a.path, a.sha256)  # the files are complete and match what was announced
        assert weights.version == a.version and (weights.agent.obs_dim, weights.agent.action_dim) == (STATE_DIM, N)
        assert json.loads(Path(a.path).with_suffix(".json").read_text())["updates"] == 3 * a.version
        # the state standardization fitted on the store's steps travels with the weights to the actor
        assert weights.agent.cfg.obs_stats == learner.cfg.obs_stats and len(learner.cfg.obs_stats["mean"]) == STATE_DIM
    assert learner.cache.size == 4 * 30
    stats = learner.cfg.obs_stats

    write_episodes(tmp_path / "store", episodes=2, seed=1)  # the recorder commits more while the learner runs
    assert rig.run_until(lambda: learner.cache.size == 6 * 30, real_timeout=30)
    updates, newest = learner.updates, learner.version
    rig.close()  # checkpoints the training state

    rig = Rig()
    again: list[Announcement] = []
    rig.h.subscribe(topics.WEIGHTS, String, lambda m: again.append(Announcement.parse(m)), LATCHED)
    resumed = rig.add(learner_spec(tmp_path))
    assert rig.run_until(lambda: len(again) >= 2, real_timeout=120)
    assert again[0].version == newest  # a restarted learner re-announces its newest version
    assert again[1].version == newest + 1 and resumed.updates >= updates  # and numbers on from there
    assert resumed.cfg.obs_stats == stats  # a resumed learner keeps the statistics its networks were trained with
    load_weights(again[1].path, again[1].sha256)
    rig.close()


def test_learner_gate_publishes_only_versions_that_beat_the_deployed_policy(tmp_path):
    """With gate_base set, a version is written and announced only when the chunked-TD evaluator's pessimistic value
    of base + new residual beats the deployed policy's by the margin: an impossible margin publishes nothing (and
    counts the refusals), a margin every candidate clears publishes as usual."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "policies"))
    from policy_helpers import tiny_policy, tiny_train

    from robot_rl.policies import train_policy

    write_episodes(tmp_path / "store", episodes=4, seed=0)
    base = train_policy(tmp_path / "store", tmp_path / "base", tiny_policy("bc", obs_keys=("state",)),
                        tiny_train(steps=20, val_every=20, ckpt_every=20), progress=False).checkpoint
    def run(margin: float):
        rig = Rig()
        announced: list[Announcement] = []
        rig.h.subscribe(topics.WEIGHTS, String, lambda m: announced.append(Announcement.parse(m)), LATCHED)
        spec = learner_spec(tmp_path / f"m{margin}")
        spec.parameters.update(store=str(tmp_path / "store"), gate_base=str(base), gate_margin=margin,
                               gate_updates=20)
        learner = rig.add(spec)
        assert rig.run_until(lambda: sum(learner.gate_counts.values()) >= 2, real_timeout=240)
        rig.close()
        return learner, announced

    learner, announced = run(1e6)
    assert learner.gate_counts == {"accepted": 0, "rejected": learner.gate_counts["rejected"]}
    assert not announced and not list((tmp_path / "m1000000.0" / "weights").glob("residual_v*"))
    assert "does not beat" in learner.gate_reason
    learner, announced = run(-1e6)
    assert learner.gate_counts["accepted"] >= 2 and [a.version for a in announced][:2] == [1, 2]
    assert "beats deployed" in learner.gate_reason
