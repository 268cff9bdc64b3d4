"""Conditional generation: G(z, y) and a projection D(x, y) for any architecture."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from mnistgan import checkpoint as ckpt
from mnistgan.config import resolve
from mnistgan.data import cache_path
from mnistgan.errors import UsageError
from mnistgan.models import build_discriminator, build_generator
from mnistgan.sample import load_generator
from mnistgan.train import Trainer, train

TINY = {"width": 8, "latent_dim": 16, "batch_size": 32, "device": "cpu", "eval_every": 0}


@pytest.mark.parametrize("arch", ["fast", "tf-dcgan", "keras-dcgan"])
def test_conditional_models_take_labels(arch):
    G = build_generator(arch, 100, 16, conditional=True)
    D = build_discriminator(arch, 16, conditional=True)
    y = torch.arange(4)
    x = G(torch.randn(4, 100), y)
    assert x.shape == (4, 1, 28, 28)
    assert D(x, y).shape == (4, 1)
    # the projection term makes D's score depend on the label
    D.embed.weight.data.normal_()
    assert not torch.allclose(D(x, y), D(x, (y + 1) % 10))


def test_cgan_trains_resumes_and_samples_chosen_digits(tmp_path, tiny_data):
    cfg = resolve("cgan", overrides=TINY)[0].replace(epochs=2)
    quiet = {"log": lambda *a: None, "data": tiny_data}
    train(cfg, tmp_path / "full", **quiet)
    train(cfg.replace(epochs=1), tmp_path / "part", **quiet)
    train(cfg, tmp_path / "part", resume=True, overrides={"epochs": 2}, **quiet)
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "full"))
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "part"))
    for k in a["D"]:
        assert torch.equal(a["D"][k], b["D"][k]), k
    g = load_generator(tmp_path / "full")
    assert g.conditional
    sevens = g.sample(6, seed=0, digit=7)
    assert sevens.shape == (6, 28, 28)
    # the same noise with another digit gives other images
    assert not torch.equal(sevens, g.sample(6, seed=0, digit=1))
    with pytest.raises(UsageError, match="digit must be 0-9"):
        g.sample(2, digit=12)


def test_real_labels_reach_the_discriminator(tiny_data):
    t = Trainer(resolve("cgan", overrides=TINY)[0], "unused", tiny_data)
    t._setup(None)
    seen = []
    t.D.register_forward_pre_hook(lambda m, a: seen.append(a[1].clone()))
    idx = next(t.batches())
    t.train_step(t.real[idx], t.labels[idx])
    assert torch.equal(seen[0], t.labels[idx])  # real images come with their own labels


def test_unconditional_generator_refuses_a_digit(tmp_path, tiny_data):
    cfg = resolve("fast", overrides={**TINY, "conditional": False})[0].replace(epochs=1)
    train(cfg, tmp_path / "r", data=tiny_data, log=lambda *a: None)
    r = run_cli("generate", "--run", tmp_path / "r", "--digit", "7", "--out", tmp_path / "x.png")
    assert r.returncode == 2 and "not conditional" in r.stderr and "Traceback" not in r.stderr


def test_generate_digit_all_grid(tmp_path, tiny_data):
    cfg = resolve("cgan", overrides=TINY)[0].replace(epochs=1)
    train(cfg, tmp_path / "r", data=tiny_data, log=lambda *a: None)
    out = tmp_path / "x.npy"
    r = run_cli("generate", "--run", tmp_path / "r", "--digit", "all", "--n", "25", "--out", out)
    assert r.returncode == 0, r.stderr
    assert np.load(out).shape == (30, 28, 28)  # 10 rows of ceil(25 / 10) = 3
    r = run_cli("generate", "--run", tmp_path / "r", "--digit", "x", "--out", out)
    assert r.returncode == 2 and "--digit must be 0-9 or all" in r.stderr
    if cache_path().exists():  # evaluate reports whether requested digits come out
        r = run_cli("evaluate", "--run", tmp_path / "r", "--n", "100", "--json")
        s = json.loads(r.stdout)
        assert 0 <= s["label_accuracy"] <= 1 and len(s["label_accuracy_per_digit"]) == 10


def test_interpolation_and_truncation(tmp_path, tiny_data):
    from PIL import Image

    from mnistgan.sample import slerp

    a, b = torch.randn(16), torch.randn(16)
    path = slerp(a, b, torch.linspace(0, 1, 5).unsqueeze(1))
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    # spherical: the norm stays between the ends' norms' range, unlike a straight line's dip
    assert path.norm(dim=1).min() >= min(a.norm(), b.norm()) * 0.99

    for preset, conditional in (("fast", False), ("cgan", True)):
        run = tmp_path / preset
        cfg = resolve(preset, overrides={**TINY, "conditional": conditional})[0]
        train(cfg.replace(epochs=1), run, data=tiny_data, log=lambda *a: None)
        g = load_generator(run)
        strip = g.interpolate(3, 8, steps=6)
        assert strip.shape == (6, 28, 28)
        z = g.noise(500, seed=0, truncation=0.5)
        assert z.abs().max() <= 0.5 and torch.equal(z, g.noise(500, seed=0, truncation=0.5))
        r = run_cli("interpolate", "--run", run, "--from", "3", "--to", "8", "--steps", "6",
                    "--device", "auto", "--out", tmp_path / f"{preset}.gif")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert Image.open(tmp_path / f"{preset}.gif").n_frames == 10  # 6 there, 4 back
    r = run_cli("interpolate", "--run", tmp_path / "cgan", "--from", "3", "--to", "12",
                "--out", tmp_path / "x.png")  # fmt: skip
    assert r.returncode == 2 and "digit must be 0-9" in r.stderr
