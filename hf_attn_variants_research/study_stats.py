"""Intervals and p-values for the MiniLM study (``study.py``).

- ``spearman_test``: Spearman's rho with a permutation p-value (two-sided; exact over all n!
  orderings for n <= 8, else ``n_perm`` random permutations) and a percentile bootstrap interval
  over the points (resampled with replacement; degenerate resamples skipped).
- ``pearson_test``: the same for Pearson's r.
- ``t_interval``: mean and Student-t 95% interval over independent runs (seeds).
- ``draw_interval``: mean, standard deviation and the 2.5-97.5% percentiles over draws (the spread
  of a single draw, not an interval for the mean).

Not Hub code (a tool).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def _rank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


def _test(x, y, transform, n_perm: int, n_boot: int, seed: int) -> dict:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x, y: expected two 1-d arrays of one length, got shapes {x.shape} and {y.shape}")
    n = len(x)
    if n < 3:
        raise ValueError(f"n={n}: a correlation test needs at least 3 points")
    tx, ty = transform(x), transform(y)
    stat = _corr(tx, ty)
    rng = np.random.default_rng(seed)
    if n <= 8:
        perms = [ty[list(p)] for p in itertools.permutations(range(n))]
        exact = True
    else:
        perms = [ty[rng.permutation(n)] for _ in range(n_perm)]
        exact = False
    null = np.array([_corr(tx, p) for p in perms])
    # two-sided; the observed ordering is one of the permutations (exact) or is added (random)
    extreme = int((np.abs(null) >= abs(stat) - 1e-12).sum())
    p = extreme / len(null) if exact else (extreme + 1) / (len(null) + 1)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        bx, by = x[idx], y[idx]
        if np.ptp(bx) == 0 or np.ptp(by) == 0:
            continue
        boots.append(_corr(transform(bx), transform(by)))
    lo, hi = (np.percentile(boots, [2.5, 97.5]) if boots else (float("nan"), float("nan")))
    return {"stat": stat, "p_perm": float(p), "perm_exact": exact, "ci_lo": float(lo), "ci_hi": float(hi),
            "n": n}


def spearman_test(x, y, n_perm: int = 10000, n_boot: int = 2000, seed: int = 0) -> dict:
    """Spearman's rho, two-sided permutation p-value and 95% percentile bootstrap interval."""
    return _test(x, y, _rank, n_perm, n_boot, seed)


def pearson_test(x, y, n_perm: int = 10000, n_boot: int = 2000, seed: int = 0) -> dict:
    """Pearson's r, two-sided permutation p-value and 95% percentile bootstrap interval."""
    return _test(x, y, lambda v: v, n_perm, n_boot, seed)


def t_interval(values, comparisons: int = 1) -> dict:
    """Mean and two-sided 95% Student-t interval over independent runs (n >= 2); with ``comparisons`` = k > 1,
    the Bonferroni interval (level 1 - 0.05/k) for one of k comparisons."""
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    n = len(v)
    if n < 2:
        return {"mean": float(v.mean()) if n else float("nan"), "lo": float("nan"), "hi": float("nan"), "n": n}
    half = t.ppf(1 - 0.025 / comparisons, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return {"mean": float(v.mean()), "lo": float(v.mean() - half), "hi": float(v.mean() + half), "n": n}


def draw_interval(values) -> dict:
    """Mean, sd and the 2.5%-97.5% percentiles (linear interpolation) over draws."""
    v = np.asarray(values, dtype=float)
    lo, hi = np.percentile(v, [2.5, 97.5])
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "lo": float(lo), "hi": float(hi), "n": len(v)}


def bootstrap_mean(values, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of a mean over items (e.g. texts)."""
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)
