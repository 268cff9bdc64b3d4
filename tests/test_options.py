"""Training options composed into the one loop: losses, penalties, spectral norm, schedules."""

import math

import pytest
import torch
from torch import nn

from mnistgan import losses
from mnistgan.config import resolve
from mnistgan.errors import UsageError
from mnistgan.train import Trainer

TINY = {"width": 8, "latent_dim": 16, "batch_size": 32, "device": "cpu", "eval_every": 0}


def trainer(tiny_data, preset="fast", **kw):
    t = Trainer(resolve(preset, overrides={**TINY, **kw})[0], "unused", tiny_data)
    t._setup(None)
    return t


def linear_critic(w):
    D = nn.Sequential(nn.Flatten(), nn.Linear(784, 1, bias=False))
    D[1].weight.data = w.reshape(1, 784)
    return D


def test_gradient_penalty_on_a_linear_critic():
    w = torch.randn(784) * 0.1
    D = linear_critic(w)
    real, fake = torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)
    gp = losses.gradient_penalty(D, real, fake)
    # grad of a linear critic is w at every interpolate, so the penalty is (|w| - 1)^2
    torch.testing.assert_close(gp, (w.norm() - 1) ** 2)


def test_r1_penalty_on_a_linear_critic():
    w = torch.randn(784)
    D = linear_critic(w)
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    torch.testing.assert_close(losses.r1_penalty(D(x), x), w.pow(2).sum())


def test_loss_values():
    big = torch.full((4, 1), 20.0)
    assert losses.d_loss_bce(big, -big) < 1e-6  # a perfect D
    smoothed = losses.d_loss_bce(big, -big, real_target=0.9)
    assert smoothed > 0.9  # label smoothing punishes overconfidence on real
    assert losses.d_loss_hinge(big, -big) == 0
    assert losses.d_loss_hinge(torch.zeros(4, 1), torch.zeros(4, 1)) == 2
    assert losses.g_loss_hinge(torch.ones(3, 1)) == -1
    torch.testing.assert_close(losses.d_loss_wgan(big, -big), torch.tensor(-40.0))
    # saturating vs non-saturating: same sign of gradient, different strength at D(G(z)) ~ 0
    z = torch.tensor([[-8.0]], requires_grad=True)
    (g_ns,) = torch.autograd.grad(losses.g_loss_ns(z), z)
    (g_sat,) = torch.autograd.grad(losses.g_loss_saturating(z), z)
    assert g_ns < 0 and g_sat < 0 and abs(g_ns) > 100 * abs(g_sat)


@pytest.mark.parametrize(
    "opts",
    [
        {"loss": "hinge"},
        {"loss": "wgan-gp", "d_steps": 2, "beta1": 0.0},
        {"loss": "bce"},
        {"r1": 1.0},
        {"label_smoothing": 0.1, "instance_noise": 0.1},
        {"spectral_norm": True, "loss": "hinge"},
        {"g_steps": 2},
        {"diffaugment": "translation,cutout"},
        {"precision": "bf16"},
        {"grad_accum": 2, "loss": "hinge"},
    ],
)
def test_each_option_trains(tiny_data, opts):
    t = trainer(tiny_data, **opts)
    before = [p.clone() for p in t.G.parameters()]
    for idx in list(t.batches())[:3]:
        stats = t.train_step(t.real[idx], t.labels[idx])
    assert torch.isfinite(stats).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, t.G.parameters(), strict=True))


def test_spectral_norm_bounds_the_top_singular_value(tiny_data):
    t = trainer(tiny_data, spectral_norm=True)
    for idx in list(t.batches())[:5]:
        t.train_step(t.real[idx], t.labels[idx])
    t.D.eval()  # power iteration frozen; weights as used
    for m in t.D.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            top = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
            assert top == pytest.approx(1.0, abs=0.05)


def test_d_and_g_steps_count_updates(tiny_data):
    t = trainer(tiny_data, d_steps=3, g_steps=2)
    calls = {"d": 0, "g": 0}
    t.opt_d.register_step_post_hook(lambda *a: calls.__setitem__("d", calls["d"] + 1))
    t.opt_g.register_step_post_hook(lambda *a: calls.__setitem__("g", calls["g"] + 1))
    idx = next(t.batches())
    assert len(idx) == 3 * 32  # a step holds the real batches of all its D updates
    t.train_step(t.real[idx], t.labels[idx])
    assert calls == {"d": 3, "g": 2}
    assert t.steps_per_epoch == math.ceil(600 / 96)


def test_instance_noise_decays_to_zero(tiny_data):
    t = trainer(tiny_data, instance_noise=0.5, epochs=2)
    x = torch.zeros(2000, 1, 28, 28)
    assert t.d_input(x).std() == pytest.approx(0.5, rel=0.05)
    t.step = t.steps_per_epoch  # halfway
    assert t.d_input(x).std() == pytest.approx(0.25, rel=0.05)
    t.step = 2 * t.steps_per_epoch
    assert torch.equal(t.d_input(x), x)


def test_joint_schedule_refuses_what_it_cannot_do():
    with pytest.raises(UsageError, match="joint schedule"):
        resolve("tf-dcgan", overrides={"d_steps": "2"})
    with pytest.raises(UsageError, match="loss must be one of"):
        resolve("fast", overrides={"loss": "lsgan"})


def test_diffaugment_is_differentiable_and_keeps_shape():
    from mnistgan.augment import cutout, diff_augment, translation

    x = (torch.rand(16, 1, 28, 28) * 2 - 1).requires_grad_(True)
    for f in (translation, cutout):
        y = f(x)
        assert y.shape == x.shape and not torch.equal(y, x)
        (g,) = torch.autograd.grad(y.sum(), x)
        assert g.abs().sum() > 0  # gradients reach G through the augmentation
    y = diff_augment(x, "translation,cutout")
    assert y.shape == x.shape
    # cutout blanks a 14 x 14 square centred anywhere: at least a 7 x 7 corner of it is inside
    blank = (cutout(x.detach()) == x.amin()).flatten(1).sum(1)
    assert (blank >= 7 * 7).all() and (blank <= 14 * 14 + 1).all()
    with pytest.raises(UsageError, match="unknown diffaugment policy"):
        resolve("fast", overrides={"diffaugment": "translation,colour"})


def test_bf16_autocast_runs_layers_in_bf16(tiny_data):
    t = trainer(tiny_data, precision="bf16")
    dtypes = []
    for m in t.D.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    idx = next(t.batches())
    stats = t.train_step(t.real[idx], t.labels[idx])
    assert torch.isfinite(stats).all() and dtypes and set(dtypes) == {torch.bfloat16}
    assert next(t.D.parameters()).dtype == torch.float32  # weights stay fp32


def test_fp16_uses_loss_scaling(tiny_data):
    t = trainer(tiny_data, precision="fp16")
    assert t.scaler_d.is_enabled() and t.scaler_g.is_enabled()
    with pytest.raises(UsageError, match="fp16 needs loss scaling"):
        resolve("tf-dcgan", overrides={"precision": "fp16"})


def test_grad_accum_makes_one_update_from_micro_batches(tiny_data):
    t = trainer(tiny_data, grad_accum=2, batch_size=16)
    steps, sizes = {"d": 0, "g": 0}, []
    t.opt_d.register_step_post_hook(lambda *a: steps.__setitem__("d", steps["d"] + 1))
    t.opt_g.register_step_post_hook(lambda *a: steps.__setitem__("g", steps["g"] + 1))
    t.D.register_forward_pre_hook(lambda m, a: sizes.append(len(a[0])))
    idx = next(t.batches())
    assert len(idx) == 32  # one step consumes grad_accum x batch_size real digits
    t.train_step(t.real[idx], t.labels[idx])
    assert steps == {"d": 1, "g": 1}
    assert sizes == [16] * 6  # D: (real, fake) x 2 micro-batches; G: 2 micro-batches
