"""SubpixelConvTranspose2d computes exactly what nn.ConvTranspose2d does (outputs and gradients)."""

import copy

import pytest
import torch
from conftest import outputs_and_grads
from torch import nn

from mnistgan.models import SubpixelConvTranspose2d, build_generator, use_subpixel

# (in, out, kernel, padding, output_padding, input size): the stride-2 layers of the generators
CONFIGS = {
    "keras-dcgan k4 p1": (16, 8, 4, 1, 0, 7),
    "fast k4 p1 to 1 channel": (8, 1, 4, 1, 0, 14),
    "tf-dcgan k5 p2 op1": (16, 8, 5, 2, 1, 7),
}
TOL = dict(atol=1e-5, rtol=1e-4)


def pair(cin, cout, k, p, op, bias=True):
    native = nn.ConvTranspose2d(cin, cout, k, stride=2, padding=p, output_padding=op, bias=bias)
    nn.init.normal_(native.weight)
    if bias:
        nn.init.normal_(native.bias)
    sub = SubpixelConvTranspose2d(cin, cout, k, stride=2, padding=p, output_padding=op, bias=bias)
    sub.load_state_dict(native.state_dict())
    return native, sub


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_layer_equals_conv_transpose(name, channels_last, bias):
    cin, cout, k, p, op, n = CONFIGS[name]
    torch.manual_seed(0)
    native, sub = pair(cin, cout, k, p, op, bias)
    x = torch.randn(3, cin, n, n)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    g = torch.randn(3, cout, 2 * n, 2 * n)
    y_ref, g_ref = outputs_and_grads(native, x, g)
    y_sub, g_sub = outputs_and_grads(sub, x, g)
    assert y_sub.shape == y_ref.shape == (3, cout, 2 * n, 2 * n)
    torch.testing.assert_close(y_sub, y_ref, **TOL)
    for a, b in zip(g_sub, g_ref, strict=True):  # input, weight, bias
        torch.testing.assert_close(a, b, **TOL)
    if channels_last:
        assert y_sub.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("k, p, op", [(3, 1, 1), (3, 1, 0), (4, 2, 0), (6, 2, 1), (2, 0, 0)])
def test_other_stride_2_shapes_exact_in_float64(k, p, op):
    # odd output sizes (cropped) and unequal phase windows (asymmetric padding) too
    torch.manual_seed(1)
    native, sub = pair(3, 4, k, p, op)
    native.double(), sub.double()
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    g = torch.randn_like(native(x))
    (y_ref, g_ref), (y_sub, g_sub) = outputs_and_grads(native, x, g), outputs_and_grads(sub, x, g)
    torch.testing.assert_close(y_sub, y_ref, atol=1e-12, rtol=1e-12)
    for a, b in zip(g_sub, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_bf16_autocast():
    torch.manual_seed(0)
    native, sub = pair(16, 8, 4, 1, 0)
    x = torch.randn(2, 16, 7, 7, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ref, y_sub = native(x), sub(x)
    assert y_sub.dtype == y_ref.dtype == torch.bfloat16
    torch.testing.assert_close(y_sub.float(), y_ref.float(), atol=0.1, rtol=0.05)
    y_sub.float().sum().backward()
    assert sub.weight.grad is not None and sub.weight.grad.dtype == torch.float32


@pytest.mark.parametrize("arch", ["tf-dcgan", "keras-dcgan", "fast"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_generators_unchanged(arch, channels_last):
    torch.manual_seed(0)
    native = build_generator(arch, 100, width=16, conditional=arch == "fast")
    sub = copy.deepcopy(native)
    assert use_subpixel(sub) == 2  # the two stride-2 layers of each generator
    if channels_last:  # as train.py does with --channels-last
        native.to(memory_format=torch.channels_last), sub.to(memory_format=torch.channels_last)
    assert list(sub.state_dict()) == list(native.state_dict())
    if arch == "tf-dcgan":  # its first transposed conv has stride 1 and stays native
        assert sum(type(m) is nn.ConvTranspose2d for m in sub.modules()) == 1
    z, y = torch.randn(4, 100), torch.arange(4)
    args = (z, y) if arch == "fast" else (z,)
    native.train(), sub.train()
    x_sub, x_ref = sub(*args), native(*args)
    torch.testing.assert_close(x_sub, x_ref, **TOL)
    x_sub.square().sum().backward(), x_ref.square().sum().backward()
    for (name, a), b in zip(sub.named_parameters(), native.parameters(), strict=True):
        # fp32 summation order through BatchNorm: compare on the scale of each gradient
        scale = b.grad.abs().max().item()
        assert (a.grad - b.grad).abs().max().item() <= 1e-5 * scale, name
    native.eval(), sub.eval()
    torch.testing.assert_close(sub(*args), native(*args), **TOL)
    # checkpoints interchangeable both ways
    native.load_state_dict(sub.state_dict())
    sub.load_state_dict(native.state_dict())


def test_ineligible_layers_left_alone():
    model = nn.Sequential(
        nn.ConvTranspose2d(4, 4, 3, stride=1, padding=1),
        nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, groups=2),
        nn.ConvTranspose2d(4, 4, 3, stride=2, padding=2, dilation=2),
        nn.ConvTranspose2d(4, 4, 4, stride=(2, 1), padding=1),
        nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1),
    )
    assert use_subpixel(model) == 1
    assert [type(m) for m in model] == [nn.ConvTranspose2d] * 4 + [SubpixelConvTranspose2d]
    assert use_subpixel(model) == 0  # idempotent


def test_fallback_forward_matches_parent():
    torch.manual_seed(0)
    layer = SubpixelConvTranspose2d(4, 3, 3, stride=1, padding=1)
    ref = nn.ConvTranspose2d(4, 3, 3, stride=1, padding=1)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(layer(x), ref(x))
    sub = SubpixelConvTranspose2d(4, 3, 4, stride=2, padding=1)
    sub.load_state_dict(nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1).state_dict())
    ref = nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)
    ref.load_state_dict(sub.state_dict())
    torch.testing.assert_close(sub(x, output_size=[11, 11]), ref(x, output_size=[11, 11]))
    torch.testing.assert_close(sub(x[0]), ref(x[0]))  # unbatched input


@pytest.mark.parametrize("arch", ["tf-dcgan", "keras-dcgan", "fast"])
def test_to_image_layer_only(arch):
    g = build_generator(arch, 100)
    n_to_image = use_subpixel(g, max_out_channels=1)
    converted = [m.out_channels for m in g.modules() if isinstance(m, SubpixelConvTranspose2d)]
    assert n_to_image == len(converted) == (0 if arch == "keras-dcgan" else 1)
    assert converted == [1] * n_to_image
    assert use_subpixel(g) == 2 - n_to_image
