"""Train the reference digit classifier shipped as src/mnistgan/metrics/classifier.safetensors.

    .venv/bin/python scripts/train_classifier.py [--epochs 6] [--seed 0] [--out PATH]

Prints the test accuracy and the file's sha256; put both into src/mnistgan/metrics/classifier.py
(CLASSIFIER_SHA256, TEST_ACCURACY). Deterministic for a given seed, torch version and thread count.
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mnistgan.data import load_mnist
from mnistgan.metrics.classifier import WEIGHTS_PATH, Classifier, sha256_of


def augment(x, gen):
    """Random rotation (+-10 deg), scale (0.9-1.1) and shift (+-2 px): digits as people write."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 / 14)  # 1 px = 2/28 in grid units
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


@torch.inference_mode()
def accuracy(model, x, y):
    model.eval()
    pred = torch.cat([model(b).argmax(1) for b in x.split(1000)])
    return (pred == y).float().mean().item()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(WEIGHTS_PATH))
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(args.seed)
    mnist = load_mnist()
    x_train = mnist.train_images.float()[:, None] / 255
    y_train = mnist.train_labels.long()
    x_test = mnist.test_images.float()[:, None] / 255
    y_test = mnist.test_labels.long()

    model = Classifier()
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    # One-cycle: warm up then anneal to ~0, which buys the last few tenths of a percent.
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch
    )
    for epoch in range(args.epochs):
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        for idx in perm.split(args.batch_size):
            loss = F.cross_entropy(model(augment(x_train[idx], gen)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(model, x_test, y_test)
        print(
            f"epoch {epoch + 1}/{args.epochs}  loss {loss.item():.4f}  test acc {acc:.4f}  "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, args.out)
    print(f"test accuracy {acc:.4f}")
    print(f"sha256 {sha256_of(args.out)}  -> {args.out}")


if __name__ == "__main__":
    main()
