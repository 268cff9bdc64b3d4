"""Exact, faster forms of standard layers, for CPU training (`Config.fast_layers`).

Each class here subclasses the torch layer it replaces and only overrides `forward`, so the
parameters (names, shapes, init) and therefore state dicts, checkpoints and exported generators
are unchanged; `use_fast_layers` switches a built model over in place. Each computes the same
function as its parent up to float rounding (tests/test_layers.py compares outputs and
gradients) and is used only where benchmarks/layers.py measured it faster on this kind of CPU:

- FastDropout: CPU `bernoulli_` draws one 32-bit number per element and was 12 % of a
  tf-dcgan step; this draws 16 bits per element, four per 64-bit draw.
- DFTConvTranspose2d: the 5x5 stride-1 transposed conv of tf-dcgan (256 -> 128 channels at
  7x7) is half that step's FLOPs; through a small 2-D DFT it becomes three matmuls with ~5x
  fewer FLOPs.
- TapConv2d: a stride-1 conv with one output channel (keras-dcgan's 7x7 to-image layer) runs
  at ~16 GFLOP/s in oneDNN; as one matmul (channels -> taps) plus a fold it runs ~1.5x faster.
- FoldConvTranspose2d: the same idea for transposed convs with one output channel (the
  to-image layers of fast and tf-dcgan): a matmul, then F.fold scatters the taps, ~2.4x faster.

Without autograd (sampling, evaluation) the last two place their taps with `place_taps`, one
strided add per tap, instead of F.fold: 1.6-2.5x faster than col2im forward, but far slower
backward (autograd copies each view), so training keeps F.fold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FastDropout(nn.Dropout):
    """nn.Dropout whose mask comes from 16 random bits per element (torch's generator, so
    seeds and checkpointed RNG state work as before). P(drop) is p rounded to a multiple of
    1/65536 (0.3 -> 0.300003): the same layer for any practical purpose."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0 or self.inplace:
            return super().forward(x)
        dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
        if not dense:
            x = x.contiguous()
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
        words.random_(-(2**63), 2**63 - 1)  # all 64 bits; random_() alone leaves the top bit 0
        bits = words.view(torch.int16)[:n].as_strided(x.shape, x.stride())  # x's memory order
        keep = bits >= round(self.p * 65536) - 32768  # int16 is uniform on [-32768, 32767]
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def _dft_matrices(h: int, w: int, kh: int, kw: int, ph: int, pw: int, dtype, device):
    """Real matrices for a stride-1 transposed conv done as a circular convolution of size
    P = n + k - 1 - pad per axis: big enough that the wrapped-around terms land only on the
    `pad` cropped-off outputs. Spectra are kept as [real parts | imaginary parts] of rfft2's
    half spectrum. Returns (image -> spectrum, kernel -> spectrum, spectrum -> cropped output,
    number of frequencies, output size)."""
    py, px = h + kh - 1 - ph, w + kw - 1 - pw
    ho, wo = h + kh - 1 - 2 * ph, w + kw - 1 - 2 * pw
    nf = py * (px // 2 + 1)

    def spectrum(n, a, b):  # rfft2 of each unit image of size a x b, as (n, 2 * nf) reals
        z = torch.fft.rfft2(torch.eye(n, dtype=torch.float64).view(n, a, b), s=(py, px))
        z = z.reshape(n, nf)
        return torch.cat([z.real, z.imag], 1)

    # irfft2 is real-linear in (Re, Im) of the half spectrum: feed it each unit spectrum
    unit = torch.eye(2 * nf, dtype=torch.float64)
    spec = torch.complex(unit[:, :nf], unit[:, nf:]).view(2 * nf, py, px // 2 + 1)
    back = torch.fft.irfft2(spec, s=(py, px))[:, ph : ph + ho, pw : pw + wo].reshape(2 * nf, -1)
    mats = (spectrum(h * w, h, w), spectrum(kh * kw, kh, kw), back)
    return (*(m.to(dtype=dtype, device=device) for m in mats), nf, (ho, wo))


class DFTConvTranspose2d(nn.ConvTranspose2d):
    """A stride-1 nn.ConvTranspose2d computed as: input -> DFT (one matmul), a complex
    matmul over channels per frequency (three real bmm), inverse DFT and crop (one matmul).
    Other configurations run the parent's forward."""

    def dft_eligible(self, x: torch.Tensor) -> bool:
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        return (
            tuple(self.stride) == (1, 1)
            and tuple(self.dilation) == (1, 1)
            and tuple(self.output_padding) == (0, 0)
            and self.groups == 1
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)
            and x.dim() == 4
            and ph <= min(kh, x.shape[2]) - 1
            and pw <= min(kw, x.shape[3]) - 1
        )

    def forward(self, input, output_size=None):
        if output_size is not None or not self.dft_eligible(input):
            return super().forward(input, output_size)
        b, ci, h, w = input.shape
        co = self.out_channels
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        key = (h, w, input.dtype, input.device)
        cache = self.__dict__.setdefault("_dft_cache", {})  # not a buffer: state dicts unchanged
        if key not in cache:
            cache[key] = _dft_matrices(h, w, kh, kw, ph, pw, input.dtype, input.device)
        to_spec, kernel_spec, back, nf, (ho, wo) = cache[key]
        # Spectra with the frequency axis first, straight out of the matmuls (the transposed
        # operands are views): (2 * nf, b * ci) = [Re; Im] per (image, channel), likewise W.
        xs = (to_spec.t() @ input.reshape(b * ci, h * w).t()).view(2, nf, b, ci)
        ws = (kernel_spec.t() @ self.weight.reshape(ci * co, kh * kw).t()).view(2, nf, ci, co)
        (xr, xi), (wr, wi) = xs, ws
        # Per frequency (a + ib)(c + id) over channels, in 3 real products instead of 4:
        # ac - bd and (a + b)(c + d) - ac - bd (Gauss)
        ac, bd = torch.bmm(xr, wr), torch.bmm(xi, wi)
        cross = torch.bmm(xr + xi, wr + wi)
        ys = torch.stack((ac - bd, cross - ac - bd)).view(2 * nf, b * co)
        y = (ys.t() @ back).view(b, co, ho, wo)
        return y if self.bias is None else y + self.bias.view(1, co, 1, 1)


def place_taps(planes, grid, size, kernel, padding, stride) -> torch.Tensor:
    """F.fold(planes.transpose(1, 2), size, kernel, padding=padding, stride=stride) for
    planes of shape (b, h * w, channels * kh * kw) from an input grid (h, w). Without
    autograd, one strided add per tap beats col2im (benchmarks/layers.py)."""
    if torch.is_grad_enabled() and planes.requires_grad:
        return F.fold(planes.transpose(1, 2), size, kernel, padding=padding, stride=stride)
    (h, w), (kh, kw), (sh, sw), (ph, pw) = grid, kernel, stride, padding
    b, co = planes.shape[0], planes.shape[2] // (kh * kw)
    taps = planes.view(b, h, w, co, kh, kw).permute(0, 3, 4, 5, 1, 2)  # b, co, kh, kw, h, w
    reach_h, reach_w = (h - 1) * sh + 1, (w - 1) * sw + 1
    full = planes.new_zeros(
        b, co, max(reach_h + kh - 1, ph + size[0]), max(reach_w + kw - 1, pw + size[1])
    )
    for i in range(kh):
        for j in range(kw):
            full[:, :, i : i + reach_h : sh, j : j + reach_w : sw] += taps[:, :, i, j]
    return full[:, :, ph : ph + size[0], pw : pw + size[1]]


class TapConv2d(nn.Conv2d):
    """A stride-1, 'same'-padded nn.Conv2d with few output channels computed as one matmul
    from channels to (output channel, tap) planes, summed into place by F.fold."""

    def tap_eligible(self, x: torch.Tensor) -> bool:
        (kh, kw), pad = self.kernel_size, self.padding
        return (
            tuple(self.stride) == (1, 1)
            and tuple(self.dilation) == (1, 1)
            and self.groups == 1
            and self.padding_mode == "zeros"
            and kh % 2 == 1
            and kw % 2 == 1
            and tuple(pad) == (kh // 2, kw // 2)
            and x.dim() == 4
        )

    def forward(self, input):
        if not self.tap_eligible(input):
            return super().forward(input)
        b, ci, h, w = input.shape
        co, (kh, kw) = self.out_channels, self.kernel_size
        # fold scatters tap t of position q to q + t - pad; a conv gathers, hence the flip
        taps = self.weight.flip(-2, -1).permute(1, 0, 2, 3).reshape(ci, co * kh * kw)
        planes = input.permute(0, 2, 3, 1).reshape(b, h * w, ci) @ taps  # free if NHWC
        y = place_taps(planes, (h, w), (h, w), (kh, kw), tuple(self.padding), (1, 1))
        return y if self.bias is None else y + self.bias.view(1, co, 1, 1)


class FoldConvTranspose2d(nn.ConvTranspose2d):
    """An nn.ConvTranspose2d with few output channels computed as one matmul from channels to
    (output channel, tap) planes, scattered into place by F.fold (col2im), which is exactly a
    transposed convolution's own scatter."""

    def fold_eligible(self, x: torch.Tensor) -> bool:
        return (
            tuple(self.dilation) == (1, 1)
            and self.groups == 1
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)
            and x.dim() == 4
        )

    def forward(self, input, output_size=None):
        if output_size is not None or not self.fold_eligible(input):
            return super().forward(input, output_size)
        b, ci, h, w = input.shape
        co, (kh, kw), (sh, sw) = self.out_channels, self.kernel_size, self.stride
        (ph, pw), (oh, ow) = self.padding, self.output_padding
        size = ((h - 1) * sh - 2 * ph + kh + oh, (w - 1) * sw - 2 * pw + kw + ow)
        taps = self.weight.reshape(ci, co * kh * kw)
        planes = input.permute(0, 2, 3, 1).reshape(b, h * w, ci) @ taps  # free if NHWC
        y = place_taps(planes, (h, w), size, (kh, kw), self.padding, tuple(self.stride))
        return y if self.bias is None else y + self.bias.view(1, co, 1, 1)


def use_fast_layers(model: nn.Module) -> int:
    """Switch, in place, the layers of `model` where a class above measured faster: every
    nn.Dropout, stride-1 transposed convs with kernels of 5 or more, transposed convs with one
    output channel, and 'same' stride-1 convs with at most 4 output channels from at least 32
    inputs. Returns how many. Parametrized modules (spectral norm) keep their class."""
    n = 0
    for m in model.modules():
        kind = type(m)
        if kind is nn.Dropout:
            m.__class__ = FastDropout
        elif (
            kind is nn.ConvTranspose2d
            and tuple(m.stride) == (1, 1)
            and min(m.kernel_size) >= 5
            and m.groups == 1
        ):
            m.__class__ = DFTConvTranspose2d
        elif kind is nn.ConvTranspose2d and m.out_channels == 1 and m.groups == 1:
            m.__class__ = FoldConvTranspose2d
        elif (
            kind is nn.Conv2d
            and tuple(m.stride) == (1, 1)
            and m.out_channels <= 4
            and m.in_channels >= 32
            and m.groups == 1
        ):
            m.__class__ = TapConv2d
        else:
            continue
        n += 1
    return n


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """For inference only: fold each eval-mode BatchNorm that directly follows a Linear, Conv2d
    or ConvTranspose2d inside an nn.Sequential into that layer's weight and bias, leaving an
    nn.Identity; the same function with one pass over the activations fewer. Returns how many.
    The model's state dict changes: use it on a generator loaded for sampling, not training."""
    n = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(seq)):
            layer, bn = seq[i - 1], seq[i]
            if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.training:
                continue
            if not isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                continue
            axis = 1 if isinstance(layer, nn.ConvTranspose2d) else 0  # the output channels
            if bn.running_mean is None or bn.num_features != layer.weight.shape[axis]:
                continue
            scale = bn.running_var.add(bn.eps).rsqrt()
            if bn.affine:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale + (bn.bias if bn.affine else 0.0)
            shape = [1] * layer.weight.dim()
            shape[axis] = -1
            # an elementwise product keeps the weight's memory format (e.g. channels_last)
            layer.weight = nn.Parameter(layer.weight * scale.view(shape))
            bias = shift if layer.bias is None else layer.bias * scale + shift
            layer.bias = nn.Parameter(bias)
            seq[i] = nn.Identity()
            n += 1
    return n
