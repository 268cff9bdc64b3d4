"""Shared fixtures: tiny synthetic MNIST-shaped data, so most tests never touch the network."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistgan.data import Mnist


def blob_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digit-like images: a bright stroke per class at a class-dependent angle."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    yy, xx = np.mgrid[0:28, 0:28] - 13.5
    imgs = np.zeros((n, 28, 28), np.float32)
    for i, c in enumerate(labels):
        a = np.pi * c / 10 + rng.normal(0, 0.1)
        d = np.abs(np.cos(a) * yy - np.sin(a) * xx)
        imgs[i] = np.exp(-(d**2) / 4) * (np.hypot(yy, xx) < 10)
    return (imgs * 255).astype(np.uint8), labels


@pytest.fixture(scope="session")
def arrays() -> dict[str, np.ndarray]:
    xtr, ytr = blob_digits(600, 0)
    xte, yte = blob_digits(100, 1)
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}


@pytest.fixture(scope="session")
def expected(arrays) -> dict[str, str]:
    return {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in arrays.items()}


@pytest.fixture(scope="session")
def tiny_data(arrays) -> Mnist:
    return Mnist.from_arrays(arrays, "synthetic")


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def run_cli(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """The real `mnistgan` command in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mnistgan", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def metrics_rows(run: Path) -> list[list[str]]:
    """A run's metrics.csv rows, header checked and dropped."""
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["epoch", "step"]
    return rows[1:]


# What the reliability tests tried and what got through; printed at the end of the run and
# quoted in the README's reliability section.
RELIABILITY: dict[str, list[int]] = {}  # name -> [passed, tried]


def record(name: str, passed: int, tried: int) -> None:
    p, t = RELIABILITY.get(name, [0, 0])
    RELIABILITY[name] = [p + passed, t + tried]


def pytest_terminal_summary(terminalreporter):
    if RELIABILITY:
        terminalreporter.section("reliability")
        for name, (passed, tried) in sorted(RELIABILITY.items()):
            terminalreporter.write_line(f"{name}: {passed}/{tried}")


def outputs_and_grads(layer, x, g):
    """A layer's output and the gradients of <output, g> for its input, weight and bias: what
    an exact reformulation of the layer must reproduce."""
    x = x.detach().clone().requires_grad_()
    y = layer(x)
    params = [q for q in (layer.weight, layer.bias) if q is not None]
    return y, torch.autograd.grad(y, [x, *params], g)
