"""Native nn.ConvTranspose2d vs its exact sub-pixel form (models.SubpixelConvTranspose2d).

    python benchmarks/subpixel.py [--presets tf-dcgan,keras-dcgan,fast] [--repeats 3]
                                  [--threads 2] [--skip-generators]

Times forward + backward (gradients w.r.t. input and parameters) of every stride-2 transposed
conv of each preset's generator at the preset's batch size and input shape, then of the whole
generator (train mode, as built for training): native, every stride-2 layer sub-pixel, and only
the to-image layer (out_channels 1) sub-pixel. NCHW and channels_last (model and input
converted, as train.py does). Variants alternate A B A B after one warm-up each; figures are
medians. Writes benchmarks/results/subpixel-cpu.json, keeping rows of presets (and thread
counts) not re-run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from mnistgan.config import PRESETS
from mnistgan.models import build_generator, init_weights, use_subpixel

RESULTS = Path(__file__).parent / "results"
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def generator(preset: str) -> nn.Module:
    c = PRESETS[preset]
    g = build_generator(c.arch, c.latent_dim, c.width, c.conditional)
    init_weights(g)
    return g.train()


def generator_inputs(preset: str, n: int) -> tuple:
    c = PRESETS[preset]
    z = torch.randn(n, c.latent_dim)
    return (z, torch.randint(0, 10, (n,))) if c.conditional else (z,)


def stride2_layers(preset: str) -> list[tuple[str, nn.ConvTranspose2d, tuple]]:
    """(name, layer, input shape at the preset's batch size) of each eligible layer."""
    g, found, hooks = generator(preset), [], []
    for name, m in g.named_modules():
        if type(m) is nn.ConvTranspose2d and tuple(m.stride) == (2, 2):
            hook = lambda m, i, o, name=name: found.append((name, m, i[0].shape))  # noqa: E731
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        g.eval()(*generator_inputs(preset, 2))
    for h in hooks:
        h.remove()
    bs = PRESETS[preset].batch_size
    return [(name, m, (bs, *shape[1:])) for name, m, shape in found]


def step(model: nn.Module, args: tuple, grad: torch.Tensor):
    def run():
        model.zero_grad(set_to_none=True)
        for a in args:
            a.grad = None
        model(*args).backward(grad)

    return run


def interleaved(fns: dict, warmup: int, repeats: int) -> dict[str, float]:
    """Median ms per fn, run A B A B; cheap steps (< 0.25 s) get 5x the repeats."""
    times = {k: [] for k in fns}
    i = 0
    while i < warmup + repeats:
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
        i += 1
        if i == warmup and max(v[-1] for v in times.values()) < 0.25:
            repeats *= 5
    return {k: statistics.median(v[warmup:]) * 1e3 for k, v in times.items()}


def variants(model: nn.Module, layout: str, whole: bool) -> dict[str, nn.Module]:
    """native, every stride-2 layer sub-pixel, and (whole generators) the to-image layer only."""
    out = {"native": copy.deepcopy(model), "subpixel": copy.deepcopy(model)}
    assert use_subpixel(out["subpixel"]) > 0
    last = copy.deepcopy(model)
    if whole and use_subpixel(last, max_out_channels=1) > 0:
        out["to_image_only"] = last
    for m in out.values():
        m.to(memory_format=LAYOUTS[layout])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="tf-dcgan,keras-dcgan,fast")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-generators", action="store_true")
    p.add_argument("--out", default=str(RESULTS / "subpixel-cpu.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows, started, presets = [], time.time(), args.presets.split(",")
    run = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    load_start = os.getloadavg()[0]
    head = ("preset", "what", "layout", "native ms", "subpx ms", "speed-up")
    print("{:12} {:34} {:14} {:>10} {:>10} {:>9}".format(*head))
    for preset in presets:
        bs = PRESETS[preset].batch_size
        jobs = []
        for name, m, shape in stride2_layers(preset):
            what = (f"{name}: {m.in_channels}->{m.out_channels} k{m.kernel_size[0]} "
                    f"p{m.padding[0]} op{m.output_padding[0]} {shape[2]}x{shape[3]}")  # fmt: skip
            jobs.append((what, m, (torch.randn(shape),)))
        if not args.skip_generators:
            jobs.append(("whole generator", generator(preset), generator_inputs(preset, bs)))
        for what, model, base_inputs in jobs:
            for layout, fmt in LAYOUTS.items():
                models = variants(model, layout, what == "whole generator")
                inputs = tuple(
                    a.to(memory_format=fmt).clone().requires_grad_() if a.dim() == 4 else a
                    for a in base_inputs
                )
                with torch.no_grad():
                    out = models["native"](*inputs)
                    err = (models["subpixel"](*inputs) - out).abs().max().item()
                grad = torch.randn_like(out)
                fns = {k: step(m, inputs, grad) for k, m in models.items()}
                ms = interleaved(fns, args.warmup, args.repeats)
                row = {"preset": preset, "what": what, "layout": layout, "batch": bs,
                       **{f"{k}_ms": round(v, 2) for k, v in ms.items()},
                       "speedup": round(ms["native"] / ms["subpixel"], 3),
                       "max_abs_diff_fwd": err, "threads": args.threads, "run": run}  # fmt: skip
                extra = ""
                if "to_image_only" in ms:
                    row["speedup_to_image_only"] = round(ms["native"] / ms["to_image_only"], 3)
                    extra = f"   to-image layer only {row['speedup_to_image_only']:.2f}x"
                rows.append(row)
                print(f"{preset:12} {what:34} {layout:14} {row['native_ms']:10.1f} "
                      f"{row['subpixel_ms']:10.1f} {row['speedup']:8.2f}x{extra}",
                      flush=True)  # fmt: skip
    path = Path(args.out)
    if path.exists():  # keep the figures of presets/thread counts this run did not measure
        old = json.loads(path.read_text())
        mine = {(preset, args.threads) for preset in presets}
        rows = [r for r in old["rows"] if (r["preset"], r.get("threads", 2)) not in mine] + rows
    out = {
        "command": "python benchmarks/subpixel.py " + " ".join(sys.argv[1:]),
        "date": run,
        "what": "forward+backward ms, median of interleaved repeats (native, all stride-2 "
        "layers sub-pixel, to-image layer only); each row names the run that measured it",
        "torch": torch.__version__,
        "threads_last_run": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "loadavg_1min_start_end_last_run": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "seconds_last_run": round(time.time() - started, 1),
        "rows": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path} ({out['seconds_last_run']} s)")


if __name__ == "__main__":
    main()
