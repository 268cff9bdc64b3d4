"""Reference B ("Keras GAN") as plain Keras, written from /work/shared/SEEDS.md.

The Keras way of training: D and the stacked G->D model compiled separately (D frozen inside
the stack); each step `d.train_on_batch` on 128 real images drawn at random (with replacement)
plus 128 fakes from `g.predict`, then `gan.train_on_batch` on 256 noise vectors labelled real.
Adam 2e-4, beta1 0.5, binary cross-entropy; an epoch is floor(60000 / 256) = 234 steps.

    python ref_b_keras.py --epochs 1                    # train
    python ref_b_keras.py --steps 20                    # stop after 20 steps
    python ref_b_keras.py --time-steps 30 --warmup 5    # one JSON line of throughput

Needs tensorflow-cpu (see requirements.txt); not part of the mnistgan package or its tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow import keras  # noqa: E402
from tensorflow.keras import layers  # noqa: E402

LATENT_DIM = 100
N_BATCH = 256
CACHE = Path.home() / ".cache" / "mnistgan" / "mnist.npz"


def load_real_samples() -> np.ndarray:
    """The 60,000 training images, 28x28x1 float32 scaled to [0, 1]."""
    with np.load(CACHE) as f:
        x = f["x_train"]
    return x.reshape(-1, 28, 28, 1).astype("float32") / 255.0


def define_discriminator(lr: float, beta_1: float) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(64, 3, strides=2, padding="same"),
            layers.LeakyReLU(0.2),
            layers.Dropout(0.4),
            layers.Conv2D(64, 3, strides=2, padding="same"),
            layers.LeakyReLU(0.2),
            layers.Dropout(0.4),
            layers.Flatten(),
            layers.Dense(1, activation="sigmoid"),
        ],
        name="discriminator",
    )
    model.compile(
        loss="binary_crossentropy",
        optimizer=keras.optimizers.Adam(learning_rate=lr, beta_1=beta_1),
        metrics=["accuracy"],
    )
    return model


def define_generator(latent_dim: int) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((latent_dim,)),
            layers.Dense(128 * 7 * 7),
            layers.LeakyReLU(0.2),
            layers.Reshape((7, 7, 128)),
            layers.Conv2DTranspose(128, 4, strides=2, padding="same"),
            layers.LeakyReLU(0.2),
            layers.Conv2DTranspose(128, 4, strides=2, padding="same"),
            layers.LeakyReLU(0.2),
            layers.Conv2D(1, 7, padding="same", activation="sigmoid"),
        ],
        name="generator",
    )


def define_gan(g_model, d_model, lr: float, beta_1: float) -> keras.Model:
    d_model.trainable = False  # frozen inside the stack
    model = keras.Sequential([g_model, d_model], name="gan")
    model.compile(
        loss="binary_crossentropy", optimizer=keras.optimizers.Adam(learning_rate=lr, beta_1=beta_1)
    )
    return model


def generate_real_samples(dataset, n, rng):
    x = dataset[rng.integers(0, dataset.shape[0], n)]
    return x, np.ones((n, 1), dtype="float32")


def generate_latent_points(latent_dim, n, rng):
    return rng.standard_normal((n, latent_dim)).astype("float32")


def generate_fake_samples(g_model, latent_dim, n, rng):
    x = g_model.predict(generate_latent_points(latent_dim, n, rng), verbose=0)
    return x, np.zeros((n, 1), dtype="float32")


class GAN:
    def __init__(self, dataset, seed=0, latent_dim=LATENT_DIM, n_batch=N_BATCH, lr=2e-4, b1=0.5):
        keras.utils.set_random_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.dataset, self.latent_dim, self.n_batch = dataset, latent_dim, n_batch
        self.d_model = define_discriminator(lr, b1)
        self.g_model = define_generator(latent_dim)
        self.gan_model = define_gan(self.g_model, self.d_model, lr, b1)

    def step(self):
        """One step: D on half a batch of reals + half a batch of fakes, then G via the stack."""
        half = self.n_batch // 2
        x_real, y_real = generate_real_samples(self.dataset, half, self.rng)
        x_fake, y_fake = generate_fake_samples(self.g_model, self.latent_dim, half, self.rng)
        x, y = np.vstack((x_real, x_fake)), np.vstack((y_real, y_fake))
        # Keras 3 reads `trainable` when it traces a train function (on first use, not at
        # compile time as Keras 2 did), so D is unfrozen for its own update and frozen for G's.
        self.d_model.trainable = True
        d_loss, _ = self.d_model.train_on_batch(x, y)
        self.d_model.trainable = False
        x_gan = generate_latent_points(self.latent_dim, self.n_batch, self.rng)
        g_loss = self.gan_model.train_on_batch(x_gan, np.ones((self.n_batch, 1), "float32"))
        return float(d_loss), float(g_loss), half


def set_threads(n: int) -> None:
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)


def train(args, gan: GAN) -> None:
    print(
        f"generator {gan.g_model.count_params():,} params, output {gan.g_model.output_shape}; "
        f"discriminator {gan.d_model.count_params():,} params",
        flush=True,
    )
    bat_per_epo = gan.dataset.shape[0] // gan.n_batch
    step = 0
    for epoch in range(args.epochs):
        start = time.perf_counter()
        for j in range(bat_per_epo):
            d_loss, g_loss, _ = gan.step()
            step += 1
            if step % args.log_every == 0 or step == args.steps:
                print(f">{epoch + 1}, {j + 1}/{bat_per_epo}, d={d_loss:.3f}, g={g_loss:.3f}")
            if args.steps and step >= args.steps:
                break
        print(f"epoch {epoch + 1}: {time.perf_counter() - start:.1f} s", flush=True)
        if args.steps and step >= args.steps:
            break
    x_real, _ = generate_real_samples(gan.dataset, 100, gan.rng)
    x_fake, _ = generate_fake_samples(gan.g_model, gan.latent_dim, 100, gan.rng)
    p_real = gan.d_model.predict(x_real, verbose=0)
    p_fake = gan.d_model.predict(x_fake, verbose=0)
    print(
        f">Accuracy real: {100 * np.mean(p_real > 0.5):.0f}%, "
        f"fake: {100 * np.mean(p_fake <= 0.5):.0f}%"
    )


def time_steps(args, gan: GAN) -> dict:
    """Throughput over `time_steps` steps after `warmup`: real images consumed per second."""
    for _ in range(args.warmup):
        gan.step()
    times, n_real = [], 0
    start = time.perf_counter()
    for _ in range(args.time_steps):
        t = time.perf_counter()
        n_real += gan.step()[2]  # train_on_batch returns numpy values: the step has finished
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    return {
        "design": "B",
        "framework": "tensorflow",
        "tf": tf.__version__,
        "keras": keras.__version__,
        "images_per_s": round(n_real / total, 1),
        "step_s_median": round(statistics.median(times), 5),
        "real_images_per_step": gan.n_batch // 2,
        "steps": args.time_steps,
        "warmup": args.warmup,
        "threads": args.threads,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=0, help="stop after N steps (0: no limit)")
    p.add_argument("--time-steps", type=int, default=0, help="timing mode: time N steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    p.add_argument("--threads", type=int, default=2, help="TF intra- and inter-op threads")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    set_threads(args.threads)
    gan = GAN(load_real_samples(), seed=args.seed)
    if args.time_steps:
        print(json.dumps(time_steps(args, gan)), flush=True)
    else:
        train(args, gan)


if __name__ == "__main__":
    main()
