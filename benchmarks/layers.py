"""Each faster layer of src/mnistgan/layers.py against the torch layer it replaces, on the
shapes the presets use, timed alternately (native, fast, native, fast, ...).

    python benchmarks/layers.py [--repeats 7] [--threads 2]

Prints milliseconds per forward+backward (training) and per forward under inference_mode
(sampling), medians of the repeats, channels_last like the presets; writes
benchmarks/results/layers-cpu.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from mnistgan.layers import use_fast_layers

RESULTS = Path(__file__).parent / "results"

# name -> (the layer as the preset builds it, input shape)
CASES = {
    "tf-dcgan G 5x5 s1 transposed conv 256->128 @7x7, batch 256": (
        lambda: nn.ConvTranspose2d(256, 128, 5, 1, 2, bias=False),
        (256, 256, 7, 7),
    ),
    "tf-dcgan D dropout 0.3 on 64x14x14, batch 256": (lambda: nn.Dropout(0.3), (256, 64, 14, 14)),
    "tf-dcgan G 5x5 s2 to-image 64->1 @14x14, batch 256": (
        lambda: nn.ConvTranspose2d(64, 1, 5, 2, 2, 1, bias=False),
        (256, 64, 14, 14),
    ),
    "keras-dcgan G 7x7 conv 128->1 @28x28, batch 256": (
        lambda: nn.Conv2d(128, 1, 7, padding=3),
        (256, 128, 28, 28),
    ),
    "keras-dcgan D dropout 0.4 on 64x14x14, batch 128": (
        lambda: nn.Dropout(0.4),
        (128, 64, 14, 14),
    ),
    "fast G 4x4 s2 to-image 32->1 @14x14, batch 64": (
        lambda: nn.ConvTranspose2d(32, 1, 4, 2, 1),
        (64, 32, 14, 14),
    ),
    "fast G 4x4 s2 to-image 32->1 @14x14, sampling batch 500": (
        lambda: nn.ConvTranspose2d(32, 1, 4, 2, 1),
        (500, 32, 14, 14),
    ),
}


def timed(fn, steps: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps * 1e3


def train_call(layer, x, xg, g):
    return lambda: layer(xg).backward(g)


def infer_call(layer, x, xg, g):
    def call():
        with torch.inference_mode():
            layer(x)

    return call


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="calls per timing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "layers-cpu.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name, (make, shape) in CASES.items():
        native = make().to(memory_format=torch.channels_last)
        fast = copy.deepcopy(native)
        assert use_fast_layers(fast) == 1, name
        x = torch.randn(shape).to(memory_format=torch.channels_last)
        xg = x.clone().requires_grad_()
        g = torch.randn_like(native(x))

        row = {"layer": name, "fast_class": type(fast).__name__}
        for mode, make_fn in (("train_fwd_bwd", train_call), ("inference_fwd", infer_call)):
            times = {"native": [], "fast": []}
            for _ in range(args.repeats):
                for kind, layer in (("native", native), ("fast", fast)):
                    times[kind].append(timed(make_fn(layer, x, xg, g), args.steps))
            nat, fst = statistics.median(times["native"]), statistics.median(times["fast"])
            row[mode] = {"native_ms": round(nat, 2), "fast_ms": round(fst, 2)}
            row[mode]["speedup"] = round(nat / fst, 2)
        rows.append(row)
        t, i = row["train_fwd_bwd"], row["inference_fwd"]
        print(
            f"{name:60s} train {t['native_ms']:8.1f} -> {t['fast_ms']:7.1f} ms "
            f"({t['speedup']:.2f}x)  inference {i['native_ms']:7.1f} -> {i['fast_ms']:6.1f} ms "
            f"({i['speedup']:.2f}x)",
            flush=True,
        )
    result = {
        "command": "python benchmarks/layers.py "
        f"--repeats {args.repeats} --steps {args.steps} --threads {args.threads}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "layers": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
