"""What each training option does to sample quality at a fixed CPU time budget.

    python benchmarks/ablation.py --preset fast --minutes 2 [--n 5000]

Trains the preset once per option set below with `mnistgan train --max-minutes M` and scores
each final generator with `mnistgan evaluate --run RUN --n N --json`. Prints a Markdown table
and writes benchmarks/results/ablation-PRESET.json. Runs one after another (the budget is wall
time, so nothing else should run meanwhile).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
VARIANTS = {
    "preset as is": [],
    "no EMA": ["--ema", "0"],
    "EMA warm-up": ["--ema-warmup"],
    "no EMA warm-up": ["--no-ema-warmup"],
    "unconditional": ["--no-conditional"],
    "hinge + spectral norm": ["--loss", "hinge", "--spectral-norm"],
    "DiffAugment translation,cutout": ["--diffaugment", "translation,cutout"],
    "label smoothing 0.1": ["--label-smoothing", "0.1"],
    "R1 gamma 1": ["--r1", "1"],
    "instance noise 0.1": ["--instance-noise", "0.1"],
    "TTUR lr-d 4e-4": ["--lr-d", "4e-4"],
}


def mnistgan(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "mnistgan", *map(str, args)],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"mnistgan {' '.join(map(str, args))} failed: {r.stderr.strip()}")
    return r.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fast")
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--only", help="variant names to run, separated by ;")
    args = p.parse_args()
    names = args.only.split(";") if args.only else list(VARIANTS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            run = Path(tmp) / name.replace(" ", "_").replace(",", "_")
            mnistgan("train", "--preset", args.preset, "--max-minutes", args.minutes,
                     "--eval-every", "0", "--run-dir", run, *VARIANTS[name])  # fmt: skip
            s = json.loads(mnistgan("evaluate", "--run", run, "--n", args.n, "--json"))
            s = {"variant": name, "flags": " ".join(VARIANTS[name]), **s}
            rows.append(s)
            acc = f"  label acc {s['label_accuracy']:.3f}" if "label_accuracy" in s else ""
            print(f"{name:32s} FID {s['fid']:8.2f}  coverage {s['coverage']:.3f}  "
                  f"digits {s['digits_covered']}{acc}", flush=True)  # fmt: skip
    print(
        f"\n| {args.preset}, {args.minutes:g} min on this CPU | flags | FID | coverage | digits |"
    )
    print("|---|---|---|---|---|")
    for s in rows:
        print(f"| {s['variant']} | `{s['flags']}` | {s['fid']:.1f} | {s['coverage']:.3f} | "
              f"{s['digits_covered']}/10 |")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ablation-{args.preset}.json"
    cmd = f"python benchmarks/ablation.py --preset {args.preset} --minutes {args.minutes:g} "
    cmd += f"--n {args.n}" + (f" --only '{args.only}'" if args.only else "")
    out.write_text(json.dumps({"command": cmd, "date": time.strftime("%Y-%m-%d"),
                               "rows": rows}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
