"""Reference MNIST digit classifier: the feature space every metric in this package is measured in.

A small CNN (~131k parameters, ~0.5 MB). Its 128-d penultimate layer (after ReLU) plays the role
Inception's pool3 plays for FID on ImageNet; its softmax gives class labels for the Inception Score
and the class histogram.

The shipped weights were trained on CPU with

    .venv/bin/python scripts/train_classifier.py

(seed 0, 6 epochs of Adam + one-cycle on the 60k train set with random affine augmentation) and
reach 99.46% accuracy on the 10k test set (about 15 minutes on 2 shared CPU cores).
Retraining with other settings gives a different file, hence a different sha256 and different
reference statistics: update CLASSIFIER_SHA256 and TEST_ACCURACY with what the script prints.
"""

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load as load_safetensors
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mnistgan.errors import MnistganError

WEIGHTS_PATH = Path(__file__).with_name("classifier.safetensors")
CLASSIFIER_SHA256 = "02373d7e1a91ee041d7552aa27c6c2b812963062dd4189e3b9b840dca68e566a"
TEST_ACCURACY = 0.9946  # on the 10k MNIST test set, as printed by scripts/train_classifier.py
FEATURE_DIM = 128


def _conv_block(c_in, c_out):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),  # bias is redundant before BatchNorm
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class Classifier(nn.Module):
    """(N,1,28,28) floats in [0,1] -> logits (N,10); `features` gives the 128-d embedding."""

    def __init__(self):
        super().__init__()
        # 28 -> 14 -> 7 -> 3: three cheap stages keep CPU training to about a minute per epoch.
        self.body = nn.Sequential(_conv_block(1, 32), _conv_block(32, 64), _conv_block(64, 64))
        self.fc = nn.Linear(64 * 3 * 3, FEATURE_DIM)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x):
        return torch.relu(self.fc(self.body(x).flatten(1)))

    def forward(self, x):
        return self.head(self.dropout(self.features(x)))


def sha256_of(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def load_classifier():
    """The shipped classifier, inference-ready, after checking the weights file's sha256."""
    try:
        blob = WEIGHTS_PATH.read_bytes()
    except OSError as e:
        raise MnistganError(f"cannot read classifier weights {WEIGHTS_PATH}: {e}") from e
    sha = hashlib.sha256(blob).hexdigest()
    if sha != CLASSIFIER_SHA256:
        # Metrics from other weights are not comparable with published ones: refuse, don't warn.
        raise MnistganError(
            f"classifier weights {WEIGHTS_PATH} have sha256 {sha}, expected {CLASSIFIER_SHA256}"
        )
    model = Classifier()
    model.load_state_dict(load_safetensors(blob))
    model.eval().requires_grad_(False)
    # Same function, about twice as fast on CPU: fold each BatchNorm into its conv and use
    # channels_last, which oneDNN's convolutions and pooling prefer.
    for block in model.body:
        block[0], block[1] = fuse_conv_bn_eval(block[0], block[1]), nn.Identity()
    return model.to(memory_format=torch.channels_last)


def as_uint8_images(images):
    """uint8 images (N,28,28) or (N,1,28,28), numpy or torch -> uint8 tensor (N,28,28), checked."""
    images = images if torch.is_tensor(images) else torch.from_numpy(np.asarray(images))
    if images.dtype != torch.uint8:
        raise MnistganError(f"expected uint8 images, got {images.dtype}")
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise MnistganError(f"expected images of shape (N, 28, 28), got {tuple(images.shape)}")
    return images


def as_float_images(images):
    """uint8 images (N,28,28) -> the classifier's input, float32 (N,1,28,28) in [0,1]."""
    return as_uint8_images(images)[:, None].float() / 255


def features_and_probs(images, batch_size=1000):
    """uint8 images (N,28,28) -> (features (N,128) float32, class probabilities (N,10) float64)."""
    model = load_classifier()
    images = as_float_images(images).contiguous(memory_format=torch.channels_last)
    feats, probs = [], []
    with torch.inference_mode():
        for batch in images.split(batch_size):
            f = model.features(batch)
            feats.append(f)
            probs.append(torch.softmax(model.head(f).double(), dim=1))
    if not feats:
        return np.zeros((0, FEATURE_DIM), np.float32), np.zeros((0, 10))
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()
