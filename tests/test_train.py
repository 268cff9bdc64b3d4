"""The training loop on tiny models: step patterns, outputs, and exact resume."""

import csv

import pytest
import torch

from mnistgan import checkpoint as ckpt
from mnistgan.config import resolve
from mnistgan.sample import load_generator
from mnistgan.train import Trainer, train

TINY = {
    "width": 8,
    "latent_dim": 16,
    "batch_size": 32,
    "device": "cpu",
    "threads": 2,
    "eval_every": 0,
}


def tiny(preset="fast", **kw):
    return resolve(preset, overrides={**TINY, **kw})[0]


def weights(run_dir):
    s = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))
    return s["G"], s["D"], s["opt_g"]["state"], s


def assert_same_state(a, b):
    for x, y in zip(a[:2], b[:2], strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k
    for k, st in a[2].items():
        assert torch.equal(st["exp_avg"], b[2][k]["exp_avg"])


def metric_steps(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_outputs_of_a_run(tmp_path, tiny_data):
    res = train(tiny(epochs=2), tmp_path / "r", data=tiny_data, log=lambda *a: None)
    r = tmp_path / "r"
    assert res.finished and res.epoch == 2 and res.step == 2 * 19  # ceil(600 / 32) = 19
    for name in ("metrics.csv", "curves.png", "progress.gif", "run.json", "generator.json"):
        assert (r / name).stat().st_size > 0, name
    assert sorted(p.name for p in (r / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert metric_steps(r) == list(range(1, 39))
    g = load_generator(r)
    x = g.sample(10, seed=1)
    assert x.shape == (10, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(x, g.sample(10, seed=1))  # same seed, same digits


def test_resume_across_epochs_is_exact(tmp_path, tiny_data):
    quiet = {"log": lambda *a: None, "data": tiny_data}
    train(tiny(epochs=3), tmp_path / "full", **quiet)
    train(tiny(epochs=1), tmp_path / "part", **quiet)
    train(tiny(epochs=3), tmp_path / "part", resume=True, overrides={"epochs": 3}, **quiet)
    assert_same_state(weights(tmp_path / "full"), weights(tmp_path / "part"))
    assert metric_steps(tmp_path / "part") == metric_steps(tmp_path / "full")


class StopAfter(Trainer):
    """Asks the loop to stop after `n` steps, the way Ctrl-C or --max-minutes do."""

    n = 7

    def train_step(self, real, labels=None):
        out = super().train_step(real, labels)
        if self.step + 1 == self.n:
            self.stop_reason = "test stop"
        return out


@pytest.mark.parametrize("preset", ["fast", "tf-dcgan", "keras-dcgan"])
def test_resume_mid_epoch_is_exact(tmp_path, tiny_data, preset):
    kw = {"epochs": 2, "subset": 128} if preset != "fast" else {"epochs": 2}
    if preset != "fast":
        kw.update(batch_size=32, latent_dim=100)
    cfg = tiny(preset, **kw)
    quiet = lambda *a: None  # noqa: E731
    Trainer(cfg, tmp_path / "full", tiny_data, log=quiet).run()
    res = StopAfter(cfg, tmp_path / "part", tiny_data, log=quiet).run()
    assert not res.finished and res.step == StopAfter.n
    Trainer(cfg, tmp_path / "part", tiny_data, log=quiet).run(resume=True)
    assert_same_state(weights(tmp_path / "full"), weights(tmp_path / "part"))
    assert metric_steps(tmp_path / "part") == metric_steps(tmp_path / "full")


def test_step_patterns(tiny_data):
    """Who sees how many images: joint (Reference A) vs half-batch alternating (Reference B)."""
    seen = []
    for preset, expect in [("tf-dcgan", [32, 32]), ("keras-dcgan", [16, 16, 32])]:
        t = Trainer(tiny(preset, batch_size=32, latent_dim=100), "unused", tiny_data)
        t._setup(None)
        seen.clear()
        t.D.register_forward_pre_hook(lambda m, a: seen.append(len(a[0])))
        n = 16 if preset == "keras-dcgan" else 32
        t.train_step(t.real[:n], t.labels[:n])
        assert seen == expect, preset


def test_joint_step_uses_d_before_its_update(tiny_data):
    """Reference A: G's gradient is taken through D as it was before D's step."""
    t = Trainer(tiny("tf-dcgan", batch_size=8, latent_dim=100), "unused", tiny_data)
    t._setup(None)
    G0 = {k: v.clone() for k, v in t.G.state_dict().items()}
    D0 = {k: v.clone() for k, v in t.D.state_dict().items()}
    torch.manual_seed(5)
    t.train_step(t.real[:8], t.labels[:8])
    got = [p.grad.clone() for p in t.G.parameters()]
    # Recompute by hand from the saved pre-step weights with the same random stream.
    t.G.load_state_dict(G0)
    t.D.load_state_dict(D0)
    torch.manual_seed(5)
    fake = t.G(torch.randn(8, 100))
    t.D(t.real[:8])
    want = torch.autograd.grad(t.g_loss_fn(t.D(fake)), list(t.G.parameters()))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_max_minutes_stops_cleanly(tmp_path, tiny_data):
    res = train(tiny(epochs=50, max_minutes=0.001), tmp_path / "r", data=tiny_data, log=print)
    assert not res.finished and res.step >= 1
    assert (tmp_path / "r" / "generator.safetensors").exists()
    assert ckpt.latest_checkpoint(tmp_path / "r") is not None


def test_keep_last_checkpoints(tmp_path, tiny_data):
    train(tiny(epochs=4, keep_checkpoints=2), tmp_path / "r", data=tiny_data, log=lambda *a: 0)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "r")]
    assert names == ["ckpt_e0003_s00000057.pt", "ckpt_e0004_s00000076.pt"]


def test_resume_refuses_a_changed_recipe(tmp_path, tiny_data):
    from mnistgan.errors import UsageError

    train(tiny(epochs=1), tmp_path / "r", data=tiny_data, log=lambda *a: 0)
    with pytest.raises(UsageError, match="cannot change lr_g"):
        train(tiny(epochs=2, lr_g=1e-3), tmp_path / "r", resume=True, data=tiny_data,
              overrides={"epochs": 2, "lr_g": 1e-3})  # fmt: skip


def test_ema_follows_the_decay_formula(tiny_data):
    t = Trainer(tiny(ema=0.9, ema_warmup=False), "unused", tiny_data)
    t._setup(None)
    t.train_step(t.real[:32], t.labels[:32])  # first update copies G
    before = {k: v.clone() for k, v in t.G_ema.module.state_dict().items()}
    t.train_step(t.real[:32], t.labels[:32])
    g, ema = t.G.state_dict(), t.G_ema.module.state_dict()
    for k, v in ema.items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * g[k])
    w = next(k for k in g if k.endswith("weight") and g[k].dim() == 4)  # a conv weight
    assert not torch.equal(ema[w], g[w])  # EMA and raw weights differ after two steps
    assert t.sampling_generator() is t.G_ema.module


def test_ema_warmup_decay(tiny_data):
    t = Trainer(tiny(ema=0.999, ema_warmup=True), "unused", tiny_data)
    t._setup(None)
    for _ in range(3):  # updates 0 (a copy), 1, 2: decays 2/11 and 3/12 after it
        before = {k: v.clone() for k, v in t.G_ema.module.state_dict().items()}
        t.train_step(t.real[:32], t.labels[:32])
    g, ema = t.G.state_dict(), t.G_ema.module.state_dict()
    d = (1 + 2) / (10 + 2)
    for k, v in ema.items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, d * before[k] + (1 - d) * g[k])


def test_ema_run_resumes_and_exports(tmp_path, tiny_data):
    quiet = {"log": lambda *a: None, "data": tiny_data}
    train(tiny(epochs=2, ema=0.95), tmp_path / "full", **quiet)
    train(tiny(epochs=1, ema=0.95), tmp_path / "part", **quiet)
    train(
        tiny(epochs=2, ema=0.95), tmp_path / "part", resume=True, overrides={"epochs": 2}, **quiet
    )
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "full"))["G_ema"]
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "part"))["G_ema"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    g_run = load_generator(tmp_path / "full").sample(4, seed=0)
    g_ckpt = load_generator(ckpt.latest_checkpoint(tmp_path / "full")).sample(4, seed=0)
    assert torch.equal(g_run, g_ckpt)  # the export and the checkpoint both sample the EMA


class NaNAt(Trainer):
    """Poisons G's weights after step 25 (in epoch 2), as an exploding update would."""

    def train_step(self, real, labels=None):
        if self.step == 25:
            with torch.no_grad():
                next(self.G.parameters()).fill_(float("nan"))
        return super().train_step(real, labels)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data):
    from mnistgan.errors import DivergenceError

    cfg = tiny(epochs=3, ema=0.0)
    with pytest.raises(DivergenceError, match=r"diverged at step 26.*ckpt_e0001_s00000019\.pt"):
        NaNAt(cfg, tmp_path / "r", tiny_data, log=lambda *a: 0).run()
    good = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "r"))
    assert good["step"] == 19
    assert all(torch.isfinite(v).all() for v in good["G"].values() if v.is_floating_point())


def test_one_training_process_per_run_dir(tmp_path, tiny_data):
    import fcntl

    from mnistgan.errors import UsageError

    (tmp_path / "r").mkdir()
    with open(tmp_path / "r" / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # as a running `mnistgan train` holds it
        with pytest.raises(UsageError, match="in use by another"):
            train(tiny(epochs=1), tmp_path / "r", data=tiny_data, log=lambda *a: 0)
    train(tiny(epochs=1), tmp_path / "r", data=tiny_data, log=lambda *a: 0)  # free again


def test_compile_failure_falls_back_to_eager_from_a_snapshot(tmp_path, tiny_data):
    """--compile where the compiler fails (here: G's first training-mode call, after D's
    update of that step): the run goes on eagerly and ends exactly where an eager run does."""

    class CompilerFailed(Exception):
        pass

    CompilerFailed.__module__ = "torch._dynamo.exc"  # what a real backend failure carries

    class BrokenCompiler(Trainer):
        def compile_models(self):
            G = self.G

            def compiled(*a, **kw):
                if torch.is_grad_enabled():
                    raise CompilerFailed("backend 'inductor' failed: no C++ compiler")
                return G._call_impl(*a, **kw)

            G._compiled_call_impl = compiled

    logs = []
    BrokenCompiler(tiny(epochs=1, compile=True), tmp_path / "c", tiny_data, log=logs.append).run()
    train(tiny(epochs=1), tmp_path / "e", data=tiny_data, log=lambda *a: 0)
    assert any("torch.compile failed (backend 'inductor' failed" in m for m in logs), logs
    assert_same_state(weights(tmp_path / "c"), weights(tmp_path / "e"))


def test_keep_freed_memory_takes_effect_on_glibc():
    import platform

    from mnistgan.device import keep_freed_memory

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_training_time_samples_are_what_the_exported_generator_draws(tmp_path, tiny_data, ema):
    """Grids and FID during training come from the same sampling path as `mnistgan generate`
    on the exported generator (BN folded, EMA weights when on), digit for digit."""
    t = Trainer(tiny(epochs=1, ema=ema), tmp_path / "r", tiny_data, log=lambda *a: 0)
    t.run()
    z, y = torch.randn(50, t.cfg.latent_dim), torch.arange(50) % 10
    exported = load_generator(tmp_path / "r").sample_from(z, y)
    assert torch.equal(t.sampler().sample_from(z, y), exported)
    assert exported.float().std() > 0  # real digits, not a constant image
