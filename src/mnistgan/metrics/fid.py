"""Fréchet distance between two Gaussians fitted to feature sets (FID, Heusel et al. 2017)."""

import warnings

import numpy as np
from scipy import linalg


def gaussian_stats(features):
    """Mean and covariance (float64) of features (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), in float64 as in pytorch-fid."""
    mu1, mu2 = np.atleast_1d(np.float64(mu1)), np.atleast_1d(np.float64(mu2))
    sigma1, sigma2 = np.atleast_2d(np.float64(sigma1)), np.atleast_2d(np.float64(sigma2))
    with warnings.catch_warnings():
        # Dead ReLU units make both covariances exactly singular; sqrtm still returns the right
        # finite answer, and a non-finite one is caught and retried just below.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # Near-singular product (e.g. dead ReLU units): nudge both diagonals, as pytorch-fid does.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    # sqrtm of a product of PSD matrices is real up to round-off; drop the tiny imaginary part.
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(features1, features2):
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))
