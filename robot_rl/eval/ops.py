"""Off-policy selection metrics: how well estimated values rank candidate policies against their true values.

Every function takes `(true_values, estimates, ...)` as 1-D arrays over candidates. SCOPE-RL, the reference library,
does not run on NumPy 2; these follow its documented definitions and DOPE's normalized regret.

Edge cases, defined once for all functions:
- top-k: the indices of the k largest estimates. Ties in estimates are broken pessimistically: among candidates with
  equal estimates, the one with the lower true value ranks first. A selector that cannot tell candidates apart gets no
  credit for a lucky order.
- k > n uses all n candidates; k < 1 is an error.
- Spearman and Kendall (tau-b) are SciPy's; they are NaN when either input is constant (no ranking to compare).
- regret@k is 0 when all true values are equal (nothing can be lost).
- SharpeRatio@k with std@k = 0 is +inf, -inf or 0 by the sign of best@k - J(pi_b) (JSON output writes null).
- nMSE is the mean squared error divided by the variance of the true values (predicting their mean scores 1);
  with constant true values it is the plain MSE.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats

from robot_rl.errors import UserError


def _check(true_values, estimates) -> tuple[np.ndarray, np.ndarray]:
    true_values = np.asarray(true_values, dtype=np.float64)
    estimates = np.asarray(estimates, dtype=np.float64)
    if true_values.ndim != 1 or estimates.ndim != 1 or len(true_values) != len(estimates):
        raise UserError(f"true values and estimates must be 1-D arrays of one value per candidate, got shapes "
                        f"{true_values.shape} and {estimates.shape}")
    if len(true_values) == 0:
        raise UserError("no candidates: pass at least one true value and one estimate")
    if not (np.isfinite(true_values).all() and np.isfinite(estimates).all()):
        raise UserError("true values and estimates must be finite (found NaN or inf)")
    return true_values, estimates


def top_k(true_values, estimates, k: int) -> np.ndarray:
    """Indices of the k largest estimates, best first; ties broken toward the lower true value."""
    true_values, estimates = _check(true_values, estimates)
    if k < 1:
        raise UserError(f"k must be >= 1, got {k}")
    order = np.lexsort((true_values, -estimates))  # by estimate descending, then true value ascending
    return order[:k]


def spearman(true_values, estimates) -> float:
    true_values, estimates = _check(true_values, estimates)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(true_values, estimates).statistic)


def kendall(true_values, estimates) -> float:
    true_values, estimates = _check(true_values, estimates)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.kendalltau(true_values, estimates).statistic)


def regret_at_k(true_values, estimates, k: int = 1) -> float:
    """DOPE's normalized regret: (max true - max true in top-k) / (max true - min true)."""
    true_values, estimates = _check(true_values, estimates)
    span = true_values.max() - true_values.min()
    if span == 0:
        return 0.0
    return float((true_values.max() - true_values[top_k(true_values, estimates, k)].max()) / span)


def best_at_k(true_values, estimates, k: int) -> float:
    return float(np.max(np.asarray(true_values, float)[top_k(true_values, estimates, k)]))


def worst_at_k(true_values, estimates, k: int) -> float:
    return float(np.min(np.asarray(true_values, float)[top_k(true_values, estimates, k)]))


def mean_at_k(true_values, estimates, k: int) -> float:
    return float(np.mean(np.asarray(true_values, float)[top_k(true_values, estimates, k)]))


def std_at_k(true_values, estimates, k: int) -> float:
    """Population standard deviation (ddof=0) of the true values of the top-k."""
    return float(np.std(np.asarray(true_values, float)[top_k(true_values, estimates, k)]))


def sharpe_ratio_at_k(true_values, estimates, behavior_value: float, k: int) -> float:
    """SCOPE-RL's SharpeRatio@k = (best@k - J(pi_b)) / std@k."""
    gain = best_at_k(true_values, estimates, k) - float(behavior_value)
    spread = std_at_k(true_values, estimates, k)
    if spread == 0:
        return 0.0 if gain == 0 else float(np.sign(gain) * np.inf)
    return float(gain / spread)


def nmse(true_values, estimates) -> float:
    """Mean squared error over the variance of the true values."""
    true_values, estimates = _check(true_values, estimates)
    mse = float(np.mean((estimates - true_values) ** 2))
    variance = float(np.var(true_values))
    return mse / variance if variance > 0 else mse


def mmrv(true_values, estimates) -> float:
    """Mean maximum rank violation (SimplerEnv): for each candidate, the largest true-value gap to another candidate
    that the estimates order the wrong way, averaged over candidates. 0 for a perfect order; in true-value units.
    Equal estimates order neither way, so a tie against unequal true values counts as a violation."""
    true_values, estimates = _check(true_values, estimates)
    gap = np.abs(true_values[:, None] - true_values[None, :])
    violated = (estimates[:, None] > estimates[None, :]) != (true_values[:, None] > true_values[None, :])
    return float(np.mean(np.max(gap * violated, axis=1)))


def top_k_curve(metric: Callable[..., float], true_values, estimates, ks=None, **kwargs) -> dict[int, float]:
    """A metric at k = 1..n (or the given ks), e.g. `top_k_curve(regret_at_k, true, est)`."""
    n = len(np.asarray(true_values))
    return {int(k): metric(true_values, estimates, k=int(k), **kwargs) for k in (ks or range(1, n + 1))}


def bootstrap_ci(metric: Callable[..., float], true_values, estimates, *, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0, **kwargs) -> tuple[float, float, float]:
    """(point estimate, lower, upper): a percentile interval from resampling candidates with replacement.

    Resamples whose metric is undefined (NaN, e.g. a constant resample for a rank correlation) are left out.
    """
    true_values, estimates = _check(true_values, estimates)
    rng = np.random.default_rng(seed)
    n = len(true_values)
    values = []
    for _ in range(n_boot):
        pick = rng.integers(0, n, n)
        value = metric(true_values[pick], estimates[pick], **kwargs)
        if np.isfinite(value):
            values.append(value)
    point = metric(true_values, estimates, **kwargs)
    if not values:
        return point, float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return point, float(low), float(high)


def score_estimator(true_values, estimates, behavior_value: float | None = None, ks=(1, 3)) -> dict:
    """The standard scorecard of one estimator: rank correlations, regret, and top-k figures."""
    out = {"spearman": spearman(true_values, estimates), "kendall": kendall(true_values, estimates),
           "nmse": nmse(true_values, estimates), "mmrv": mmrv(true_values, estimates)}
    for k in ks:
        out[f"regret_at_{k}"] = regret_at_k(true_values, estimates, k)
        out[f"best_at_{k}"] = best_at_k(true_values, estimates, k)
        out[f"mean_at_{k}"] = mean_at_k(true_values, estimates, k)
        if behavior_value is not None:
            out[f"sharpe_at_{k}"] = sharpe_ratio_at_k(true_values, estimates, behavior_value, k)
    return out
