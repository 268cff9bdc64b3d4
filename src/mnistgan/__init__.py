"""mnistgan: train, evaluate and sample GANs for handwritten digits.

from mnistgan import load_generator
g = load_generator("runs/NAME")
x = g.sample(16)          # (16, 28, 28) uint8 tensor
"""

__version__ = "0.1.0"

from .config import PRESETS, Config, resolve  # noqa: E402
from .sample import load_generator  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["Config", "PRESETS", "resolve", "load_generator", "train", "__version__"]
