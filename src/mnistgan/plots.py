"""curves.png: losses, D outputs and D accuracy over training, rebuilt from metrics.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = rows[0].keys() if rows else []

    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return np.nan

    return {c: np.array([num(r[c]) for r in rows]) for c in cols}


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """A running mean over `window` steps (same length as y), ignoring NaNs."""
    if window <= 1 or len(y) < 2:
        return y
    ok = ~np.isnan(y)
    kernel = np.ones(window)
    num = np.convolve(np.where(ok, y, 0.0), kernel, mode="same")
    den = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def plot_curves(metrics_csv: Path, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    m = read_metrics(metrics_csv)
    if not m or len(m.get("step", [])) == 0:
        return None
    step = m["step"]
    w = max(1, len(step) // 100)
    evals = [c for c in ("fid", "kid") if c in m and np.isfinite(m[c]).any()]
    fig, axes = plt.subplots(1, 3 + bool(evals), figsize=(5 * (3 + bool(evals)), 3.6))
    ax = axes[0]
    ax.plot(step, smooth(m["d_loss"], w), label="D loss")
    ax.plot(step, smooth(m["g_loss"], w), label="G loss")
    ax.set_title("losses")
    ax = axes[1]
    ax.plot(step, smooth(m["d_x"], w), label="D(x)")
    ax.plot(step, smooth(m["d_g_z"], w), label="D(G(z))")
    ax.set_ylim(0, 1)
    ax.set_title("discriminator outputs")
    ax = axes[2]
    ax.plot(step, smooth(m["acc_real"], w), label="acc on real")
    ax.plot(step, smooth(m["acc_fake"], w), label="acc on fake")
    ax.set_ylim(0, 1)
    ax.set_title("discriminator accuracy")
    if evals:
        ax = axes[3]
        for c in evals:
            ok = np.isfinite(m[c])
            ax.plot(step[ok], m[c][ok], "o-", label=c.upper())
        ax.set_yscale("log")
        ax.set_title("sample quality (lower is better)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return Path(out)
