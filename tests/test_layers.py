"""The faster layer forms in layers.py compute what the torch layers they replace compute."""

import copy

import pytest
import torch
from conftest import outputs_and_grads
from torch import nn

from mnistgan.layers import (
    DFTConvTranspose2d,
    FastDropout,
    FoldConvTranspose2d,
    TapConv2d,
    fold_batchnorm,
    use_fast_layers,
)
from mnistgan.models import add_spectral_norm, build_discriminator, build_generator

TOL = dict(atol=2e-5, rtol=1e-4)

# (in, out, kernel, padding, input h, input w): tf-dcgan's layer, then odd shapes
DFT_CONFIGS = {
    "tf-dcgan 5x5 256->128 at 7x7": (256, 128, 5, 2, 7, 7),
    "non-square 5x7 kernel": (6, 5, (5, 7), (2, 3), 4, 6),
    "no padding, grows the image": (3, 4, 5, 0, 6, 5),
    "padding beyond the input: parent's forward": (3, 4, 5, 3, 3, 3),
}
TAP_CONFIGS = {
    "keras-dcgan 7x7 128->1 at 28x28": (128, 1, 7, 3, 28, 28),
    "3x5 kernel, 3 outputs, non-square": (40, 3, (3, 5), (1, 2), 9, 11),
}


def check_same(native, fast, x, channels_last):
    fast.load_state_dict(native.state_dict())
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
        native.to(memory_format=torch.channels_last)
        fast.to(memory_format=torch.channels_last)
    y0 = native(x)
    g = torch.randn_like(y0)
    y0, grads0 = outputs_and_grads(native, x, g)
    y1, grads1 = outputs_and_grads(fast, x, g)
    assert y1.shape == y0.shape
    torch.testing.assert_close(y1, y0, **TOL)
    for a, b in zip(grads1, grads0, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5 * b.abs().max().item(), rtol=1e-4)
    with torch.inference_mode():  # sampling: some layers take another path without autograd
        torch.testing.assert_close(fast(x), native(x), **TOL)


@pytest.mark.parametrize("name", DFT_CONFIGS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_dft_layer_equals_conv_transpose(name, channels_last, bias):
    cin, cout, k, p, h, w = DFT_CONFIGS[name]
    torch.manual_seed(0)
    native = nn.ConvTranspose2d(cin, cout, k, stride=1, padding=p, bias=bias)
    fast = DFTConvTranspose2d(cin, cout, k, stride=1, padding=p, bias=bias)
    check_same(native, fast, torch.randn(3, cin, h, w), channels_last)


def test_dft_layer_takes_the_dft_path():
    """The equality above must be about the DFT path, not a silent fallback."""
    layer = DFTConvTranspose2d(8, 4, 5, stride=1, padding=2)
    x = torch.randn(2, 8, 7, 7)
    assert layer.dft_eligible(x)
    layer(x)
    assert list(layer.__dict__["_dft_cache"]) == [(7, 7, torch.float32, torch.device("cpu"))]
    assert not layer.dft_eligible(torch.randn(2, 8, 1, 1))  # padding 2 > a 1x1 input


@pytest.mark.parametrize("name", TAP_CONFIGS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_tap_layer_equals_conv(name, channels_last, bias):
    cin, cout, k, p, h, w = TAP_CONFIGS[name]
    torch.manual_seed(0)
    native = nn.Conv2d(cin, cout, k, padding=p, bias=bias)
    fast = TapConv2d(cin, cout, k, padding=p, bias=bias)
    assert fast.tap_eligible(torch.randn(1, cin, h, w))
    check_same(native, fast, torch.randn(2, cin, h, w), channels_last)


# (in, out, kernel, stride, padding, output_padding, input size): the to-image layers
FOLD_CONFIGS = {
    "fast 4x4 s2 32->1": (32, 1, 4, 2, 1, 0, 14),
    "tf-dcgan 5x5 s2 op1 64->1": (64, 1, 5, 2, 2, 1, 14),
    "3x3 s1 2 outputs": (5, 2, 3, 1, 1, 0, 6),
}


@pytest.mark.parametrize("name", FOLD_CONFIGS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_fold_layer_equals_conv_transpose(name, channels_last, bias):
    cin, cout, k, s, p, op, n = FOLD_CONFIGS[name]
    torch.manual_seed(0)
    native = nn.ConvTranspose2d(cin, cout, k, s, p, op, bias=bias)
    fast = FoldConvTranspose2d(cin, cout, k, s, p, op, bias=bias)
    assert fast.fold_eligible(torch.randn(1, cin, n, n))
    check_same(native, fast, torch.randn(3, cin, n, n), channels_last)


@pytest.mark.parametrize("arch", ["tf-dcgan", "fast"])
def test_fold_batchnorm_keeps_the_eval_function(arch):
    torch.manual_seed(0)
    G = build_generator(arch, 100, 16, False)
    for m in G.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)
            m.running_mean.normal_(0.0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    G.eval()
    folded = copy.deepcopy(G).to(memory_format=torch.channels_last)
    assert fold_batchnorm(folded) == (3 if arch == "tf-dcgan" else 2)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    z = torch.randn(8, 100)
    torch.testing.assert_close(folded(z), G(z), **TOL)
    assert fold_batchnorm(build_generator(arch, 100, 16, False)) == 0  # training mode: kept


@pytest.mark.parametrize("p", [0.3, 0.4])
def test_fast_dropout_statistics(p):
    """Drop rate within 5 sigma of p on 2M units, kept units scaled by 1/(1-p), gradient
    through the same mask, memory format kept, and the same mask for the same seed."""
    drop = FastDropout(p)
    x = torch.ones(64, 32, 32, 32).to(memory_format=torch.channels_last).requires_grad_()
    torch.manual_seed(5)
    y = drop(x)
    n = y.numel()
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 5 * (p * (1 - p) / n) ** 0.5
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, y.detach())
    torch.manual_seed(5)
    assert torch.equal(drop(x), y)
    # neighbouring units (and the 4 lanes of one 64-bit draw) are not correlated
    mask = (y.detach() != 0).float().permute(0, 2, 3, 1).reshape(-1)
    a, b = mask[:-1] - mask.mean(), mask[1:] - mask.mean()
    assert abs((a * b).mean().item()) / mask.var().item() < 0.01


def test_fast_dropout_is_identity_in_eval_and_p0():
    x = torch.randn(4, 3, 5, 5)
    assert FastDropout(0.3).eval()(x) is x
    assert torch.equal(FastDropout(0.0)(x), x)
    assert torch.equal(FastDropout(1.0)(x), torch.zeros_like(x))


@pytest.mark.parametrize(
    ("arch", "g_swaps", "d_swaps"), [("tf-dcgan", 2, 3), ("keras-dcgan", 1, 2), ("fast", 1, 0)]
)
def test_use_fast_layers_keeps_parameters_and_function(arch, g_swaps, d_swaps):
    torch.manual_seed(0)
    G, D = build_generator(arch, 100, 32, False), build_discriminator(arch, 32, False)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    assert (use_fast_layers(G2), use_fast_layers(D2)) == (g_swaps, d_swaps)
    for a, b in ((G, G2), (D, D2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    G.eval(), G2.eval(), D.eval(), D2.eval()
    z = torch.randn(5, 100)
    img = G(z)
    torch.testing.assert_close(G2(z), img, **TOL)
    torch.testing.assert_close(D2(img), D(img), **TOL)


def test_use_fast_layers_skips_parametrized_modules():
    D = add_spectral_norm(build_discriminator("keras-dcgan", 32, False))
    assert use_fast_layers(D) == 2  # the two dropouts; no plain conv is eligible anyway
    layer = add_spectral_norm(nn.Sequential(nn.ConvTranspose2d(8, 4, 5, 1, 2)))
    assert use_fast_layers(layer) == 0


@pytest.mark.parametrize("arch", ["tf-dcgan", "keras-dcgan", "fast"])
def test_sampling_generator_draws_what_the_plain_network_draws(arch):
    """sample.Generator folds BatchNorm, swaps in the fast layers and runs ReLUs in place:
    its digits must be the plain eval-mode network's, up to one grey level of rounding."""
    from mnistgan.data import to_uint8
    from mnistgan.models import output_range
    from mnistgan.sample import Generator

    torch.manual_seed(0)
    G = build_generator(arch, 100, 16, False)
    for m in G.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0.0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    G.eval()
    z = torch.randn(64, 100)
    with torch.no_grad():
        plain = to_uint8(G(z), output_range(arch))
    fast = Generator(copy.deepcopy(G), {"latent_dim": 100, "arch": arch}, torch.device("cpu"))
    drawn = fast.sample_from(z, batch_size=20)
    assert drawn.shape == plain.shape == (64, 28, 28)
    assert (drawn.int() - plain.int()).abs().max().item() <= 1
    assert (drawn != plain).float().mean().item() < 0.01
