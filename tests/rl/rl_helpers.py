"""Shared pieces for the learner tests: a tiny sparse-reward task with a deliberately biased base policy, and one
small recipe every updating test shares."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

BIAS = 0.25  # the base pushes this much too far: it settles 0.083 past the goal, outside the 0.05 success band


class PointMass1D(gym.Env):
    """A point on a line must stop within 0.05 of a goal; reward 1 and termination on success, 30-step limit."""

    observation_space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.goal = self.np_random.uniform(-1.0, 1.0, 2)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.x, self.goal], np.float32)

    def step(self, action):
        self.x = float(np.clip(self.x + 0.1 * float(np.clip(action[0], -1, 1)), -1.5, 1.5))
        self.t += 1
        success = abs(self.x - self.goal) < 0.05
        return self._obs(), float(success), success, self.t >= 30 and not success, {}


def biased_base(obs: np.ndarray) -> np.ndarray:
    """P-controller with a constant bias: succeeds when it approaches the goal from below, fails from above."""
    x, goal = obs[:, 0], obs[:, 1]
    return np.clip(3.0 * (goal - x) + BIAS, -1.0, 1.0)[:, None].astype(np.float32)


def make_point_mass_envs(num_envs: int) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv([PointMass1D for _ in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


# One small recipe shared by every test that updates: the jitted functions are cached per (config, sizes), so the
# tests pay the XLA compile of this agent once per session. It is `ours` (bounded networks, categorical critic,
# return-based reward scaling) shrunk to a 1-D task.
TINY = {"scale": 0.5, "gamma": 0.9, "batch_size": 64, "utd": 2, "warmup_steps": 300, "critic_warmup_updates": 0,
        "actor.hidden_dim": 32, "actor.expansion": 2, "critic.hidden_dim": 32, "critic.expansion": 2,
        "actor_lr": 1e-3, "critic_lr": 1e-3, "init_temperature": 0.05, "update_ratio": 1.0}
OBS_DIM, ACTION_DIM = 2, 1


def tiny_recipe(**overrides):
    from robot_rl.rl.config import load_recipe

    return load_recipe("ours", **{**TINY, **overrides})


def td3_recipe():
    """Deterministic targets (no smoothing noise, all heads in the min, scalar critic): writable down by hand."""
    return tiny_recipe(algo="td3", utd=1, target_noise=0.0, reward_scaling=False, **{"critic.categorical": False})


def random_batch(rng: np.random.Generator, rows: int, obs_dim: int = OBS_DIM, action_dim: int = ACTION_DIM) -> dict:
    return {
        "obs": rng.normal(size=(rows, obs_dim)).astype(np.float32),
        "base_action": rng.uniform(-1, 1, (rows, action_dim)).astype(np.float32),
        "action": rng.uniform(-1, 1, (rows, action_dim)).astype(np.float32),
        "reward": (rng.random(rows) < 0.3).astype(np.float32),
        "discount": np.where(rng.random(rows) < 0.1, 0.0, 0.9**3).astype(np.float32),
        "next_obs": rng.normal(size=(rows, obs_dim)).astype(np.float32),
        "next_base_action": rng.uniform(-1, 1, (rows, action_dim)).astype(np.float32),
    }


class PixelPointMass1D(PointMass1D):
    """PointMass1D whose goal the learner can only see in a tiny camera image.

    The state is (x, hint): `hint` is the goal as a miscalibrated sensor reports it, off by `OFFSET * b` with
    b in {-1, 0, 1} drawn per episode. The 16x16 image shows one red pixel (random row) in column 2, 7 or 12 for
    b = -1, 0, 1: the only place b appears. Success means stopping in the goal band (|action| < 0.2 there), so
    passing through it does not count: a policy blind to the image stops at one point and succeeds about 1/3 of
    the time; reading the image it can always succeed.
    """

    SIZE, OFFSET, STOP = 16, 0.1, 0.2
    observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-2.0, 2.0, (2,), np.float32),
                                         "image_goal": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)})

    def reset(self, *, seed=None, options=None):
        gym.Env.reset(self, seed=seed)
        self.x, self.goal = self.np_random.uniform(-1.0, 1.0, 2)
        self.t = 0
        self.b = int(self.np_random.integers(-1, 2))
        self.row = int(self.np_random.integers(3, self.SIZE - 3))
        return self._obs(), {}

    def _obs(self):
        image = np.zeros((self.SIZE, self.SIZE, 3), np.uint8)
        image[self.row, 7 + 5 * self.b, 0] = 255
        return {"state": np.array([self.x, self.goal + self.OFFSET * self.b], np.float32), "image_goal": image}

    def step(self, action):
        a = float(np.clip(action[0], -1, 1))
        self.x = float(np.clip(self.x + 0.1 * a, -1.5, 1.5))
        self.t += 1
        success = abs(self.x - self.goal) < 0.05 and abs(a) < self.STOP
        return self._obs(), float(success), success, self.t >= 30 and not success, {}


def hint_base(obs: dict) -> np.ndarray:
    """P-controller towards the sensor's goal: right only when the sensor is (b = 0)."""
    x, hint = obs["state"][:, 0], obs["state"][:, 1]
    return np.clip(3.0 * (hint - x), -1.0, 1.0)[:, None].astype(np.float32)


def make_pixel_point_mass_envs(num_envs: int) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv([PixelPointMass1D for _ in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


IMAGE_KEY = "image_goal"
PIXELS = {"encoder.image_keys": [IMAGE_KEY], "encoder.channels": [8, 8], "encoder.feature_dim": 16,
          "encoder.shift": 2}


def pixel_recipe(**overrides):
    """The tiny recipe with a small conv encoder on the 16x16 camera."""
    return tiny_recipe(**{**PIXELS, **overrides})
