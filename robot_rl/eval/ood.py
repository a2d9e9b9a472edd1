"""Out-of-distribution scores of target-domain observations in a candidate policy's feature space (VSDR-style).

A fixed set of observations from the target domain (the real robot, or a mirror variant standing in for it) is a
"unit test" for every candidate: the further those observations lie from the features the candidate saw in simulation,
the less its simulated success says about the target. Three detectors, all fitted on the candidate's own simulation
features (NumPy only: features arrive as arrays, so this module needs neither torch nor sim):

- `Mahalanobis`: distance to the Gaussian of the simulation features (covariance shrunk toward its mean variance,
  so 256 correlated features fitted on a few thousand steps stay invertible).
- `KNN`: distance to the k-th nearest simulation feature, on L2-normalized features (deep-kNN OOD detection).
- `EnsembleDisagreement`: K random-feature ridge heads, each fitted on a bootstrap resample of the simulation
  features to the candidate's own actions; they agree where they were fitted and disagree off the data.

Each detector gives a per-observation score; `ood_scores` turns it into one number per candidate that is comparable
across candidates with different feature spaces: the mean score of the target observations divided by the mean
score of held-out simulation episodes (1 = as familiar as fresh simulation data; larger = further out).
`combine` mixes simulated success with an OOD score; see its docstring for the formula and how it was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from robot_rl.errors import UserError

METHODS = ("mahalanobis", "knn", "ensemble")


@dataclass(frozen=True)
class OODConfig:
    """Detector settings, shared by every candidate so their scores compare."""

    shrinkage: float = 0.1  # Mahalanobis: covariance <- (1 - s) * cov + s * mean variance * I
    k: int = 5  # kNN: distance to the k-th nearest simulation feature
    members: int = 5  # ensemble heads
    width: int = 256  # random features per head
    ridge: float = 1e-2  # ridge penalty of each head, relative to the mean squared random feature
    max_fit: int = 5000  # simulation steps the detectors are fitted on (a random subset when there are more)
    holdout: float = 0.2  # fraction of simulation episodes held out as the in-distribution reference
    seed: int = 0


def _features(name: str, values: np.ndarray, dim: int | None = None) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or len(values) == 0:
        raise UserError(f"{name} must be a non-empty (N, feature_dim) array, got shape {values.shape}")
    if dim is not None and values.shape[1] != dim:
        raise UserError(f"{name} has {values.shape[1]} features, the detector was fitted on {dim}")
    if not np.isfinite(values).all():
        raise UserError(f"{name} contains NaN or inf")
    return values


class Mahalanobis:
    """Distance to the Gaussian fitted on simulation features."""

    def __init__(self, shrinkage: float = 0.1) -> None:
        self.shrinkage = shrinkage

    def fit(self, features: np.ndarray) -> Mahalanobis:
        features = _features("simulation features", features)
        self.mean = features.mean(axis=0)
        cov = np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])
        scale = max(float(np.trace(cov)) / len(cov), 1e-12)
        cov = (1 - self.shrinkage) * cov + self.shrinkage * scale * np.eye(len(cov))
        values, vectors = np.linalg.eigh(cov)
        self.whiten = vectors / np.sqrt(np.maximum(values, 1e-12 * scale))
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        features = _features("features", features, len(self.mean))
        return np.linalg.norm((features - self.mean) @ self.whiten, axis=1)


class KNN:
    """Distance to the k-th nearest simulation feature, both L2-normalized."""

    def __init__(self, k: int = 5) -> None:
        if k < 1:
            raise UserError(f"k={k} must be >= 1")
        self.k = k

    @staticmethod
    def _unit(features: np.ndarray) -> np.ndarray:
        return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)

    def fit(self, features: np.ndarray) -> KNN:
        self.bank = self._unit(_features("simulation features", features))
        return self

    def score(self, features: np.ndarray, block: int = 1024) -> np.ndarray:
        features = self._unit(_features("features", features, self.bank.shape[1]))
        k = min(self.k, len(self.bank))
        out = []
        for start in range(0, len(features), block):
            # unit vectors: squared distance = 2 - 2 cos
            sq = np.maximum(2.0 - 2.0 * features[start:start + block] @ self.bank.T, 0.0)
            out.append(np.sqrt(np.partition(sq, k - 1, axis=1)[:, k - 1]))
        return np.concatenate(out)


class EnsembleDisagreement:
    """Variance across K random-feature ridge heads (each on its own bootstrap resample) predicting the targets."""

    def __init__(self, members: int = 5, width: int = 256, ridge: float = 1e-2, seed: int = 0) -> None:
        if members < 2:
            raise UserError(f"an ensemble needs at least 2 members, got {members}")
        self.members, self.width, self.ridge, self.seed = members, width, ridge, seed

    def _hidden(self, features: np.ndarray, member: int) -> np.ndarray:
        z = (features - self.mean) / self.std
        return np.maximum(z @ self.projections[member] + self.biases[member], 0.0)

    def fit(self, features: np.ndarray, targets: np.ndarray) -> EnsembleDisagreement:
        features = _features("simulation features", features)
        targets = np.asarray(targets, dtype=np.float64).reshape(len(features), -1)
        if not np.isfinite(targets).all():
            raise UserError("ensemble targets contain NaN or inf")
        rng = np.random.default_rng(self.seed)
        self.mean, self.std = features.mean(axis=0), np.maximum(features.std(axis=0), 1e-6)
        dim = features.shape[1]
        self.projections = rng.normal(0.0, 1.0 / np.sqrt(dim), (self.members, dim, self.width))
        self.biases = rng.normal(0.0, 1.0, (self.members, self.width))
        self.heads = []
        for member in range(self.members):
            pick = rng.integers(0, len(features), len(features))
            hidden = self._hidden(features[pick], member)
            gram = hidden.T @ hidden / len(hidden)
            penalty = self.ridge * max(float(np.trace(gram)) / self.width, 1e-12)
            self.heads.append(np.linalg.solve(gram + penalty * np.eye(self.width),
                                              hidden.T @ targets[pick] / len(hidden)))
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        features = _features("features", features, len(self.mean))
        preds = np.stack([self._hidden(features, m) @ head for m, head in enumerate(self.heads)])
        return preds.var(axis=0).mean(axis=1)


def split_reference(groups: np.ndarray, holdout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (fit, reference) over steps: whole episodes (`groups` = episode id per step) go to the
    reference, so it measures how familiar new simulation episodes look, not neighbours of fitted steps."""
    groups = np.asarray(groups)
    episodes = np.unique(groups)
    if len(episodes) < 2:
        raise UserError(f"OOD scores need at least 2 simulation episodes (one to fit, one held out); got "
                        f"{len(episodes)}")
    count = min(max(1, round(holdout * len(episodes))), len(episodes) - 1)
    held = np.random.default_rng(seed).choice(episodes, count, replace=False)
    reference = np.isin(groups, held)
    return ~reference, reference


def ood_scores(sim_features: np.ndarray, target_features: np.ndarray, sim_targets: np.ndarray,
               groups: np.ndarray, config: OODConfig | None = None) -> dict[str, float]:
    """One candidate's OOD score of the target observations under each method, as a ratio to held-out simulation.

    `sim_features` (N, D): the candidate's features on the simulation steps it was trained on; `groups` (N,): their
    episode ids; `sim_targets` (N, ...): what its action head predicts there (ensemble targets);
    `target_features` (M, D): its features on the target-domain observations.
    """
    config = config or OODConfig()
    sim_features = _features("simulation features", sim_features)
    target_features = _features("target features", target_features, sim_features.shape[1])
    if len(groups) != len(sim_features) or len(sim_targets) != len(sim_features):
        raise UserError(f"groups ({len(groups)}) and sim_targets ({len(sim_targets)}) need one row per simulation "
                        f"step ({len(sim_features)})")
    fit, reference = split_reference(groups, config.holdout, config.seed)
    fit_index = np.flatnonzero(fit)
    if len(fit_index) > config.max_fit:
        fit_index = np.sort(np.random.default_rng(config.seed).choice(fit_index, config.max_fit, replace=False))
    fit_features = sim_features[fit_index]
    detectors = {
        "mahalanobis": Mahalanobis(config.shrinkage).fit(fit_features),
        "knn": KNN(config.k).fit(fit_features),
        "ensemble": EnsembleDisagreement(config.members, config.width, config.ridge, config.seed).fit(
            fit_features, np.asarray(sim_targets)[fit_index]),
    }
    out = {}
    for name, detector in detectors.items():
        baseline = float(np.mean(detector.score(sim_features[reference])))
        out[name] = float(np.mean(detector.score(target_features))) / max(baseline, 1e-12)
    return out


def standardize(values: np.ndarray, how: str = "rank") -> np.ndarray:
    """Per-candidate values on a common, scale-free footing: "rank" (average ranks scaled to [0, 1]) or "zscore"
    (zero mean, unit population std; all zeros when the values are constant)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0 or not np.isfinite(values).all():
        raise UserError(f"scores must be a non-empty 1-D array of finite values, got {values!r}")
    if how == "rank":
        return (stats.rankdata(values) - 1) / max(len(values) - 1, 1)
    if how == "zscore":
        std = values.std()
        return (values - values.mean()) / std if std > 0 else np.zeros_like(values)
    raise UserError(f"unknown standardization {how!r}; use rank or zscore")


def combine(sim_success: np.ndarray, ood: np.ndarray, weight: float = 0.25, how: str = "zscore") -> np.ndarray:
    """Combined score per candidate: `s(sim_success) - weight * s(ood)`, with `s` = `standardize(., how)`.

    Higher is better. Standardizing each input first makes the result invariant to the scale (and, with ranks, to
    any monotone transform) of either input, so success rates, returns or distance ratios combine the same way.
    The defaults (z-scores, weight 0.25, used with the kNN score) are what the `bench sim2real` ablation chose over
    three targets: a small weight, because on the PushCube mirror the OOD scores alone rank candidates inversely
    (policies trained on narrow data are the best and find real data the least familiar); see the README.
    """
    sim = standardize(sim_success, how)
    out = standardize(ood, how)
    if len(sim) != len(out):
        raise UserError(f"sim_success has {len(sim)} candidates but ood has {len(out)}")
    return sim - weight * out


def consensus(scores: dict[str, np.ndarray], how: str = "rank") -> np.ndarray:
    """The mean of several OOD scores after standardizing each (no detector dominates by its units)."""
    if not scores:
        raise UserError("no OOD scores to combine")
    return np.mean([standardize(v, how) for v in scores.values()], axis=0)
