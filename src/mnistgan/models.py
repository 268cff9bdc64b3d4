"""Generator and discriminator builders, one pair per architecture family.

The two reference designs are reproduced layer for layer from ../shared/SEEDS.md. Two deliberate,
exactly equivalent changes: discriminators end in a logit (the sigmoid lives inside
BCE-with-logits, which is the same function without its overflow), and Keras' BatchNorm
defaults (momentum 0.99, eps 1e-3) are spelled the PyTorch way (momentum 0.01, eps 1e-3).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UsageError

NUM_CLASSES = 10


def keras_bn(n: int, dims: int = 2) -> nn.Module:
    cls = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return cls(n, eps=1e-3, momentum=0.01)


class Reshape(nn.Module):
    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.view(x.shape[0], *self.shape)


# ----------------------------------------------------------------- Reference A: tf-dcgan


def tf_dcgan_generator(latent_dim: int = 100) -> nn.Sequential:
    a = 0.02  # LeakyReLU slope as stated in SEEDS.md
    return nn.Sequential(
        nn.Linear(latent_dim, 7 * 7 * 256, bias=False),
        keras_bn(7 * 7 * 256, dims=1),
        nn.LeakyReLU(a),
        Reshape(256, 7, 7),  # 256 x 7 x 7
        nn.ConvTranspose2d(256, 128, 5, stride=1, padding=2, bias=False),  # 128 x 7 x 7
        keras_bn(128),
        nn.LeakyReLU(a),
        nn.ConvTranspose2d(128, 64, 5, stride=2, padding=2, output_padding=1, bias=False),
        keras_bn(64),  # 64 x 14 x 14
        nn.LeakyReLU(a),
        nn.ConvTranspose2d(64, 1, 5, stride=2, padding=2, output_padding=1, bias=False),
        nn.Tanh(),  # 1 x 28 x 28 in [-1, 1]
    )


def tf_dcgan_discriminator() -> nn.Sequential:
    def block(cin, cout, p):
        return [nn.Conv2d(cin, cout, 3, 2, 1), keras_bn(cout), nn.LeakyReLU(0.2), nn.Dropout(p)]

    return nn.Sequential(
        *block(1, 64, 0.3),  # 64 x 14 x 14
        *block(64, 128, 0.3),  # 128 x 7 x 7
        *block(128, 256, 0.4),  # 256 x 4 x 4
        nn.Flatten(),
        nn.Linear(4 * 4 * 256, 1),  # logit
    )


# -------------------------------------------------------------- Reference B: keras-dcgan


def keras_dcgan_generator(latent_dim: int = 100) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(latent_dim, 7 * 7 * 128),
        nn.LeakyReLU(0.2),
        Reshape(128, 7, 7),  # 128 x 7 x 7
        nn.ConvTranspose2d(128, 128, 4, stride=2, padding=1),  # 128 x 14 x 14
        nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(128, 128, 4, stride=2, padding=1),  # 128 x 28 x 28
        nn.LeakyReLU(0.2),
        nn.Conv2d(128, 1, 7, padding=3),
        nn.Sigmoid(),  # 1 x 28 x 28 in [0, 1]
    )


def keras_dcgan_discriminator() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 64, 3, 2, 1),  # 64 x 14 x 14
        nn.LeakyReLU(0.2),
        nn.Dropout(0.4),
        nn.Conv2d(64, 64, 3, 2, 1),  # 64 x 7 x 7
        nn.LeakyReLU(0.2),
        nn.Dropout(0.4),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 1),  # logit
    )


# ------------------------------------------------------------------------ fast (default)


def fast_generator(latent_dim: int = 64, width: int = 64) -> nn.Sequential:
    """A small DCGAN generator: few channels at 28x28, where CPU time goes."""
    w = width
    return nn.Sequential(
        nn.Linear(latent_dim, 7 * 7 * 2 * w, bias=False),
        nn.BatchNorm1d(7 * 7 * 2 * w),
        nn.ReLU(),
        Reshape(2 * w, 7, 7),  # 2w x 7 x 7
        nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False),  # w x 14 x 14
        nn.BatchNorm2d(w),
        nn.ReLU(),
        nn.ConvTranspose2d(w, 1, 4, stride=2, padding=1),  # 1 x 28 x 28
        nn.Tanh(),
    )


def fast_discriminator(width: int = 64) -> nn.Sequential:
    w = width
    return nn.Sequential(
        nn.Conv2d(1, w, 4, 2, 1),  # w x 14 x 14
        nn.LeakyReLU(0.2),
        nn.Conv2d(w, 2 * w, 4, 2, 1),  # 2w x 7 x 7
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(7 * 7 * 2 * w, 1),  # logit
    )


# ------------------------------------------------------------ conditional (any arch)


class ConditionalGenerator(nn.Module):
    """G(z, y): the digit's one-hot code is appended to the noise."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, z, y):
        # y: class indices, or (N, 10) soft codes (e.g. to morph one digit into another)
        code = y.to(z.dtype) if y.dim() == 2 else F.one_hot(y.long(), NUM_CLASSES).to(z.dtype)
        return self.net(torch.cat([z, code], dim=1))


class ProjectionDiscriminator(nn.Module):
    """D(x, y) = head(h) + <embed(y), h>, h = body(x): the projection discriminator of
    Miyato & Koyama (2018), built on any discriminator that ends in a Linear layer."""

    def __init__(self, net: nn.Sequential):
        super().__init__()
        self.body, self.head = net[:-1], net[-1]
        self.embed = nn.Embedding(NUM_CLASSES, self.head.in_features)

    def forward(self, x, y):
        h = self.body(x)
        return self.head(h) + (self.embed(y.long()) * h).sum(dim=1, keepdim=True)


def build_generator(arch: str, latent_dim: int, width: int = 64, conditional=False) -> nn.Module:
    z_dim = latent_dim + NUM_CLASSES if conditional else latent_dim
    if arch == "tf-dcgan":
        net = tf_dcgan_generator(z_dim)
    elif arch == "keras-dcgan":
        net = keras_dcgan_generator(z_dim)
    elif arch == "fast":
        net = fast_generator(z_dim, width)
    else:
        raise UsageError(f"unknown architecture {arch!r}")
    return ConditionalGenerator(net) if conditional else net


def build_discriminator(arch: str, width: int = 64, conditional=False) -> nn.Module:
    if arch == "tf-dcgan":
        net = tf_dcgan_discriminator()
    elif arch == "keras-dcgan":
        net = keras_dcgan_discriminator()
    elif arch == "fast":
        net = fast_discriminator(width)
    else:
        raise UsageError(f"unknown architecture {arch!r}")
    return ProjectionDiscriminator(net) if conditional else net


def keras_param_count(model: nn.Module) -> int:
    """Parameters plus BatchNorm moving mean/variance, the way Keras' summary() counts them."""
    params = sum(p.numel() for p in model.parameters())
    stats = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    )
    return params + stats


def init_weights(model: nn.Module) -> None:
    """Glorot-uniform kernels and zero biases: Keras' defaults, used by every preset."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
            nn.init.xavier_uniform_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def add_spectral_norm(model: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every conv and linear weight."""
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(model.modules()):
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            spectral_norm(m)
    return model


def output_range(arch: str) -> str:
    """The pixel range of an arch's generator: tanh -> [-1, 1], sigmoid -> [0, 1]."""
    return "sigmoid" if arch == "keras-dcgan" else "tanh"


# ------------------------------------------ sub-pixel form of stride-2 transposed convs


@functools.lru_cache(maxsize=64)
def _subpixel_axis_plan(k: int, p: int, op: int, n_in: int) -> tuple:
    """One spatial axis of a stride-2 transposed conv as an ordinary conv plus pixel shuffle.

    Output index o is shifted by c in {0, 1}: o + c = 2m + r, phase r in {0, 1}. Then
    out[o] = sum_k x[m + d] w[k] with d = (r - c + p - k) / 2 for the k of matching parity, so
    phase r uses kernel taps d in [dmin, dmax]. The shift c with the shorter window wins (kernel
    4, padding 1: c = 1 gives 2 taps instead of 3). Returns (c, taps, pad_lo, pad_hi, n_out,
    index), index[r][t] being the transposed kernel position of tap t in phase r (k = zero).
    """
    n_out = (n_in - 1) * 2 - 2 * p + k + op
    best = None
    for c in (0, 1):
        taps = {(r, (r - c + p - j) // 2): j for j in range(k) for r in (0, 1)
                if (r - c + p - j) % 2 == 0}  # fmt: skip
        ds = [d for _, d in taps]
        dmin, dmax = min(ds), max(ds)
        if best is None or dmax - dmin < best[2] - best[1]:
            best = (c, dmin, dmax, taps)
    c, dmin, dmax, taps = best
    m = (c + n_out - 1) // 2 + 1  # conv outputs per phase
    index = tuple(tuple(taps.get((r, d), k) for d in range(dmin, dmax + 1)) for r in (0, 1))
    return c, dmax - dmin + 1, -dmin, m - 1 + dmax - (n_in - 1), n_out, index


@functools.lru_cache(maxsize=64)
def _subpixel_gather_index(ky: int, kx: int, iy: tuple, ix: tuple, device) -> torch.Tensor:
    """Flat positions in the zero-padded (ky+1) x (kx+1) kernel, ordered (ry, ty, rx, tx)."""
    flat = [a * (kx + 1) + b for ry in (0, 1) for a in iy[ry] for rx in (0, 1) for b in ix[rx]]
    return torch.tensor(flat, dtype=torch.long, device=device)


class SubpixelConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d with the same parameters (names, shapes, layout: state dicts and
    checkpoints are interchangeable), whose forward computes a stride-2 transposed convolution
    exactly as one ordinary conv2d with 4 * out_channels outputs, one group per output phase,
    followed by F.pixel_shuffle(., 2) and, where the phases are offset, a crop. The per-phase
    kernels are gathered from the transposed weight on every forward, so autograd reaches the
    real weight. Other configurations (stride != 2, groups, dilation, output_size=...) run the
    parent's forward.
    """

    def subpixel_eligible(self) -> bool:
        return (
            tuple(self.stride) == (2, 2)
            and tuple(self.dilation) == (1, 1)
            and self.groups == 1
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)
        )

    def forward(self, input, output_size=None):
        if output_size is not None or input.dim() != 4 or not self.subpixel_eligible():
            return super().forward(input, output_size)
        (ky, kx), (py, px), (oy, ox) = self.kernel_size, self.padding, self.output_padding
        cy, ty, lo_y, hi_y, ny, iy = _subpixel_axis_plan(ky, py, oy, input.shape[2])
        cx, tx, lo_x, hi_x, nx, ix = _subpixel_axis_plan(kx, px, ox, input.shape[3])
        cin, cout = self.in_channels, self.out_channels
        index = _subpixel_gather_index(ky, kx, iy, ix, self.weight.device)
        w = F.pad(self.weight, (0, 1, 0, 1)).flatten(2).index_select(2, index)
        w = w.view(cin, cout, 2, ty, 2, tx).permute(1, 2, 4, 0, 3, 5).reshape(4 * cout, cin, ty, tx)
        if self.weight.is_contiguous(memory_format=torch.channels_last) and not (
            self.weight.is_contiguous()
        ):  # a channels_last model (train.py): keep oneDNN on NHWC kernels like the parent
            w = w.contiguous(memory_format=torch.channels_last)
        b = None if self.bias is None else self.bias.repeat_interleave(4)
        if lo_y == hi_y >= 0 and lo_x == hi_x >= 0:
            y = F.conv2d(input, w, b, padding=(lo_y, lo_x))
        else:
            y = F.conv2d(F.pad(input, (lo_x, hi_x, lo_y, hi_y)), w, b)
        y = F.pixel_shuffle(y, 2)
        if (cy, cx) == (0, 0) and y.shape[2:] == (ny, nx):
            return y
        channels_last = y.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return y[:, :, cy : cy + ny, cx : cx + nx].contiguous(memory_format=fmt)


def use_subpixel(model: nn.Module, max_out_channels: int | None = None) -> int:
    """Turn every plain nn.ConvTranspose2d with stride 2 (no groups or dilation) into a
    SubpixelConvTranspose2d in place; returns how many. Parameters are untouched. Modules
    already parametrized (e.g. spectral norm) are skipped: convert before parametrizing.
    max_out_channels limits it to narrow layers (e.g. 1: the to-image layer), the ones where
    the sub-pixel form measured faster on CPU (benchmarks/subpixel.py)."""
    n = 0
    for m in model.modules():
        if type(m) is nn.ConvTranspose2d and (
            max_out_channels is None or m.out_channels <= max_out_channels
        ):
            m.__class__ = SubpixelConvTranspose2d
            if m.subpixel_eligible():
                n += 1
            else:
                m.__class__ = nn.ConvTranspose2d
    return n
