"""Sample quality measured in the feature space of a small reference MNIST classifier."""

from mnistgan.metrics.classifier import features_and_probs, load_classifier
from mnistgan.metrics.evaluate import (
    blurred_test_images,
    evaluate_images,
    evaluate_real,
    label_accuracy,
    reference_stats,
)
from mnistgan.metrics.fid import fid, frechet_distance, gaussian_stats
from mnistgan.metrics.inception_score import class_stats, inception_score
from mnistgan.metrics.kid import kid
from mnistgan.metrics.prdc import prdc

__all__ = [
    "blurred_test_images",
    "class_stats",
    "evaluate_images",
    "evaluate_real",
    "features_and_probs",
    "fid",
    "frechet_distance",
    "gaussian_stats",
    "inception_score",
    "kid",
    "label_accuracy",
    "load_classifier",
    "prdc",
    "reference_stats",
]
