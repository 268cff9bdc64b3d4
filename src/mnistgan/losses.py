"""GAN losses as small pure functions of discriminator logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy, real -> 1, fake -> 0, averaged over all real and fake samples.

    Summing two means (TF tutorial) and one mean over the concatenation (Keras train_on_batch)
    differ only by a factor of 2 when both halves are equal in size; Adam is invariant to it.
    """
    n_real, n_fake = real_logits.numel(), fake_logits.numel()
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return (real * n_real + fake * n_fake) / (n_real + n_fake)


def g_loss_ns(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: maximise log D(G(z)) (fakes labelled real)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


LOSSES = {"ns": (d_loss_bce, g_loss_ns)}
