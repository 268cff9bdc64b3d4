"""FID against training wall time: how good do a preset's digits get in N minutes?

    python benchmarks/time_to_quality.py --preset fast --minutes 5 --every 30 [--set ema=0.999]

Trains the preset for a wall-clock budget and every `--every` seconds of training scores the
sampling generator (EMA when on) with the project's metric on 5,000 samples. Evaluation time
is not counted as training time. Also scores two reference rows with the same metric and n:
real test digits, real test digits blurred with a Gaussian of sigma = 0.6 px, and binarized real
test digits (>= 128 -> 255); `--refs-only` prints just these.
Writes benchmarks/results/ttq-PRESET.csv and .png, and a JSON summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from mnistgan.config import resolve
from mnistgan.data import load_mnist
from mnistgan.metrics import evaluate_images
from mnistgan.train import Trainer

RESULTS = Path(__file__).parent / "results"


class TimedTrainer(Trainer):
    """Pauses training every `every` seconds of training time to score the generator."""

    def __init__(self, *a, every: float, n: int, **kw):
        super().__init__(*a, **kw)
        self.every, self.n, self.curve = every, n, []
        self.train_time, self.next_eval = 0.0, 0.0

    def train_step(self, real, labels=None):
        if self.train_time >= self.next_eval:
            s = self.evaluate(self.n)
            self.curve.append({"train_s": round(self.train_time, 1), "step": self.step, **s})
            self.next_eval += self.every
        t = time.perf_counter()
        out = super().train_step(real, labels)
        self.train_time += time.perf_counter() - t
        if self.cfg.max_minutes and self.train_time >= self.cfg.max_minutes * 60:
            self.stop_reason = "budget"
        return out


def reference_rows(test: np.ndarray, n: int) -> dict:
    """The yardsticks, scored like a generator: n real test digits as they are, blurred
    (Gaussian, sigma 0.6 px) and binarized (pixels >= 128 -> 255, else 0)."""
    pick = np.sort(np.random.default_rng(0).choice(len(test), n, replace=False))
    real = test[pick]
    blurred = gaussian_filter(real.astype(np.float64), sigma=(0, 0.6, 0.6))
    return {
        "real test digits": evaluate_images(real),
        "blurred test digits (sigma 0.6)": evaluate_images(
            np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
        ),
        "binarized test digits (>= 128)": evaluate_images(
            np.where(real >= 128, 255, 0).astype(np.uint8)
        ),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fast")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--every", type=float, default=30.0, help="seconds of training between evals")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="config overrides")
    p.add_argument("--tag", default="")
    p.add_argument("--refs-only", action="store_true", help="print the reference rows and stop")
    args = p.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides.update(epochs="1000", max_minutes=str(1e9), eval_every="0", sample_every="0",
                     checkpoint_every="0")  # fmt: skip
    cfg = resolve(args.preset, overrides=overrides)[0].replace(max_minutes=args.minutes)
    data = load_mnist()

    refs = reference_rows(data.test_images.numpy(), args.n)
    if args.refs_only:
        out = RESULTS / f"references-n{args.n}.json"
        out.write_text(json.dumps({"command": "python benchmarks/time_to_quality.py --refs-only "
                                   f"--n {args.n}", **refs}, indent=1) + "\n")  # fmt: skip
        print({k: round(v["fid"], 2) for k, v in refs.items()}, f"-> {out}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        t = TimedTrainer(cfg, Path(tmp) / "run", data, every=args.every, n=args.n, log=print)
        t.run()
        final = t.evaluate(args.n)
        t.curve.append({"train_s": round(t.train_time, 1), "step": t.step, **final})
    name = f"ttq-{args.preset}{'-' + args.tag if args.tag else ''}"
    RESULTS.mkdir(exist_ok=True)
    keys = ["train_s", "step", "fid", "kid", "precision", "recall", "coverage", "digits_covered"]
    with open(RESULTS / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for row in t.curve:
            w.writerow([row[k] for k in keys])
    print(f"\n{'training s':>10} {'FID':>8} {'coverage':>8} digits")
    for row in t.curve:
        print(f"{row['train_s']:10.0f} {row['fid']:8.2f} {row['coverage']:8.3f} "
              f"{row['digits_covered']}")  # fmt: skip
    for label, s in refs.items():
        print(f"{label:>32s}: FID {s['fid']:.2f}, coverage {s['coverage']:.3f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["train_s"] / 60 for r in t.curve], [r["fid"] for r in t.curve], "o-",
            label=args.preset)  # fmt: skip
    for (label, s), style in zip(refs.items(), ("--", ":", "-."), strict=True):
        ax.axhline(s["fid"], ls=style, c="gray", label=label)
    ax.set(yscale="log", xlabel="training minutes (this machine)", ylabel=f"FID (n={args.n})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=90)
    summary = {
        "preset": args.preset,
        "overrides": {k: v for k, v in overrides.items() if k in dict(kv.split("=", 1)
                                                                      for kv in args.set)},
        "minutes": args.minutes,
        "n": args.n,
        "final": {k: t.curve[-1][k] for k in keys},
        "references": {k: {m: v[m] for m in ("fid", "coverage", "precision", "recall")}
                       for k, v in refs.items()},
        "command": "python benchmarks/time_to_quality.py " + " ".join(
            f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items()
            if v not in ("", [], False, None)),
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {RESULTS / name}.csv/.png/.json")


if __name__ == "__main__":
    main()
