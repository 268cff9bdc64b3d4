"""The CUDA path, on a GPU. Skipped where there is none (CI has none): a session lent a GPU
runs it through `bash benchmarks/gpu_session.sh`. MNISTGAN_TEST_DEVICE=cpu runs the same
checks on the CPU (all but the host-sync count), to try them on any machine."""

import math
import os
import time
import warnings

import pytest
import torch
from conftest import metrics_rows

from mnistgan import checkpoint as ckpt
from mnistgan.config import resolve
from mnistgan.errors import DivergenceError
from mnistgan.sample import load_generator
from mnistgan.train import Trainer, train

DEVICE = os.environ.get("MNISTGAN_TEST_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")
pytestmark = pytest.mark.skipif(
    ON_GPU and not torch.cuda.is_available(), reason="no CUDA GPU on this machine"
)
QUIET = {"log": lambda *a: None}


def tiny(preset="fast", **kw):
    base = dict(width=8, latent_dim=16, batch_size=32, epochs=1, eval_every=0, sample_every=0,
                max_minutes=None, device=DEVICE, threads=2)  # fmt: skip
    return resolve(preset, overrides={**base, **kw})[0]


@pytest.mark.parametrize("preset", ["fast", "tf-dcgan", "keras-dcgan"])
def test_each_preset_trains_on_the_device_and_samples_alike_on_the_cpu(tmp_path, tiny_data, preset):
    res = train(tiny(preset, epochs=2, ema=0.9), tmp_path / "r", data=tiny_data, **QUIET)
    assert res.finished
    steps = [int(r[1]) for r in metrics_rows(tmp_path / "r")]
    assert steps == list(range(1, res.step + 1))  # one row per step, in order
    assert all(math.isfinite(float(v)) for r in metrics_rows(tmp_path / "r") for v in r[2:8])
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "r"))
    assert ("rng_cuda" in state) == ON_GPU
    here, cpu = (load_generator(tmp_path / "r", device=d) for d in (DEVICE, "cpu"))
    z, y = cpu.noise(64, seed=0), cpu.labels(64)
    here, cpu = here.sample_from(z, y).int(), cpu.sample_from(z, y).int()
    # TF32 and cuDNN's algorithms round differently from the CPU: a grey level at most, mostly
    assert (here - cpu).abs().le(1).float().mean() > 0.99


def test_bf16_autocast_trains(tmp_path, tiny_data):
    res = train(tiny("tf-dcgan", precision="bf16"), tmp_path / "r", data=tiny_data, **QUIET)
    assert res.finished
    assert all(math.isfinite(float(r[2])) for r in metrics_rows(tmp_path / "r"))


def test_a_device_run_resumes_on_the_cpu(tmp_path, tiny_data):
    train(tiny(epochs=1), tmp_path / "r", data=tiny_data, **QUIET)
    res = train(tiny(epochs=2, device="cpu"), tmp_path / "r", resume=True, data=tiny_data,
                overrides={"epochs": 2, "device": "cpu"}, **QUIET)  # fmt: skip
    assert res.finished and res.epoch == 2


class NaNAt25(Trainer):
    """NaN weights in G from step 25 on, as an exploding update would leave them."""

    def train_step(self, real, labels=None):
        if self.step + 1 == 25:
            with torch.no_grad():
                next(self.G.parameters()).view(-1)[0] = float("nan")
        return super().train_step(real, labels)


def test_divergence_is_named_at_its_step_when_stats_are_read_in_batches(tmp_path, tiny_data):
    # on a GPU the host reads 32 steps' stats at a time; the guard still names step 25
    t = NaNAt25(tiny(epochs=3), tmp_path / "r", tiny_data, **QUIET)
    with pytest.raises(DivergenceError, match=r"diverged at step 25: non-finite"):
        t.run()
    assert [int(r[1]) for r in metrics_rows(tmp_path / "r")] == list(range(1, 25))
    good = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "r"))
    assert good["step"] < 25  # nothing after the bad step was saved


@pytest.mark.skipif(not ON_GPU, reason="host syncs are a GPU matter")
@pytest.mark.parametrize("preset", ["fast", "tf-dcgan", "keras-dcgan"])
def test_training_steps_do_not_wait_for_the_gpu(tiny_data, preset):
    """No step syncs with the host (no .item(), no blocking copy): the CPU can run ahead."""
    t = Trainer(tiny(preset, ema=0.999), "unused", tiny_data, **QUIET)
    t._setup(None)
    idx = next(t.batches())
    real, labels = t.real[idx], t.labels[idx]
    t.train_step(real, labels)  # first call: cuDNN autotuning, lazy state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            t.train_step(real, labels)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not ON_GPU, reason="host syncs are a GPU matter")
def test_an_epoch_syncs_once_per_read_of_the_stats(tmp_path, tiny_data):
    t = Trainer(tiny(epochs=1), tmp_path / "r", tiny_data, **QUIET)
    t._setup(None)
    t.open_metrics(None)
    t.t0, t.stop_reason = time.monotonic(), None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t.run_epoch()
    finally:
        torch.cuda.set_sync_debug_mode("default")
        t.metrics_file.close()
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    reads = math.ceil(t.steps_per_epoch / t.read_every)
    assert t.read_every == 32
    assert len(syncs) <= reads + 2, [str(w.message) for w in syncs]  # + the epoch's indices


def test_compile_trains_and_stays_compiled(tmp_path, tiny_data):
    logs = []
    res = train(tiny(compile=True), tmp_path / "r", data=tiny_data, log=logs.append)
    assert res.finished
    assert not any("torch.compile failed" in m for m in logs), logs
