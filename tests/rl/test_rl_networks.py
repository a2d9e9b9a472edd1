"""Bounded-norm networks: the projection holds after real updates, and the ablation switch really removes it."""

import jax
import numpy as np
from rl_helpers import ACTION_DIM, OBS_DIM, random_batch, tiny_recipe

from robot_rl.rl.agent import ResidualAgent


def projected_leaves(params) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves
            if getattr(path[-1], "key", None) in ("hyper_kernel", "rms_scale")}


def test_weight_projection_keeps_unit_norms_after_updates():
    cfg = tiny_recipe()
    agent = ResidualAgent(cfg, OBS_DIM, ACTION_DIM)
    state = agent.init(0)
    before = projected_leaves((state.actor, state.critic))
    rng = np.random.default_rng(0)
    for _ in range(20):
        state, metrics = agent.update(state, random_batch(rng, cfg.utd * cfg.batch_size))
    assert int(metrics["skipped"]) == 0
    after = projected_leaves((state.actor, state.critic))
    assert before.keys() == after.keys()
    assert sum(k.endswith("['hyper_kernel']") for k in after) >= 6  # actor and critic trunks: embed + 2 per block
    for name, leaf in after.items():
        assert not np.allclose(leaf, before[name], atol=1e-4), f"{name} did not train: the check would be vacuous"
        if name.endswith("['hyper_kernel']"):  # one unit-norm weight vector per output unit (ensemble axis first)
            np.testing.assert_allclose(np.linalg.norm(leaf, axis=-2), 1.0, atol=1e-5, err_msg=name)
        else:  # norm-layer gain: norm sqrt(d)
            np.testing.assert_allclose(np.linalg.norm(leaf, axis=-1), np.sqrt(leaf.shape[-1]), rtol=1e-5,
                                       err_msg=name)


def test_ablation_switch_gives_plain_layernorm_mlp():
    agent = ResidualAgent(tiny_recipe(bounded=False), OBS_DIM, ACTION_DIM)
    state = jax.eval_shape(agent.init, 0)  # structure and shapes only: no compile needed
    assert projected_leaves((state.actor, state.critic)) == {}
    names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state.critic)}
    assert any("LayerNorm" in n for n in names)
    # the ensemble is vectorized: every critic leaf carries the ensemble axis first
    assert all(leaf.shape[0] == agent.cfg.critic.num_critics for leaf in jax.tree_util.tree_leaves(state.critic))
