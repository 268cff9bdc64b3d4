"""Reference A ("TF DCGAN") as plain TensorFlow, written from /work/shared/SEEDS.md.

The TensorFlow DCGAN tutorial's way of training: a tf.data pipeline of shuffled batches of 256,
one @tf.function step with two GradientTapes (D and G both from one generator forward pass),
Adam 1e-4, binary cross-entropy, non-saturating G loss.

    python ref_a_tf.py --epochs 1                    # train (prints time per epoch)
    python ref_a_tf.py --steps 20                    # stop after 20 steps
    python ref_a_tf.py --time-steps 30 --warmup 5    # one JSON line of throughput

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

BATCH = 256
NOISE_DIM = 100
SLOPE_G = 0.02  # the generator's LeakyReLU slope as SEEDS.md states it
CACHE = Path.home() / ".cache" / "mnistgan" / "mnist.npz"


def load_images() -> np.ndarray:
    """The 60,000 training images, 28x28x1 float32 scaled to [-1, 1]."""
    with np.load(CACHE) as f:
        x = f["x_train"]
    return ((x.reshape(-1, 28, 28, 1).astype("float32") - 127.5) / 127.5).astype("float32")


def make_generator() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((NOISE_DIM,)),
            layers.Dense(7 * 7 * 256, use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(SLOPE_G),
            layers.Reshape((7, 7, 256)),
            layers.Conv2DTranspose(128, 5, strides=1, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(SLOPE_G),
            layers.Conv2DTranspose(64, 5, strides=2, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(SLOPE_G),
            layers.Conv2DTranspose(1, 5, strides=2, padding="same", use_bias=False),
            layers.Activation("tanh"),
        ],
        name="generator",
    )


def make_discriminator() -> keras.Model:
    block = []
    for filters, drop in ((64, 0.3), (128, 0.3), (256, 0.4)):
        block += [
            layers.Conv2D(filters, 3, strides=2, padding="same"),
            layers.BatchNormalization(),
            layers.LeakyReLU(0.2),
            layers.Dropout(drop),
        ]
    return keras.Sequential(
        [keras.Input((28, 28, 1)), *block, layers.Flatten(), layers.Dense(1, activation="sigmoid")],
        name="discriminator",
    )


def set_threads(n: int) -> None:
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)


def build(seed: int):
    tf.random.set_seed(seed)
    generator, discriminator = make_generator(), make_discriminator()
    bce = keras.losses.BinaryCrossentropy()
    g_opt, d_opt = keras.optimizers.Adam(1e-4), keras.optimizers.Adam(1e-4)

    @tf.function
    def train_step(images):
        noise = tf.random.normal([BATCH, NOISE_DIM])
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            generated = generator(noise, training=True)
            real_out = discriminator(images, training=True)
            fake_out = discriminator(generated, training=True)
            gen_loss = bce(tf.ones_like(fake_out), fake_out)  # non-saturating
            disc_loss = bce(tf.ones_like(real_out), real_out) + bce(
                tf.zeros_like(fake_out), fake_out
            )
        g_grads = gen_tape.gradient(gen_loss, generator.trainable_variables)
        d_grads = disc_tape.gradient(disc_loss, discriminator.trainable_variables)
        g_opt.apply_gradients(zip(g_grads, generator.trainable_variables, strict=True))
        d_opt.apply_gradients(zip(d_grads, discriminator.trainable_variables, strict=True))
        return disc_loss, gen_loss

    return generator, discriminator, train_step


def dataset(x: np.ndarray, seed: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(x).shuffle(60000, seed=seed).batch(BATCH)


def train(args, x, generator, discriminator, train_step) -> None:
    print(
        f"generator {generator.count_params():,} params, output {generator.output_shape}; "
        f"discriminator {discriminator.count_params():,} params",
        flush=True,
    )
    ds = dataset(x, args.seed)
    step = 0
    for epoch in range(args.epochs):
        start = time.perf_counter()
        for images in ds:
            d_loss, g_loss = train_step(images)
            step += 1
            if step % args.log_every == 0 or step == args.steps:
                print(f"step {step}: d_loss {float(d_loss):.4f} g_loss {float(g_loss):.4f}")
            if args.steps and step >= args.steps:
                break
        print(f"Time for epoch {epoch + 1} is {time.perf_counter() - start:.1f} sec", flush=True)
        if args.steps and step >= args.steps:
            break


def time_steps(args, x, train_step) -> dict:
    """Throughput over `time_steps` steps after `warmup`: real images consumed per second."""
    it = iter(dataset(x, args.seed).repeat())
    for _ in range(args.warmup):
        float(train_step(next(it))[0])
    times, n_real = [], 0
    start = time.perf_counter()
    for _ in range(args.time_steps):
        t = time.perf_counter()
        images = next(it)
        d_loss, _ = train_step(images)
        float(d_loss)  # wait for the step's result
        times.append(time.perf_counter() - t)
        n_real += int(images.shape[0])
    total = time.perf_counter() - start
    return {
        "design": "A",
        "framework": "tensorflow",
        "tf": tf.__version__,
        "images_per_s": round(n_real / total, 1),
        "step_s_median": round(statistics.median(times), 5),
        "real_images_per_step": BATCH,
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
    x = load_images()
    generator, discriminator, train_step = build(args.seed)
    if args.time_steps:
        print(json.dumps(time_steps(args, x, train_step)), flush=True)
    else:
        train(args, x, generator, discriminator, train_step)


if __name__ == "__main__":
    main()
