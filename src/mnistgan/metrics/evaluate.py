"""One call from uint8 digit images to every metric, against cached reference statistics.

`python -m mnistgan.metrics` prints the real and blurred baselines, with timings.
"""

import os
import tempfile
import zipfile

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from mnistgan.data import load_mnist, mnist_home
from mnistgan.errors import MnistganError
from mnistgan.metrics.classifier import CLASSIFIER_SHA256, as_uint8_images, features_and_probs
from mnistgan.metrics.fid import frechet_distance, gaussian_stats
from mnistgan.metrics.inception_score import class_stats, inception_score
from mnistgan.metrics.kid import kid
from mnistgan.metrics.prdc import prdc

REFERENCES = ("test", "train")
MIN_IMAGES = 10  # P/R/D/C need more points than their k=5 neighbours


def _reference_images(reference):
    if reference not in REFERENCES:
        raise MnistganError(f"unknown reference {reference!r}; choose one of {REFERENCES}")
    mnist = load_mnist()
    return mnist.test_images if reference == "test" else mnist.train_images


def _cache_path(reference):
    return mnist_home() / f"reference-{reference}-{CLASSIFIER_SHA256[:16]}.npz"


def reference_stats(reference="test"):
    """Features, mean and covariance of a real MNIST split, cached on disk per classifier sha256."""
    path = _cache_path(reference)
    try:
        with np.load(path, allow_pickle=False) as d:
            stats = {k: d[k] for k in ("features", "mu", "sigma")}
            if str(d["classifier_sha256"]) == CLASSIFIER_SHA256:
                return stats
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # missing, truncated or foreign: recompute below and overwrite
    features, _ = features_and_probs(_reference_images(reference))
    mu, sigma = gaussian_stats(features)
    stats = {"features": features, "mu": mu, "sigma": sigma}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a crash or a concurrent run never leaves a half-written cache.
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
        np.savez(f, classifier_sha256=CLASSIFIER_SHA256, **stats)
    os.replace(f.name, path)
    return stats


def evaluate_images(images, reference="test", n=None, seed=0):
    """Score uint8 images (N,28,28) against a real MNIST split ("test" or "train").

    n: score a seeded random subset of n images (default: all). seed also fixes the KID subsets
    and the reference subset P/R/D/C use (the same size as the sample, as the metrics assume).
    FID is biased upwards at small n: compare FIDs only at equal n.
    """
    images = as_uint8_images(images)
    rng = np.random.default_rng(seed)
    if n is not None:
        if not MIN_IMAGES <= n <= len(images):
            raise MnistganError(f"n={n} must be between {MIN_IMAGES} and {len(images)}")
        images = images[torch.from_numpy(rng.choice(len(images), n, replace=False))]
    if len(images) < MIN_IMAGES:
        raise MnistganError(f"need at least {MIN_IMAGES} images to score, got {len(images)}")
    ref = reference_stats(reference)
    feats, probs = features_and_probs(images)
    mu, sigma = gaussian_stats(feats)
    kid_mean, kid_std = kid(feats, ref["features"], seed=seed)
    is_mean, is_std = inception_score(probs)
    ref_idx = rng.choice(len(ref["features"]), min(len(feats), len(ref["features"])), replace=False)
    return {
        "n": len(feats),
        "fid": frechet_distance(mu, sigma, ref["mu"], ref["sigma"]),
        "kid": kid_mean,
        "kid_std": kid_std,
        "is": is_mean,
        "is_std": is_std,
        **prdc(ref["features"][np.sort(ref_idx)], feats),
        **class_stats(probs),
    }


def label_accuracy(images, requested) -> dict:
    """How often the classifier reads a conditional generator's digit as the one asked for."""
    requested = np.asarray(requested)
    hit = features_and_probs(images)[1].argmax(1) == requested
    return {
        "label_accuracy": float(hit.mean()),
        "label_accuracy_per_digit": [float(hit[requested == d].mean()) for d in range(10)],
    }


def evaluate_real(n=10000, seed=0):
    """Score n random real TRAIN images against the test reference: the best a generator can do."""
    return evaluate_images(load_mnist().train_images, reference="test", n=n, seed=seed)


def blurred_test_images(sigma=0.6):
    """The 10k test digits under a Gaussian blur (in pixels): a known, mild degradation."""
    x = load_mnist().test_images.numpy().astype(np.float64)
    x = gaussian_filter(x, sigma=(0, sigma, sigma))  # blur within each image, not across images
    return np.clip(np.round(x), 0, 255).astype(np.uint8)
