"""Steady-state training throughput of each preset on this machine.

    python benchmarks/throughput.py [--presets fast,tf-dcgan,keras-dcgan] [--device cpu]
                                    [--steps 20] [--repeats 3] [--precision fp32] [--compile]

Prints real images consumed per second (median of repeats after warm-up), the training step's
GFLOP/s (FLOPs counted by torch.utils.flop_counter) and its share of this machine's conv and
matmul ceilings, measured in the same run. Writes benchmarks/results/throughput-DEVICE.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mnistgan.config import resolve
from mnistgan.data import load_mnist
from mnistgan.train import Trainer

RESULTS = Path(__file__).parent / "results"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def ceiling(device, kind: str, dtype=torch.float32) -> float:
    """GFLOP/s of a large conv (oneDNN/cuDNN) or matmul: the practical peak to compare with."""
    if kind == "conv":
        x = torch.randn(256, 128, 14, 14, device=device, dtype=dtype)
        w = torch.randn(128, 128, 3, 3, device=device, dtype=dtype)
        flops = 2 * 256 * 128 * 14 * 14 * 128 * 9

        def fn():
            return torch.nn.functional.conv2d(x, w, padding=1)
    else:
        a = torch.randn(2048, 2048, device=device, dtype=dtype)
        flops = 2 * 2048**3

        def fn():
            return a @ a

    for _ in range(3):
        fn()
    sync(device)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return flops / min(times) / 1e9


def measure(preset: str, device: str, steps: int, repeats: int, data, extra: dict) -> dict:
    compile_ = extra.get("compile", False)
    cfg = resolve(preset, overrides={"device": device, **extra, "compile": False})[0]
    t = Trainer(cfg, Path("unused"), data, log=lambda *a: None)
    t._setup(None)
    batches = t.batches()
    idx = next(batches).to(t.device)
    real, labels = t.real[idx], t.labels[idx]
    with FlopCounterMode(display=False) as fc:  # counted eagerly: the same math either way
        t.train_step(real, labels)
    flops = fc.get_total_flops()
    compile_s = None
    if compile_:
        t.compile_models()
        start = time.perf_counter()
        t.train_step(real, labels)  # compiles the training graphs
        sync(t.device)
        compile_s = round(time.perf_counter() - start, 1)
    for _ in range(5):  # warm-up (allocator, oneDNN primitive cache, compile)
        t.train_step(real, labels)
    sync(t.device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            t.train_step(real, labels)
        sync(t.device)
        rates.append(len(real) * steps / (time.perf_counter() - start))
    ips = statistics.median(rates)
    step_s = len(real) / ips
    return {
        "preset": preset,
        "images_per_s": round(ips, 1),
        "images_per_s_all": [round(r, 1) for r in rates],
        "real_images_per_step": len(real),
        "gflop_per_step": round(flops / 1e9, 3),
        "gflop_per_s": round(flops / step_s / 1e9, 1),
        "epoch_seconds_60k": round(60000 / ips, 1),
        "compile": compile_,
        "first_step_compile_s": compile_s,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="fast,tf-dcgan,keras-dcgan")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--compile", action="store_true", help="torch.compile G and D first")
    p.add_argument("--out", default=None, help="results JSON (default by device)")
    args = p.parse_args()
    extra = {"threads": args.threads} if args.threads else {}
    extra.update(precision=args.precision, compile=args.compile)
    data = load_mnist()
    device = torch.device("cuda" if args.device.startswith("cuda") else "cpu")
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    # the ceilings in the run's precision: bf16 steps are judged against bf16 kernels
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision, torch.float32)
    ceil_conv = ceiling(device, "conv", dtype)
    ceil_mm = ceiling(device, "matmul", dtype)
    rows = []
    for preset in args.presets.split(","):
        r = measure(preset, args.device, args.steps, args.repeats, data, extra)
        r["share_of_conv_ceiling"] = round(r["gflop_per_s"] / ceil_conv, 3)
        rows.append(r)
        print(
            f"{preset:12s} {r['images_per_s']:8.1f} img/s  {r['gflop_per_s']:7.1f} GFLOP/s "
            f"({100 * r['share_of_conv_ceiling']:.0f}% of conv ceiling)  "
            f"60k epoch {r['epoch_seconds_60k']:.0f}s",
            flush=True,
        )
    print(f"ceilings ({args.precision}): conv {ceil_conv:.0f}, matmul {ceil_mm:.0f} GFLOP/s")
    out = {
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "ceiling_gflop_s": {
            f"conv_{args.precision}": round(ceil_conv, 1),
            f"matmul_{args.precision}": round(ceil_mm, 1),
        },
        "presets": rows,
        "command": "python benchmarks/throughput.py "
        + " ".join(
            f"--{k}" if v is True else f"--{k} {v}"
            for k, v in vars(args).items()
            if v is not None and v is not False
        ),
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(exist_ok=True)
    path = Path(args.out) if args.out else RESULTS / f"throughput-{args.device.split(':')[0]}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
