"""The one training loop. Its D/G step pattern, sampling of real batches and cadence all come
from the Config; presets differ only in their configs.

Per step: real batch -> D step -> G step -> stats. At the end of an epoch: a printed line,
a sample grid, a checkpoint (all at the preset's cadence). At the end of training: the final
checkpoint, generator.safetensors/.json, curves.png and progress.gif.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import __version__
from . import checkpoint as ckpt
from .augment import diff_augment
from .config import Config, from_dict, to_dict
from .data import Mnist, load_mnist, to_float
from .device import default_threads, keep_freed_memory, pick_device, tune_cuda
from .errors import CheckpointError, DivergenceError, StorageError, UsageError, brief
from .layers import use_fast_layers
from .losses import LOSSES, gradient_penalty, r1_penalty
from .models import (
    add_spectral_norm,
    build_discriminator,
    build_generator,
    init_weights,
    output_range,
)
from .plots import plot_curves
from .sample import Generator, progress_gif, save_grid

METRIC_COLUMNS = [
    "epoch", "step", "d_loss", "g_loss", "d_x", "d_g_z", "acc_real", "acc_fake",
    "images_per_s", "time_s", "fid", "kid", "coverage", "digits_covered",
]  # fmt: skip
EVAL_COLUMNS = METRIC_COLUMNS[-4:]  # filled on the last row of an epoch that was evaluated
EVAL_SEED = 1234  # the noise of in-training evaluation: the same digits at every epoch
# Fields that may change when a run is resumed; anything else would make it another run.
RESUMABLE_OVERRIDES = {
    "epochs", "max_minutes", "device", "threads", "channels_last", "sample_every",
    "checkpoint_every", "keep_checkpoints", "export_every", "data_source", "data_path",
    "eval_every", "eval_n", "on_divergence", "collapse_steps", "compile", "fast_layers",
}  # fmt: skip
MAX_ROLLBACKS = 3  # --on-divergence rollback: then give up and stop
ROLLBACK_LR_FACTOR = 0.5  # each rollback halves both learning rates
COLLAPSE_EPS = 0.01  # D collapsed: mean D(x) > 1 - eps and mean D(G(z)) < eps
# Steps between host reads of the training stats (losses, D outputs, weight norm). On a GPU a
# read waits for all queued work, so the CPU could not run ahead of the GPU if it read every
# step; the guard checks every step of the batch read, in order. On CPU a read costs nothing.
STATS_READ_EVERY = {"cuda": 32}


class Diverged(Exception):
    """Raised inside the loop when a step fails the divergence guard; _run decides what next."""


@dataclass
class RunResult:
    run_dir: Path
    epoch: int  # completed epochs
    step: int
    finished: bool  # all epochs done (False: stopped by --max-minutes or Ctrl-C)
    train_seconds: float
    generator_path: Path | None


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """One training process per run folder. flock dies with its process, so a killed run
    never leaves a stale lock behind."""
    import fcntl

    with open(Path(run_dir) / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{run_dir} is in use by another `mnistgan train`") from None
        yield


@contextlib.contextmanager
def stop_on_signals(trainer):
    """SIGINT/SIGTERM ask the loop to stop after the current step (never mid-update)."""

    def handler(signum, frame):
        if trainer.stop_reason and trainer.stop_reason.startswith("signal"):
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        trainer.stop_reason = f"signal {signal.Signals(signum).name}"

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@torch.no_grad()
def update_ema(ema: torch.optim.swa_utils.AveragedModel, model, decay: float, warmup: bool):
    """One EMA step of `model`'s weights and buffers into `ema`; with warm-up the decay after
    n updates is min(decay, (1 + n) / (10 + n)): 0.18 at first, `decay` from n = 8,990 on for
    0.999. AveragedModel.update_parameters computes the same, but reads its update count in
    Python on every call: on a GPU each read is a host sync."""
    n = int(ema.n_averaged)  # AveragedModel keeps the count on the CPU: free to read
    targets = [*ema.module.parameters(), *ema.module.buffers()]
    sources = [*model.parameters(), *model.buffers()]
    if n == 0:
        torch._foreach_copy_(targets, sources)
    else:
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        floats = [(t, s) for t, s in zip(targets, sources, strict=True) if t.is_floating_point()]
        torch._foreach_lerp_([t for t, _ in floats], [s for _, s in floats], 1 - d)
        for t, s in zip(targets, sources, strict=True):
            if not t.is_floating_point():  # BN's batch counter: not an average
                t.copy_(s)
    ema.n_averaged += 1


def _step_of(row: list[str]) -> float:
    """The step column of a metrics.csv row (inf for a row that is not ours)."""
    try:
        return int(row[1])
    except ValueError:
        return math.inf


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, data: Mnist | None = None, log=print):
        self.cfg, self.run_dir, self.log = cfg, Path(run_dir), log
        self.data = data

    # ------------------------------------------------------------------ setup

    def _setup(self, resume_state: dict | None):
        cfg = self.cfg
        self.device = pick_device(cfg.device)
        if self.device.type == "cpu":
            torch.set_num_threads(cfg.threads or default_threads())
            keep_freed_memory()
        elif self.device.type == "cuda":
            tune_cuda()
        self.read_every = STATS_READ_EVERY.get(self.device.type, 1)
        torch.manual_seed(cfg.seed)
        self.pixel_range = output_range(cfg.arch)
        self.G = build_generator(cfg.arch, cfg.latent_dim, cfg.width, cfg.conditional)
        self.D = build_discriminator(cfg.arch, cfg.width, cfg.conditional)
        init_weights(self.G)
        init_weights(self.D)
        if cfg.fast_layers and self.device.type == "cpu":  # same math, measured faster
            use_fast_layers(self.G)
            use_fast_layers(self.D)
        if cfg.spectral_norm:
            add_spectral_norm(self.D)
        self.G.to(self.device)
        self.D.to(self.device)
        if cfg.channels_last:  # same math, faster convolutions (oneDNN/cuDNN NHWC kernels)
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        # An exponential moving average of G's weights (and BN statistics): steadier samples.
        self.G_ema = None
        if cfg.ema > 0:
            self.G_ema = torch.optim.swa_utils.AveragedModel(self.G, use_buffers=True)
        if cfg.compile:
            self.compile_models()
        betas = (cfg.beta1, cfg.beta2)
        # on a GPU the fused kernel updates all weights in one launch (the same Adam update)
        adam = dict(betas=betas, eps=cfg.adam_eps, fused=self.device.type == "cuda" or None)
        self.opt_g = torch.optim.Adam(self.G.parameters(), cfg.lr_g, **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), cfg.lr_d, **adam)
        self.d_loss_fn, self.g_loss_fn = LOSSES[cfg.loss]
        # fp16 needs loss scaling against underflow; bf16 and fp32 do not (scalers disabled)
        fp16 = cfg.precision == "fp16"
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=fp16)
        # Separate generators, so that sampling a grid never shifts the training randomness.
        self.data_rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.fixed_noise = torch.randn(
            cfg.grid_size**2, cfg.latent_dim, generator=torch.Generator().manual_seed(cfg.seed + 2)
        )
        if self.data is None:
            self.data = load_mnist(cfg.data_source, cfg.data_path)
        images = self.data.train_images[: cfg.subset] if cfg.subset else self.data.train_images
        self.real = to_float(images, self.pixel_range).to(self.device)
        labels = self.data.train_labels[: cfg.subset] if cfg.subset else self.data.train_labels
        self.labels = labels.long().to(self.device)
        # grid rows cycle through the digits when conditional (row r: digits r, r+1, ...)
        self.fixed_labels = torch.arange(cfg.grid_size**2) % 10
        n = len(self.real)
        n_real = cfg.batch_size // 2 if cfg.half_batch_d else cfg.batch_size
        self.real_per_step = n_real * cfg.d_steps * cfg.grad_accum
        if cfg.real_sampling == "epoch":
            self.steps_per_epoch = math.ceil(n / self.real_per_step)
        else:  # Reference B: floor(60000 / 256) = 234 steps of 128 real images each
            self.steps_per_epoch = max(1, n // (cfg.batch_size * cfg.d_steps * cfg.grad_accum))
        self.epoch, self.step, self.step_in_epoch, self.elapsed0 = 0, 0, 0, 0.0
        self.last_ckpt_step = -1
        self.best_fid = float("inf")
        self.epoch_rng_state = self.data_rng.get_state()
        self.collapsed_for = 0  # steps in a row that D has looked collapsed
        self.compile_checked = 0  # steps run compiled so far (the fallback watches the first)
        if resume_state is not None:
            self._restore(resume_state)

    def compile_models(self):
        """torch.compile G and D in place (their state_dicts keep their keys). Compilation
        happens lazily at the first step; a failure there falls back to eager (train_step)."""
        try:
            import torch._dynamo  # noqa: F401  (fails on builds without dynamo)
            import torch._functorch.config

            if self.cfg.schedule == "joint":
                # the joint step takes two gradients from one graph (retain_graph=True), which
                # compiled backward passes that donate (free) their buffers refuse at run time
                torch._functorch.config.donated_buffer = False
            self.G.compile()
            self.D.compile()
        except Exception as e:  # no compiler support at all: say so and go on eagerly
            self.log(f"torch.compile unavailable ({brief(e)}): training eagerly")
            self.cfg = self.cfg.replace(compile=False)

    def uncompile_models(self, e: Exception):
        for m in (self.G, self.D):
            m._compiled_call_impl = None  # what nn.Module.compile() set: back to eager
        self.cfg = self.cfg.replace(compile=False)
        self.log(f"torch.compile failed ({brief(e)}): training eagerly (--no-compile)")

    def _restore(self, s: dict):
        """Load a checkpoint's state; one that does not fit this run is a CheckpointError."""
        try:
            self.G.load_state_dict(s["G"])
            if self.G_ema is not None:
                self.G_ema.load_state_dict(s["G_ema"])
            self.D.load_state_dict(s["D"])
            self.opt_g.load_state_dict(s["opt_g"])
            self.opt_d.load_state_dict(s["opt_d"])
            epoch, step, step_in_epoch = int(s["epoch"]), int(s["step"]), int(s["step_in_epoch"])
            if not (0 <= epoch <= step and 0 <= step_in_epoch < self.steps_per_epoch):
                raise ValueError(f"impossible position epoch {epoch}, step {step}")
            self.epoch, self.step, self.step_in_epoch = epoch, step, step_in_epoch
            self.elapsed0 = float(s["elapsed"])
            self.best_fid = float(s.get("best_fid", float("inf")))
            fixed_noise = s["fixed_noise"]
            if not (torch.is_tensor(fixed_noise) and fixed_noise.shape == self.fixed_noise.shape):
                raise ValueError("fixed_noise has the wrong shape")
            self.fixed_noise = fixed_noise
            self.data_rng.set_state(s["rng_data_epoch"])  # checks it is a valid RNG state
            self.epoch_rng_state = s["rng_data_epoch"]
            torch.set_rng_state(s["rng_torch"])
            if self.device.type == "cuda" and "rng_cuda" in s:
                torch.cuda.set_rng_state(s["rng_cuda"], self.device)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            where = getattr(self, "restored_from", "checkpoint")
            raise CheckpointError(f"{where}: does not fit this run ({brief(e)})") from None
        self.last_ckpt_step = self.step
        self.collapsed_for = 0

    def _state(self) -> dict:
        s = {
            "config": to_dict(self.cfg),
            "epoch": self.epoch,
            "step": self.step,
            "step_in_epoch": self.step_in_epoch,
            "elapsed": self.elapsed(),
            "best_fid": self.best_fid,
            "G": self.G.state_dict(),
            **({"G_ema": self.G_ema.state_dict()} if self.G_ema is not None else {}),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "fixed_noise": self.fixed_noise,
            "rng_data_epoch": self.epoch_rng_state,
            "rng_torch": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            s["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return s

    # ------------------------------------------------------------------ steps

    def batches(self):
        """Index tensors of one epoch's real batches, replayable from the epoch's RNG state.

        A step's batch holds the real images of all its D updates (d_steps of them). The
        epoch's indices are drawn up front and moved to the device in one copy: a per-step
        copy to a GPU would wait for the queued work each step.
        """
        cfg, n = self.cfg, len(self.real)
        self.data_rng.set_state(self.epoch_rng_state)
        per_step = self.real_per_step
        if cfg.real_sampling == "epoch":
            perm = torch.randperm(n, generator=self.data_rng).to(self.device)
            for i in range(self.steps_per_epoch):
                yield perm[i * per_step : (i + 1) * per_step]
        else:  # the same draws in the same order as one randint per step
            draws = [torch.randint(n, (per_step,), generator=self.data_rng)
                     for _ in range(self.steps_per_epoch)]  # fmt: skip
            yield from torch.stack(draws).to(self.device)

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.latent_dim, device=self.device)

    def random_labels(self, n: int) -> torch.Tensor | None:
        if not self.cfg.conditional:
            return None
        return torch.randint(10, (n,), device=self.device)

    def gen(self, G, z, y):
        """G(z), or G(z, y) for a conditional GAN: the one place that knows the difference."""
        return G(z) if y is None else G(z, y)

    def disc(self, x, y):
        return self.D(x) if y is None else self.D(x, y)

    def d_input(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees: DiffAugment'ed images plus instance noise whose sigma decays to 0."""
        if self.cfg.diffaugment:
            x = diff_augment(x, self.cfg.diffaugment)
        sigma = self.cfg.instance_noise
        if sigma > 0:
            total = self.cfg.epochs * self.steps_per_epoch
            sigma *= max(0.0, 1.0 - self.step / total)
            x = x + sigma * torch.randn_like(x)
        return x

    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One step: D update(s), then G update(s); returns the step's stats as one tensor
        (d_loss, g_loss, D(x), D(G(z)), acc_real, acc_fake, the norm of all weights).

        `labels` (the real digits' classes) are used only by a conditional GAN."""
        if self.cfg.conditional and labels is None:
            raise ValueError("a conditional GAN's train_step needs the real digits' labels")
        labels = labels if self.cfg.conditional else None
        if self.cfg.schedule == "joint":
            loss_d, loss_g, d_real, d_fake = self.joint_step(real, labels)
        else:
            xs = real.chunk(self.cfg.d_steps)
            ys = labels.chunk(self.cfg.d_steps) if labels is not None else [None] * len(xs)
            for chunk, y in zip(xs, ys, strict=True):
                loss_d, d_real, d_fake = self.d_step(chunk, y)
            for _ in range(self.cfg.g_steps):
                loss_g = self.g_step()
        if self.G_ema is not None:
            update_ema(self.G_ema, self.G, self.cfg.ema, self.cfg.ema_warmup)
        with torch.no_grad():
            p_real, p_fake = torch.sigmoid(d_real.float()), torch.sigmoid(d_fake.float())
            # one norm over all weights: a NaN/Inf anywhere in G or D shows up in it
            w_norm = torch.nn.utils.get_total_norm([*self.G.parameters(), *self.D.parameters()])
            return torch.stack(
                [
                    loss_d.detach().float(),
                    loss_g.detach().float(),
                    p_real.mean(),
                    p_fake.mean(),
                    (p_real > 0.5).float().mean(),
                    (p_fake < 0.5).float().mean(),
                    w_norm.float(),
                ]
            )

    def compiled_step(self, real, labels):
        """train_step; with --compile, the first steps build the compiled graphs, and if the
        compiler fails the step is redone eagerly from a snapshot taken before it."""
        if not self.cfg.compile or self.compile_checked >= 2:  # train and eval graphs built
            return self.train_step(real, labels)
        nets = (self.G, self.D, self.opt_g, self.opt_d)
        cuda = self.device.type == "cuda"  # noise is drawn on the device: its RNG too
        rng = torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if cuda else None
        snapshot = copy.deepcopy([m.state_dict() for m in nets])
        try:
            out = self.train_step(real, labels)
            self.compile_checked += 1
            return out
        except Exception as e:
            if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise
            self.uncompile_models(e)
            for m, state in zip(nets, snapshot, strict=True):
                m.load_state_dict(state)
            torch.set_rng_state(rng[0])
            if cuda:
                torch.cuda.set_rng_state(rng[1], self.device)
            return self.train_step(real, labels)

    def joint_step(self, real: torch.Tensor, labels=None):
        """Reference A: one G forward, one D forward on the fakes, both losses from them;
        G's gradient flows through D as it was before D's update."""
        G, D = self.G, self.D
        y_fake = self.random_labels(self.cfg.batch_size)
        with self.autocast():
            fake = self.gen(G, self.noise(self.cfg.batch_size), y_fake)
            d_real = self.disc(self.d_input(real), labels)
            d_fake = self.disc(self.d_input(fake), y_fake)
            loss_d = self.d_loss_fn(d_real, d_fake, 1.0 - self.cfg.label_smoothing)
            loss_g = self.g_loss_fn(d_fake)
        grads_d = torch.autograd.grad(loss_d, list(D.parameters()), retain_graph=True)
        grads_g = torch.autograd.grad(loss_g, list(G.parameters()))
        for p, g in zip(D.parameters(), grads_d, strict=True):
            p.grad = g
        for p, g in zip(G.parameters(), grads_g, strict=True):
            p.grad = g
        self.opt_d.step()
        self.opt_g.step()
        return loss_d, loss_g, d_real, d_fake

    def d_step(self, real: torch.Tensor, labels=None):
        """One D update on `real` and as many fresh fakes (Reference B: half a batch each),
        its gradient accumulated over --grad-accum micro-batches."""
        k = self.cfg.grad_accum
        xs = real.chunk(k)
        ys = labels.chunk(k) if labels is not None else [None] * len(xs)
        self.opt_d.zero_grad(set_to_none=True)
        for x, y in zip(xs, ys, strict=True):
            loss_d, d_real, d_fake = self.d_backward(x, y, len(xs))
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        return loss_d, d_real, d_fake

    def d_backward(self, real: torch.Tensor, labels, parts: int):
        cfg = self.cfg
        y_fake = self.random_labels(len(real))
        with self.autocast():
            with torch.no_grad():
                fake = self.gen(self.G, self.noise(len(real)), y_fake)
            real_in, fake_in = self.d_input(real), self.d_input(fake)
            if cfg.r1 > 0:
                real_in.requires_grad_(True)
            d_real, d_fake = self.disc(real_in, labels), self.disc(fake_in, y_fake)
            loss_d = self.d_loss_fn(d_real, d_fake, 1.0 - cfg.label_smoothing)
            penalty = 0.0
            if cfg.loss == "wgan-gp":
                critic = self.D if labels is None else (lambda x: self.D(x, labels))
                penalty = cfg.gp_weight * gradient_penalty(critic, real_in.detach(), fake_in)
            if cfg.r1 > 0:
                penalty = penalty + cfg.r1 / 2 * r1_penalty(d_real, real_in)
        self.scaler_d.scale((loss_d + penalty) / parts).backward()
        return loss_d, d_real, d_fake

    def g_step(self):
        """One G update through the frozen D, on a full batch of fresh noise (per micro-batch
        of --grad-accum)."""
        k = self.cfg.grad_accum
        self.D.requires_grad_(False)  # no weight grads for D in the G step
        self.opt_g.zero_grad(set_to_none=True)
        try:
            for _ in range(k):
                y = self.random_labels(self.cfg.batch_size)
                with self.autocast():
                    fake = self.gen(self.G, self.noise(self.cfg.batch_size), y)
                    loss_g = self.g_loss_fn(self.disc(self.d_input(fake), y))
                self.scaler_g.scale(loss_g / k).backward()
        finally:
            self.D.requires_grad_(True)
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        return loss_g

    def autocast(self):
        """Mixed precision for forward passes (--precision); a no-op in fp32."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    # ------------------------------------------------------------------ outputs

    def sampling_generator(self) -> torch.nn.Module:
        """The EMA generator when --ema is on, else G itself: what samples and exports use."""
        return self.G_ema.module if self.G_ema is not None else self.G

    def sampler(self) -> Generator:
        """The sampling generator as `mnistgan generate` would load it from this step's export
        (a copy with BN folded and no compiled graph): grids and scores show what it draws."""
        cfg = self.cfg
        net = build_generator(cfg.arch, cfg.latent_dim, cfg.width, cfg.conditional)
        net.load_state_dict(self.sampling_generator().state_dict())
        return Generator(net, self.generator_meta(), self.device)

    def save_samples(self) -> Path:
        y = self.fixed_labels if self.cfg.conditional else None
        imgs = self.sampler().sample_from(self.fixed_noise, y)
        path = self.run_dir / "samples" / f"epoch_{self.epoch:03d}.png"
        return save_grid(imgs, path, nrow=self.cfg.grid_size, scale=2)

    def save_checkpoint(self) -> Path:
        f = getattr(self, "metrics_file", None)
        if f is not None and not f.closed:  # the rows a checkpoint covers are on disk first
            f.flush()
            os.fsync(f.fileno())
        self.last_ckpt_step = self.step
        return ckpt.save_checkpoint(self.run_dir, self._state(), self.cfg.keep_checkpoints)

    def generator_meta(self) -> dict:
        cfg = self.cfg
        return {
            "arch": cfg.arch,
            "latent_dim": cfg.latent_dim,
            "width": cfg.width,
            "pixel_range": self.pixel_range,
            "conditional": cfg.conditional,
            "epoch": self.epoch,
            "step": self.step,
            "mnistgan_version": __version__,
        }

    def write_run_json(self, preset: str | None):
        info = {
            "preset": preset,
            "config": to_dict(self.cfg),
            "seed": self.cfg.seed,
            "device": str(self.device),
            "data": self.data.source,
            "versions": {
                "mnistgan": __version__,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "numpy": np.__version__,
            },
            "git_commit": git_commit(),
            "command": " ".join(sys.argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        ckpt.atomic_write_bytes(
            self.run_dir / "run.json", (json.dumps(info, indent=2) + "\n").encode()
        )

    def open_metrics(self, resumed_step: int | None):
        """metrics.csv opened for appending; on resume (or rollback), rows after the restored
        step are dropped, and so is a row torn by a kill."""
        if getattr(self, "metrics_file", None) is not None:
            self.metrics_file.close()
        path = self.run_dir / "metrics.csv"
        if resumed_step is not None and path.exists():
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f)][1:]
            n = len(METRIC_COLUMNS)
            keep = [r for r in rows if len(r) == n and _step_of(r) <= resumed_step]
            tmp = "\n".join(",".join(r) for r in [METRIC_COLUMNS, *keep]) + "\n"
            ckpt.atomic_write_bytes(path, tmp.encode())
        new = not path.exists()
        self.metrics_file = open(path, "a", newline="")
        self.metrics_writer = csv.writer(self.metrics_file)
        if new:
            self.metrics_writer.writerow(METRIC_COLUMNS)

    # ------------------------------------------------------------------ loop

    def run(self, resume: bool = False, preset: str | None = None, overrides=()) -> RunResult:
        try:
            if not resume:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            elif not self.run_dir.is_dir():
                raise UsageError(f"{self.run_dir}: no such run directory to resume")
            with run_lock(self.run_dir):
                return self._run(resume, preset, overrides)
        except OSError as e:  # disk full, read-only folder, ...: one message, nothing torn
            last = ckpt.latest_checkpoint(self.run_dir) if self.run_dir.is_dir() else None
            raise StorageError(
                f"cannot write {e.filename or self.run_dir}: {e.strerror or e}; training stopped "
                f"at step {getattr(self, 'step', 0)}, last complete checkpoint: {last or 'none'}"
            ) from None

    def _resume_state(self, overrides) -> dict | None:
        """The latest checkpoint's state (None: killed before its first one, start over), with
        self.cfg set to the run's saved config plus the overrides a resume may change."""
        latest = ckpt.latest_checkpoint(self.run_dir)
        info = self.run_dir / "run.json"
        if latest is not None:
            self.restored_from = latest
            state = ckpt.load_checkpoint(latest)
            saved = state["config"]
        elif info.is_file():  # killed before the first checkpoint: the same run, from step 0
            self.restored_from, state = info, None
            try:
                saved = json.loads(info.read_text())["config"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise CheckpointError(f"{info}: unreadable ({brief(e)})") from None
        elif {p.name for p in self.run_dir.iterdir() if not p.name.endswith(".tmp")} <= {".lock"}:
            # killed before it wrote anything: start over with the config given now
            self.log(f"nothing saved yet in {self.run_dir}: starting it over from step 0")
            return None
        else:
            raise UsageError(f"{self.run_dir}: no checkpoint to resume from")
        try:
            saved = from_dict(saved)
        except UsageError as e:
            where = self.restored_from
            raise CheckpointError(f"{where}: invalid saved config ({brief(e)})") from None
        changed = {k for k in overrides if getattr(saved, k) != getattr(self.cfg, k)}
        if changed - RESUMABLE_OVERRIDES:
            names = ", ".join(sorted(changed - RESUMABLE_OVERRIDES))
            raise UsageError(f"cannot change {names} when resuming {self.run_dir}")
        self.cfg = saved.replace(**{k: getattr(self.cfg, k) for k in changed})
        if state is None:
            self.log(f"no checkpoint yet in {self.run_dir}: starting it over from step 0")
        else:
            self.log(f"resuming {self.run_dir} from {latest.name}")
        return state

    def _run(self, resume: bool, preset: str | None, overrides) -> RunResult:
        state = self._resume_state(overrides) if resume else None
        ckpt.remove_stale_temps(self.run_dir)  # a killed write's leftovers (we hold the lock)
        self._setup(state)
        if not (self.run_dir / "run.json").exists():
            self.write_run_json(preset)
        self.log(
            f"training {self.cfg.arch} on {len(self.real)} images: {self.cfg.epochs} epochs x "
            f"{self.steps_per_epoch} steps, batch {self.cfg.batch_size}, device {self.device}"
        )
        self.open_metrics(self.step if resume else None)
        self.t0 = time.monotonic()
        self.stop_reason = None
        self.rollbacks = 0
        try:
            with stop_on_signals(self):
                while self.epoch < self.cfg.epochs and self.stop_reason is None:
                    try:
                        self.run_epoch()
                    except Diverged as d:
                        self.roll_back(str(d))  # or raise DivergenceError
                    self.metrics_file.flush()
        finally:
            self.metrics_file.close()
        if self.stop_reason:
            self.log(f"stopping: {self.stop_reason}")
        if self.last_ckpt_step != self.step:
            self.save_checkpoint()
        if self.stop_reason and self.stop_reason.startswith("signal"):
            path = ckpt.latest_checkpoint(self.run_dir)
            self.log(f"checkpoint saved to {path}; continue with --resume")
            raise KeyboardInterrupt
        return self.finish(self.epoch >= self.cfg.epochs)

    def divergence(self, stats: list[float]) -> str | None:
        """Why this step counts as diverged, or None: the guard run after every step."""
        d_loss, g_loss, d_x, d_g_z, w_norm = *stats[:4], stats[6]
        if not (math.isfinite(d_loss) and math.isfinite(g_loss)):
            return f"non-finite loss (d_loss {d_loss}, g_loss {g_loss})"
        if not math.isfinite(w_norm):
            return "non-finite weights"
        # a WGAN critic's outputs are unbounded scores, not probabilities: no collapse rule
        if self.cfg.collapse_steps and self.cfg.loss != "wgan-gp":
            collapsed = d_x > 1 - COLLAPSE_EPS and d_g_z < COLLAPSE_EPS
            self.collapsed_for = self.collapsed_for + 1 if collapsed else 0
            if self.collapsed_for >= self.cfg.collapse_steps:
                return (
                    f"discriminator collapsed (D(x) > {1 - COLLAPSE_EPS:g} and D(G(z)) < "
                    f"{COLLAPSE_EPS:g} for {self.collapsed_for} steps in a row)"
                )
        return None

    def roll_back(self, reason: str):
        """--on-divergence rollback: reload the last good checkpoint, halve the learning rates
        and go on. Otherwise (or with nothing to roll back to) stop with a DivergenceError."""
        last = ckpt.latest_checkpoint(self.run_dir)
        if self.cfg.on_divergence != "rollback" or last is None or self.rollbacks >= MAX_ROLLBACKS:
            if self.cfg.on_divergence != "rollback":
                hint = (f"; continue from it with `mnistgan train --run-dir {self.run_dir} "
                        "--resume --on-divergence rollback`")  # fmt: skip
            elif last is None:
                hint = " (nothing to roll back to)"
            else:
                hint = f" (gave up after {MAX_ROLLBACKS} rollbacks)"
            raise DivergenceError(f"{reason}; last good checkpoint: {last or 'none'}{hint}")
        elapsed = self.elapsed()
        self.restored_from = last
        self._restore(ckpt.load_checkpoint(last))
        self.elapsed0 += elapsed - self.elapsed()  # training time keeps counting
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] *= ROLLBACK_LR_FACTOR
        self.rollbacks += 1
        self.open_metrics(self.step)  # drop the rows of the abandoned steps
        self.log(
            f"{reason}: rolled back to {last.name} (step {self.step}); learning rates now "
            f"G {self.opt_g.param_groups[0]['lr']:.3g}, D {self.opt_d.param_groups[0]['lr']:.3g}"
        )

    def run_epoch(self):
        """Train until the epoch ends or a stop is requested; epoch-end outputs if it ended."""
        cfg, writer = self.cfg, self.metrics_writer
        epoch_start, seen = time.monotonic(), 0
        batches = self.batches()
        for _ in range(self.step_in_epoch):
            next(batches)  # replay the RNG up to where a resumed epoch stopped
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.step_in_epoch,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=None,  # no bar when stderr is not a terminal
            dynamic_ncols=True,
        )
        t_row, rows, pending = time.monotonic(), [], []
        for idx in batches:
            step_stats = self.compiled_step(self.real[idx], self.labels[idx])  # not read yet
            self.step += 1
            self.step_in_epoch += 1
            seen += len(idx)
            now = time.monotonic()
            pending.append((step_stats, len(idx) / max(now - t_row, 1e-9), self.elapsed()))
            t_row = now
            bar.update()
            if cfg.max_minutes is not None and now - self.t0 >= cfg.max_minutes * 60:
                self.stop_reason = f"--max-minutes {cfg.max_minutes:g} reached"
            end = self.stop_reason or self.step_in_epoch == self.steps_per_epoch
            if len(pending) >= self.read_every or end:
                try:
                    stats = self.read_stats(pending, rows)
                except Diverged:
                    bar.close()
                    writer.writerows(rows)  # the rows up to the last good step, for diagnosis
                    raise
                bar.set_postfix(d=f"{stats[0]:.3f}", g=f"{stats[1]:.3f}", refresh=False)
            if self.stop_reason:
                break
        bar.close()
        if self.step_in_epoch < self.steps_per_epoch:
            writer.writerows(rows)
            return  # stopped mid-epoch: the final checkpoint records where
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_rng_state = self.data_rng.get_state()
        secs = time.monotonic() - epoch_start
        self.log(
            f"epoch {self.epoch}/{cfg.epochs}  {secs:.1f}s  {seen / secs:.0f} img/s"
            f"  d_loss {stats[0]:.3f}  g_loss {stats[1]:.3f}"
            f"  D(x) {stats[2]:.2f}  D(G(z)) {stats[3]:.2f}"
        )
        if cfg.eval_every and self.epoch % cfg.eval_every == 0:
            scores = self.evaluate()
            rows[-1][-len(EVAL_COLUMNS) :] = [f"{scores[k]:.5g}" for k in EVAL_COLUMNS]
        writer.writerows(rows)
        if cfg.sample_every and self.epoch % cfg.sample_every == 0:
            self.save_samples()
        if cfg.export_every and self.epoch % cfg.export_every == 0:
            path = self.run_dir / "generators" / f"generator_e{self.epoch:03d}.safetensors"
            ckpt.export_generator(self.sampling_generator(), self.generator_meta(), path)
        if cfg.checkpoint_every and self.epoch % cfg.checkpoint_every == 0:
            self.save_checkpoint()

    def read_stats(self, pending: list, rows: list) -> list[float]:
        """Read the stats of the steps run since the last read (one host sync), run the
        divergence guard on each in order and add its metrics row; returns the last stats."""
        first = self.step - len(pending) + 1
        values = torch.stack([p[0] for p in pending]).tolist()
        for i, (stats, (_, rate, elapsed)) in enumerate(zip(values, pending, strict=True)):
            reason = self.divergence(stats)
            if reason is not None:
                raise Diverged(f"training diverged at step {first + i}: {reason}")
            rows.append(
                [self.epoch + 1, first + i]
                + [f"{v:.5g}" for v in stats[:6]]
                + [f"{rate:.1f}", f"{elapsed:.2f}"]
                + [""] * len(EVAL_COLUMNS)
            )
        pending.clear()
        return stats

    def evaluate(self, n: int | None = None) -> dict:
        """Score the sampling generator on fixed noise; keep `best/` at the lowest FID."""
        # imported here: the classifier loads only when evaluation is on
        from .metrics import evaluate_images, label_accuracy

        z = torch.randn(n or self.cfg.eval_n, self.cfg.latent_dim,
                        generator=torch.Generator().manual_seed(EVAL_SEED))  # fmt: skip
        y = torch.arange(len(z)) % 10  # balanced digits when conditional
        imgs = self.sampler().sample_from(z, y if self.cfg.conditional else None, batch_size=1000)
        scores = evaluate_images(imgs, seed=0)
        if self.cfg.conditional:  # does a requested 7 come out as a 7?
            scores.update(label_accuracy(imgs, y))
        self.last_eval = (self.step, scores)
        self.log(
            f"  eval at step {self.step} (n={scores['n']}): FID {scores['fid']:.2f}  "
            f"KID {scores['kid']:.3f}  coverage {scores['coverage']:.3f}  "
            f"digits {scores['digits_covered']}/10"
            + (f"  label accuracy {scores['label_accuracy']:.3f}" if self.cfg.conditional else "")
        )
        if scores["fid"] < self.best_fid:
            self.best_fid = scores["fid"]
            meta = {**self.generator_meta(), "fid": scores["fid"], "eval_n": scores["n"]}
            best = self.run_dir / "best" / "generator.safetensors"
            ckpt.export_generator(self.sampling_generator(), meta, best)
        return scores

    def elapsed(self) -> float:
        """Training seconds over all sessions of this run."""
        return self.elapsed0 + time.monotonic() - self.t0

    def finish(self, finished: bool) -> RunResult:
        if self.cfg.eval_every:  # the final generator's scores, unless just measured
            step, scores = getattr(self, "last_eval", (None, None))
            scores = scores if step == self.step else self.evaluate()
            text = json.dumps({"epoch": self.epoch, "step": self.step, **scores}, indent=2)
            ckpt.atomic_write_bytes(self.run_dir / "eval.json", (text + "\n").encode())
            self.log(f"final FID {scores['fid']:.2f} (n={scores['n']}, see eval.json)")
        gen_path = ckpt.export_generator(
            self.sampling_generator(), self.generator_meta(), self.run_dir / "generator.safetensors"
        )
        frames = sorted((self.run_dir / "samples").glob("epoch_*.png"))
        if not frames:
            frames = [self.save_samples()]
        progress_gif(frames, self.run_dir / "progress.gif")
        plot_curves(self.run_dir / "metrics.csv", self.run_dir / "curves.png")
        self.log(
            f"{'done' if finished else 'stopped'} after {self.epoch} epochs ({self.step} steps, "
            f"{self.elapsed() / 60:.1f} min of training); generator saved to {gen_path}"
        )
        return RunResult(self.run_dir, self.epoch, self.step, finished, self.elapsed(), gen_path)


def train(cfg: Config, run_dir: Path, resume: bool = False, data: Mnist | None = None, **kw):
    """Train (or resume) a run; the Python API behind `mnistgan train`."""
    return Trainer(cfg, run_dir, data, log=kw.pop("log", print)).run(resume=resume, **kw)
