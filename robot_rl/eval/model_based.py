"""Model-based policy evaluation: a dynamics ensemble fitted on the logged steps, each candidate rolled out in it.

Why: logged data explored with noise shows how the world moves under many actions, but rarely what a candidate itself
would do, so critics fitted on it must carry values across policies (on `bench ope`'s default data the candidates' own
noisy episodes succeed 2-18% where they succeed 0-90% as deployed). A dynamics model uses the noise instead of suffering
it: the more varied the logged actions, the better it predicts the steps a candidate takes, and the candidate then runs
as deployed, chunk by chunk, from the logged initial states. Success is judged on the predicted states by the task's
own test (`sim` tasks' `succeeded`, a function of the state vector), so no reward model has to be learned from the
few logged successes.

Design choices, and why:
- Each member predicts the standardized change of the state in one control step from the standardized (state,
  action); members draw their own batches (a bootstrap in expectation), all updates of one call run in one jitted
  `lax.scan` over the vmapped ensemble.
- A rollout keeps one member throughout (no switching between members inside a trajectory), so the members give E
  values; the value is their mean, the spread their standard deviation and the pessimistic value their minimum, the
  same three numbers the chunked-TD ensemble reports.
- A rollout ends at the first predicted success (value gamma^t) or at the time limit (value 0), as the true values
  count returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robot_rl.data import ReplayCache
from robot_rl.errors import UserError
from robot_rl.eval.chunked_td import PolicyFn

SuccessFn = Callable[[np.ndarray], np.ndarray]  # states (..., d) -> bool (...)


@dataclass
class ModelConfig:
    """The `model.*` settings of `rank` and `bench ope` (configs/evaluator/model_based.yaml)."""

    enabled: bool = True
    ensemble: int = 5
    hidden_dim: int = 256
    num_layers: int = 3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    updates: int = 20000
    updates_per_call: int = 500
    seed: int = 0


@dataclass
class ModelEstimate:
    """What the model says about one policy, in the chunked-TD evaluator's three numbers."""

    value: float  # mean over members of the mean over initial states of the rollout's discounted return
    pessimistic: float  # minimum over members
    spread: float  # standard deviation over members
    member_values: np.ndarray  # (E,)


def task_success(task: str, state_dim: int) -> SuccessFn:
    """The mirror task's success test as a function of state vectors (the layout a `task` mirror reports)."""
    import sim

    if task not in sim.TASKS:
        raise UserError(f"the model-based estimate judges success with a mirror task's test, and {task!r} is none of "
                        f"{', '.join(sim.TASKS)}; record the data under its mirror's task name or set "
                        "model.enabled=false")
    env = sim.make_env(task)
    slices, test = env.robot.state_slices, env.task.succeeded
    env.close()
    size = max(s.stop for s in slices.values())
    if size != state_dim:
        raise UserError(f"the logged states have {state_dim} values, a {task} mirror's have {size}; rank data "
                        f"recorded with the {task} mirror's state layout or set model.enabled=false")
    return lambda states: test({name: states[..., s] for name, s in slices.items()})


def _init_mlp(key: jax.Array, sizes: list[int]) -> list[tuple[jax.Array, jax.Array]]:
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (a, b)) * np.sqrt(2.0 / a), jnp.zeros(b))
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def _mlp(params: list[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
    for w, b in params[:-1]:
        x = jax.nn.silu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


class DynamicsModel:
    """An ensemble of MLPs s' = s + f(s, a), fitted on every step of a replay cache that has a next step."""

    def __init__(self, cfg: ModelConfig, cache: ReplayCache, obs_key: str = "obs/state"):
        if cfg.ensemble < 1 or cfg.updates < 0 or cfg.batch_size < 1 or cfg.updates_per_call < 1:
            raise UserError(f"model: ensemble, batch_size and updates_per_call must be positive and updates >= 0, "
                            f"got {cfg}")
        n = cache.capacity
        rows = np.flatnonzero(cache.valid & (cache.steps_left > 1))  # episodes never wrap: rows + 1 is in the ring
        if rows.size == 0:
            raise UserError("the logged data has no two consecutive steps for a dynamics model to learn from; log "
                            "whole episodes")
        states = cache.data[obs_key].reshape(n, -1).astype(np.float32)
        actions = cache.data["action"].reshape(n, -1).astype(np.float32)
        x = np.concatenate([states[rows], actions[rows]], 1)
        delta = states[rows + 1] - states[rows]
        self.cfg = cfg
        self.state_dim, self.action_dim = states.shape[1], actions.shape[1]
        x_mean, x_std = x.mean(0), x.std(0) + 1e-6
        d_mean, d_std = delta.mean(0), delta.std(0) + 1e-6
        self._x = jnp.asarray((x - x_mean) / x_std)
        self._d = jnp.asarray((delta - d_mean) / d_std)

        def one_step(params, s, a):
            return s + _mlp(params, (jnp.concatenate([s, a], -1) - x_mean) / x_std) * d_std + d_mean

        self._step = jax.jit(jax.vmap(one_step))  # members' params on axis 0, each with its own states
        sizes = [x.shape[1], *[cfg.hidden_dim] * cfg.num_layers, self.state_dim]
        keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.ensemble + 1)
        self.params = jax.vmap(lambda k: _init_mlp(k, sizes))(keys[1:])
        self._opt = optax.adamw(cfg.lr, weight_decay=cfg.weight_decay)
        self._opt_state = self._opt.init(self.params)
        self._key = keys[0]
        self.losses: list[float] = []

    def fit(self) -> list[float]:
        """Run `cfg.updates` updates; returns the mean training loss of each call."""
        cfg, x, d, opt = self.cfg, self._x, self._d, self._opt

        def loss(params, xb, db):
            return jnp.mean((_mlp(params, xb) - db) ** 2)

        def update(carry, key):
            params, opt_state = carry
            rows = jax.random.randint(key, (cfg.ensemble, cfg.batch_size), 0, x.shape[0])
            values, grads = jax.vmap(jax.value_and_grad(loss))(params, x[rows], d[rows])
            steps, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, steps), opt_state), values.mean()

        @jax.jit
        def many(params, opt_state, key):
            (params, opt_state), values = jax.lax.scan(update, (params, opt_state),
                                                       jax.random.split(key, cfg.updates_per_call))
            return params, opt_state, values.mean()

        done = 0
        while done < cfg.updates:
            self._key, key = jax.random.split(self._key)
            self.params, self._opt_state, value = many(self.params, self._opt_state, key)
            done += cfg.updates_per_call
            self.losses.append(float(value))
        return self.losses

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Next states (E, B, d) of each member for its own states (E, B, d) and actions (E, B, A)."""
        return np.asarray(self._step(self.params, jnp.asarray(states, jnp.float32),
                                     jnp.asarray(actions, jnp.float32)))

    def value(self, policy: PolicyFn, starts: np.ndarray, success: SuccessFn, gamma: float, limit: int,
              n_obs_steps: int = 1, n_action_steps: int | None = None) -> ModelEstimate:
        """Roll `policy` out from the initial `starts` (B, d) for up to `limit` steps in every member; its chunks are
        asked for every `n_action_steps` steps (default: all of each chunk) with the last `n_obs_steps` states."""
        members, count = self.cfg.ensemble, len(starts)
        states = np.broadcast_to(np.asarray(starts, np.float32), (members, count, self.state_dim)).copy()
        history = [states] * n_obs_steps
        alive = np.ones((members, count), bool)
        returns = np.zeros((members, count))
        t = 0
        while t < limit and alive.any():
            stacked = np.stack(history, 2).reshape(members * count, n_obs_steps, self.state_dim)
            chunks = np.asarray(policy({"state": stacked}), np.float32).reshape(members, count, -1, self.action_dim)
            for k in range(min(n_action_steps or chunks.shape[2], chunks.shape[2], limit - t)):
                states = self.step(states, chunks[:, :, k])
                won = alive & np.asarray(success(states), bool)
                returns[won] = gamma**t
                alive &= ~won
                history = [*history[1:], states]
                t += 1
        per_member = returns.mean(1)
        return ModelEstimate(float(per_member.mean()), float(per_member.min()), float(per_member.std()), per_member)
