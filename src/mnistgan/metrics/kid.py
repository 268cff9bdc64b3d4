"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2, cubic polynomial kernel."""

import numpy as np


def _mmd2_unbiased(x, y):
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    # Unbiased: leave the diagonal k(x_i, x_i) out of the within-set means.
    return (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )


def kid(features1, features2, n_subsets=100, subset_size=1000, seed=0):
    """(mean, std) of MMD^2 over n_subsets random subsets of min(subset_size, n1, n2) rows each."""
    x = np.asarray(features1, dtype=np.float64)
    y = np.asarray(features2, dtype=np.float64)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    mmds = [
        _mmd2_unbiased(
            x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)]
        )
        for _ in range(n_subsets)
    ]
    return float(np.mean(mmds)), float(np.std(mmds))
