"""Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020).

Each real (fake) point gets a ball reaching its k-th nearest real (fake) neighbour:
  precision: share of fakes inside some real ball (k=3)  -- are samples realistic?
  recall:    share of reals inside some fake ball (k=3)  -- is the data's variety covered?
  density:   mean number of real balls (k=5) holding a fake, divided by k; ~1 for real vs real,
             above 1 when samples crowd in dense regions
  coverage:  share of real balls (k=5) holding at least one fake; robust to outlier fakes.
Balls are closed (<=), as in Kynkäänniemi et al. Distances are computed in row chunks, so
10k x 10k never materialises (1000 x 10k floats = 40 MB).
"""

import torch

from mnistgan.errors import MnistganError


def _kth_neighbour_radii(x, ks, chunk):
    """Distance from each row of x to its k-th nearest other row, for each k in ks."""
    k_max = max(ks)
    knn = torch.cat(
        [torch.cdist(c, x).topk(k_max + 1, dim=1, largest=False).values for c in x.split(chunk)]
    )
    return {k: knn[:, k] for k in ks}  # column 0 is the point itself


def prdc(real, fake, k_pr=3, k_dc=5, chunk=1000):
    """Precision, recall, density and coverage of fake features (M, D) against real (N, D)."""
    real = torch.as_tensor(real, dtype=torch.float32)
    fake = torch.as_tensor(fake, dtype=torch.float32)
    if min(len(real), len(fake)) <= max(k_pr, k_dc):
        raise MnistganError(f"precision/recall need more than {max(k_pr, k_dc)} points per set")
    with torch.inference_mode():
        r_radii = _kth_neighbour_radii(real, (k_pr, k_dc), chunk)
        f_radius = _kth_neighbour_radii(fake, (k_pr,), chunk)[k_pr]
        fake_in_real = torch.zeros(len(fake), dtype=torch.bool)
        fake_ball_count = torch.zeros(len(fake))
        real_in_fake = torch.zeros(len(real), dtype=torch.bool)
        real_covered = torch.zeros(len(real), dtype=torch.bool)
        for i, r in zip(range(0, len(real), chunk), real.split(chunk), strict=True):
            d = torch.cdist(r, fake)  # (chunk, M)
            rows = slice(i, i + len(r))
            fake_in_real |= (d <= r_radii[k_pr][rows, None]).any(dim=0)
            fake_ball_count += (d <= r_radii[k_dc][rows, None]).sum(dim=0)
            real_in_fake[rows] = (d <= f_radius[None, :]).any(dim=1)
            real_covered[rows] = d.min(dim=1).values <= r_radii[k_dc][rows]
    return {
        "precision": fake_in_real.float().mean().item(),
        "recall": real_in_fake.float().mean().item(),
        "density": (fake_ball_count.mean() / k_dc).item(),
        "coverage": real_covered.float().mean().item(),
    }
