"""Both references layer for layer: parameter counts, shapes, output ranges, recipes."""

import pytest
import torch

from mnistgan.config import PRESETS
from mnistgan.models import (
    build_discriminator,
    build_generator,
    keras_param_count,
    output_range,
)


@pytest.mark.parametrize(
    "arch, g_params, d_params",
    [("tf-dcgan", 2_330_944, 375_553), ("keras-dcgan", 1_164_289, 40_705)],
)
def test_reference_parameter_counts(arch, g_params, d_params):
    assert keras_param_count(build_generator(arch, 100)) == g_params
    assert keras_param_count(build_discriminator(arch)) == d_params


def test_tf_dcgan_generator_size_in_mb():
    # SEEDS.md: 8.89 MB for G and 1.43 MB for D, as float32 (Keras counts MiB).
    g = keras_param_count(build_generator("tf-dcgan", 100)) * 4 / 2**20
    d = keras_param_count(build_discriminator("tf-dcgan")) * 4 / 2**20
    assert round(g, 2) == 8.89 and round(d, 2) == 1.43


@pytest.mark.parametrize("arch", ["tf-dcgan", "keras-dcgan", "fast"])
def test_shapes_and_output_range(arch):
    torch.manual_seed(0)
    G, D = build_generator(arch, 100), build_discriminator(arch)
    x = G(torch.randn(8, 100) * 5)  # large noise pushes outputs to their limits
    assert x.shape == (8, 1, 28, 28)
    lo = -1.0 if output_range(arch) == "tanh" else 0.0
    assert x.min() >= lo and x.max() <= 1.0
    assert (x < 0).any() == (lo < 0)
    assert D(x).shape == (8, 1)


def test_tf_dcgan_recipe():
    c = PRESETS["tf-dcgan"]
    assert (c.batch_size, c.epochs, c.lr_g, c.lr_d) == (256, 100, 1e-4, 1e-4)
    assert (c.beta1, c.beta2, c.loss, c.schedule) == (0.9, 0.999, "ns", "joint")
    assert (c.real_sampling, c.half_batch_d) == ("epoch", False)
    assert (c.sample_every, c.grid_size, c.checkpoint_every) == (1, 4, 15)
    assert c.latent_dim == 100 and output_range(c.arch) == "tanh"


def test_keras_dcgan_recipe():
    c = PRESETS["keras-dcgan"]
    assert (c.batch_size, c.epochs, c.lr_g, c.lr_d) == (256, 100, 2e-4, 2e-4)
    assert (c.beta1, c.loss, c.schedule) == (0.5, "ns", "alternating")
    assert (c.real_sampling, c.half_batch_d) == ("random", True)
    assert (c.sample_every, c.grid_size, c.export_every) == (10, 10, 10)
    assert c.latent_dim == 100 and output_range(c.arch) == "sigmoid"


def test_layer_hyperparameters_of_references():
    g = build_generator("tf-dcgan", 100)
    slopes = {m.negative_slope for m in g.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.02}
    d = build_discriminator("tf-dcgan")
    drops = [m.p for m in d.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.3, 0.3, 0.4]
    bns = [m for m in d.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(b.eps == 1e-3 and b.momentum == 0.01 for b in bns)  # Keras' defaults
    d = build_discriminator("keras-dcgan")
    assert [m.p for m in d.modules() if isinstance(m, torch.nn.Dropout)] == [0.4, 0.4]
