"""Training speed of mnistgan against the TensorFlow/Keras references, design for design.

    python benchmarks/compare.py [--tf-python /work/tfvenv/bin/python] [--rounds 3]
                                 [--steps 10] [--warmup 3] [--threads 2] [--precision fp32]

For each round it times design A then design B, each as the TF script of
benchmarks/reference_tf/ (its own venv, `--tf-python`) and the mnistgan preset of the same
design (tf-dcgan, keras-dcgan) in this interpreter, each in a fresh subprocess pinned to the
same thread count. Alternating A B A B spreads any background load over both frameworks.
Images/s counts REAL images consumed per second (A: 256 per step, B: 128 per step), as
throughput.py does. Prints a Markdown table of medians over rounds and writes
benchmarks/results/compare-cpu.json (per-round figures, command, date, load averages).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TF_SCRIPTS = {
    "A": HERE / "reference_tf" / "ref_a_tf.py",
    "B": HERE / "reference_tf" / "ref_b_keras.py",
}
PRESETS = {"A": "tf-dcgan", "B": "keras-dcgan"}


def worker(design: str, steps: int, warmup: int, threads: int, precision: str) -> dict:
    """mnistgan's step of one design, timed as throughput.py does (one real batch, reused)."""
    import torch

    from mnistgan.config import resolve
    from mnistgan.data import load_mnist
    from mnistgan.train import Trainer

    preset = PRESETS[design]
    overrides = {"device": "cpu", "threads": threads, "precision": precision}
    cfg = resolve(preset, overrides=overrides)[0]
    t = Trainer(cfg, Path("unused"), load_mnist(), log=lambda *a: None)
    t._setup(None)
    idx = next(t.batches()).to(t.device)
    real, labels = t.real[idx], t.labels[idx]
    for _ in range(warmup):
        t.train_step(real, labels)
    times = []
    start = time.perf_counter()
    for _ in range(steps):
        s = time.perf_counter()
        stats = t.train_step(real, labels)
        times.append(time.perf_counter() - s)
    total = time.perf_counter() - start
    return {
        "design": design,
        "framework": "mnistgan",
        "preset": preset,
        "torch": torch.__version__,
        "precision": precision,
        "finite": bool(torch.isfinite(stats.float()).all()),
        "images_per_s": round(len(real) * steps / total, 1),
        "step_s_median": round(statistics.median(times), 5),
        "real_images_per_step": len(real),
        "steps": steps,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
    }


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    """Run a timing subprocess; its last stdout line that parses as JSON is the result."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {shlex.join(cmd)}\n{p.stderr[-3000:]}")
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    sys.exit(f"no JSON line from: {shlex.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")


def loadavg() -> list[float]:
    """1, 5 and 15-minute load averages, as `uptime` prints them."""
    return [round(x, 2) for x in os.getloadavg()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tf-python", default="/work/tfvenv/bin/python")
    p.add_argument("--designs", default="A,B")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="mnistgan side")
    p.add_argument(
        "--tf-onednn",
        choices=("default", "on", "off"),
        default="default",
        help="TF_ENABLE_ONEDNN_OPTS for the TF side (default: TF's own choice for this CPU)",
    )
    p.add_argument("--out", default=str(RESULTS / "compare-cpu.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        r = worker(args.worker, args.steps, args.warmup, args.threads, args.precision)
        print(json.dumps(r), flush=True)
        return

    tf_python = Path(args.tf_python)
    if not tf_python.exists():
        sys.exit(
            f"no TensorFlow venv at {tf_python}: create it with `python3 -m venv /work/tfvenv && "
            "/work/tfvenv/bin/pip install -r benchmarks/reference_tf/requirements.txt` "
            "(or pass --tf-python)"
        )
    tf_env = dict(os.environ)
    if args.tf_onednn != "default":
        tf_env["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.tf_onednn == "on" else "0"
    timing = ["--time-steps", str(args.steps), "--warmup", str(args.warmup)]
    timing += ["--threads", str(args.threads)]
    designs = args.designs.split(",")
    rounds = []
    load_before = loadavg()
    for i in range(args.rounds):
        for d in designs:
            tf_cmd = [str(tf_python), str(TF_SCRIPTS[d]), *timing]
            mg_cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", d]
            mg_cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
            mg_cmd += ["--threads", str(args.threads), "--precision", args.precision]
            # alternate which framework goes first as well, round to round
            order = [("tensorflow", tf_cmd), ("mnistgan", mg_cmd)]
            if i % 2:
                order.reverse()
            row = {"round": i + 1, "design": d, "load_start": loadavg()}
            for name, cmd in order:
                row[name] = run_json(cmd, tf_env if name == "tensorflow" else None)
            row["load_end"] = loadavg()
            rounds.append(row)
            print(
                f"round {i + 1} {d}: TF {row['tensorflow']['images_per_s']:7.1f} img/s  "
                f"mnistgan {row['mnistgan']['images_per_s']:7.1f} img/s  load {row['load_end']}",
                flush=True,
            )

    summary = []
    for d in designs:
        rs = [r for r in rounds if r["design"] == d]
        tf_ips = statistics.median(r["tensorflow"]["images_per_s"] for r in rs)
        mg_ips = statistics.median(r["mnistgan"]["images_per_s"] for r in rs)
        # each round times both sides back to back, so its ratio shares that moment's load
        per_round = [r["mnistgan"]["images_per_s"] / r["tensorflow"]["images_per_s"] for r in rs]
        summary.append(
            {
                "design": d,
                "preset": PRESETS[d],
                "tf_images_per_s": round(tf_ips, 1),
                "mnistgan_images_per_s": round(mg_ips, 1),
                "ratio_mnistgan_over_tf": round(mg_ips / tf_ips, 2),
                "ratio_per_round": [round(x, 2) for x in per_round],
                "ratio_median_of_rounds": round(statistics.median(per_round), 2),
                "tf_step_s_median": statistics.median(r["tensorflow"]["step_s_median"] for r in rs),
                "mnistgan_step_s_median": statistics.median(
                    r["mnistgan"]["step_s_median"] for r in rs
                ),
            }
        )
    print()
    print(f"| design | TF img/s | mnistgan img/s ({args.precision}) | ratio | per round |")
    print("|---|---:|---:|---:|---|")
    for s in summary:
        rounds_txt = ", ".join(f"{x:.2f}" for x in s["ratio_per_round"])
        print(
            f"| {s['design']} ({s['preset']}) | {s['tf_images_per_s']:.1f} | "
            f"{s['mnistgan_images_per_s']:.1f} | {s['ratio_mnistgan_over_tf']:.2f}x | "
            f"{rounds_txt} |"
        )
    first = rounds[0]
    out = {
        "command": "python benchmarks/compare.py " + shlex.join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
        },
        "versions": {
            "tensorflow": first["tensorflow"].get("tf"),
            "keras": next(
                (r["tensorflow"]["keras"] for r in rounds if "keras" in r["tensorflow"]), None
            ),
            "torch": first["mnistgan"].get("torch"),
        },
        "tf_onednn": args.tf_onednn,
        "precision_mnistgan": args.precision,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds_n": args.rounds,
        "load_avg_1_5_15": {"before": load_before, "after": loadavg()},
        "summary": summary,
        "rounds": rounds,
    }
    path = Path(args.out)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
