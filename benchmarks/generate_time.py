"""Wall time of `mnistgan generate --n N` as a user runs it: a fresh process each time, start-up,
model load, sampling and the written file included.

    python benchmarks/generate_time.py --run runs/fast5w [--n 10000] [--repeats 10]

Also times `python -c "import torch"` alone, the floor no command can go under. Prints each
run, the median and the minimum; writes benchmarks/results/generate-time-cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a trained run folder (e.g. from make train)")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=str(RESULTS / "generate-time-cpu.json"))
    args = p.parse_args()
    exe = shutil.which("mnistgan") or str(Path(sys.executable).parent / "mnistgan")
    tmp = Path(tempfile.mkdtemp())
    cmd = [exe, "generate", "--run", args.run, "--n", str(args.n), "--out", str(tmp / "x.npz")]
    wall(cmd)  # warm the page cache: shared libraries, weights
    gen, imp = [], []
    for i in range(args.repeats):
        gen.append(wall(cmd))
        imp.append(wall([sys.executable, "-c", "import torch"]))
        print(f"run {i + 1}: generate {gen[-1]:.2f} s   import torch {imp[-1]:.2f} s")
    shutil.rmtree(tmp)
    result = {
        "command": " ".join(["mnistgan", *cmd[1:-1], "x.npz"]),
        "benchmark": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "generate_s": [round(t, 3) for t in gen],
        "generate_median_s": round(statistics.median(gen), 2),
        "generate_min_s": round(min(gen), 2),
        "import_torch_median_s": round(statistics.median(imp), 2),
        "load_avg_after": list(os.getloadavg()),
    }
    print(
        f"generate --n {args.n}: median {result['generate_median_s']} s, "
        f"min {result['generate_min_s']} s; import torch alone: "
        f"median {result['import_torch_median_s']} s"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
