"""GAN losses and penalties as small pure functions of discriminator outputs.

Each loss is a pair (d_loss(real_logits, fake_logits, real_target), g_loss(fake_logits)).
`real_target` < 1 is one-sided label smoothing; losses without labels ignore it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss_bce(real: torch.Tensor, fake: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy, real -> 1 (or the smoothed target), fake -> 0, averaged over all.

    Summing two means (TF tutorial) and one mean over the concatenation (Keras train_on_batch)
    differ only by a factor of 2 when both halves are equal in size; Adam is invariant to it.
    """
    n_real, n_fake = real.numel(), fake.numel()
    loss_real = F.binary_cross_entropy_with_logits(real, torch.full_like(real, real_target))
    loss_fake = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    return (loss_real * n_real + loss_fake * n_fake) / (n_real + n_fake)


def g_loss_ns(fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: maximise log D(G(z)) (fakes labelled real)."""
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def g_loss_saturating(fake: torch.Tensor) -> torch.Tensor:
    """The original minimax generator loss: minimise log(1 - D(G(z)))."""
    return -F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def d_loss_hinge(real: torch.Tensor, fake: torch.Tensor, real_target: float = 1.0):
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def g_loss_hinge(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def d_loss_wgan(real: torch.Tensor, fake: torch.Tensor, real_target: float = 1.0):
    return fake.mean() - real.mean()


LOSSES = {
    "bce": (d_loss_bce, g_loss_saturating),  # the original minimax game
    "ns": (d_loss_bce, g_loss_ns),
    "hinge": (d_loss_hinge, g_loss_hinge),
    "wgan-gp": (d_loss_wgan, g_loss_hinge),  # G maximises the critic's score: -mean(D(G(z)))
}


def gradient_penalty(D, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): (||grad D(x_hat)|| - 1)^2 on random interpolates."""
    n = min(len(real), len(fake))
    eps = torch.rand(n, 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real[:n] + (1 - eps) * fake[:n].detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ||grad D(x)||^2 on real data; `real` must require grad."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(dim=1).mean()
