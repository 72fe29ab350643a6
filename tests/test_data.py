"""Tests of the dataset layer (minibnn.data): readers, validation, splits, fetch.

Everything runs on tiny synthetic files written to tmp_path, except the tests
at the end that need the real files: they run only when MINIBNN_DATA points at
a folder holding mnist/ and/or cifar-10-batches-bin/ (CI sets it) and are
skipped otherwise. No test touches the network.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import tarfile
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from minibnn import data as mdata
from minibnn.data import (
    DataError,
    Dataset,
    data_dir,
    load_cifar10,
    load_cifar10_raw,
    load_dataset,
    load_mnist,
    load_mnist_raw,
    load_sample,
    load_sample_raw,
    load_svhn,
    load_svhn_raw,
    read_cifar10_batch,
    read_idx,
    read_idx_images,
    read_idx_labels,
    read_svhn_mat,
)
from minibnn.data import fetch, readers
from minibnn.data.catalog import DATASETS, is_dataset_spec

# The real opener, kept before the autouse fixture below swaps in an offline one.
REAL_URLOPEN = fetch.urlopen
from minibnn.data.preprocess import apply_zca, fit_zca, global_contrast_normalize, scale_to_pm1

ROOT = Path(__file__).resolve().parents[1]
MNIST_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
CIFAR_NAMES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


# ---------------------------------------------------------------- file writers

def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | arr.ndim
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def write(path: Path, payload: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def cifar_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    rec = np.concatenate([y.astype(np.uint8)[:, None],
                          x.astype(np.uint8).reshape(len(y), -1)], axis=1)
    return rec.tobytes()


def rand_images(rng, n, shape=(28, 28)):
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def make_mnist(root: Path, n_train=30, n_test=12, gz=True, seed=0, sub="mnist"):
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rand_images(rng, n_train),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rand_images(rng, n_test),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for name, a in arrays.items():
        write(root / sub / (name + (".gz" if gz else "")), idx_bytes(a), gz)
    return arrays


def make_cifar(root: Path, n_batch=4, n_test=5, seed=0, meta=True):
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-bin"
    out = {}
    for name in CIFAR_NAMES:
        n = n_test if name == "test_batch.bin" else n_batch
        x = rand_images(rng, n, (3, 32, 32))
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write(d / name, cifar_bytes(x, y))
        out[name] = (x, y)
    if meta:
        (d / "batches.meta.txt").write_text("\n".join(
            ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
             "ship", "truck"]) + "\n\n")
    return out


def write_mat(path: Path, X, y):
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": X, "y": y})
    return path


def make_svhn(root: Path, n_train=40, n_test=6, n_extra=0, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    names = [("train_32x32.mat", n_train), ("test_32x32.mat", n_test)]
    if n_extra:
        names.append(("extra_32x32.mat", n_extra))
    for name, n in names:
        X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1), dtype=np.uint8)
        write_mat(root / "svhn" / name, X, y)
        out[name] = (X, y)
    return out


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    # Synthetic tests must never see CI's real-data MINIBNN_DATA or a
    # user's home directory.
    monkeypatch.delenv("MINIBNN_DATA", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    # ... and never the network: load_dataset now fetches missing data itself.
    # Tests of the download path patch fetch.urlopen again (file:// or fakes).
    def offline(req, timeout=None):
        raise urllib.error.URLError(OSError(101, "Network is unreachable (test)"))
    monkeypatch.setattr(fetch, "urlopen", offline)


# ---------------------------------------------------------------- IDX reader

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip_exact(tmp_path, gz, suffix):
    # Compression is detected from content, so both names work for both forms.
    rng = np.random.default_rng(1)
    imgs = rand_images(rng, 7, (5, 4))
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    pi = write(tmp_path / f"imgs{suffix}", idx_bytes(imgs), gz)
    pl = write(tmp_path / f"labels{suffix}", idx_bytes(labels), gz)
    got = read_idx_images(pi)
    assert got.dtype == np.uint8 and got.shape == (7, 5, 4)
    np.testing.assert_array_equal(got, imgs)
    np.testing.assert_array_equal(read_idx_labels(pl), labels)
    assert got.flags.writeable and got.flags.c_contiguous


@pytest.mark.parametrize("gz", [False, True])
def test_idx_wrong_magic(tmp_path, gz):
    labels = np.arange(10, dtype=np.uint8)
    p = write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(labels), gz)
    with pytest.raises(DataError, match="magic") as e:
        read_idx_images(p)  # a labels file (2049) given to the images reader
    assert "train-labels-idx1-ubyte" in str(e.value) and "2051" in str(e.value)
    q = write(tmp_path / "junk.idx", b"PK\x03\x04" + bytes(20), gz)
    with pytest.raises(DataError, match="not an IDX file") as e:
        read_idx(q)
    assert "junk.idx" in str(e.value)


def test_idx_non_ubyte_type(tmp_path):
    p = write(tmp_path / "f.idx", (0x0D01).to_bytes(4, "big") + (2).to_bytes(4, "big")
              + bytes(8))
    with pytest.raises(DataError, match="element type"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_is_an_error_not_a_short_dataset(tmp_path, gz):
    imgs = rand_images(np.random.default_rng(2), 6, (4, 4))
    full = idx_bytes(imgs)
    p = write(tmp_path / "t10k-images-idx3-ubyte", full[:-5], gz)
    with pytest.raises(DataError, match="truncated") as e:
        read_idx_images(p)
    assert "t10k-images-idx3-ubyte" in str(e.value)
    # cut inside the header
    p = write(tmp_path / "short", full[:10], gz)
    with pytest.raises(DataError, match="truncated"):
        read_idx_images(p)


def test_idx_truncated_gzip_stream(tmp_path):
    payload = gzip.compress(idx_bytes(rand_images(np.random.default_rng(3), 50)))
    p = write(tmp_path / "train-images-idx3-ubyte.gz", payload[:len(payload) // 2])
    with pytest.raises(DataError, match="truncated") as e:
        read_idx_images(p)
    assert "train-images-idx3-ubyte.gz" in str(e.value)


def test_idx_header_promising_huge_data_fails_before_allocating(tmp_path):
    head = (2051).to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in (4_000_000_000, 28, 28))
    for gz in (False, True):
        p = write(tmp_path / f"huge{int(gz)}", head + bytes(100), gz)
        with pytest.raises(DataError, match="truncated"):
            read_idx_images(p)


def test_idx_trailing_bytes(tmp_path):
    p = write(tmp_path / "labels", idx_bytes(np.zeros(5, np.uint8)) + b"\x00")
    with pytest.raises(DataError, match="trailing"):
        read_idx_labels(p)


def test_idx_label_out_of_range(tmp_path):
    p = write(tmp_path / "train-labels-idx1-ubyte.gz",
              idx_bytes(np.array([0, 3, 10, 2], np.uint8)), gz=True)
    with pytest.raises(DataError, match=r"label 10 at index 2") as e:
        read_idx_labels(p)
    assert "train-labels-idx1-ubyte.gz" in str(e.value)
    assert read_idx_labels(p, n_classes=None).tolist() == [0, 3, 10, 2]


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx_images(tmp_path / "nope")


# ---------------------------------------------------------------- checksum policy

def test_checksum_enforced_only_for_known_name_and_size(tmp_path):
    # Same name and size as the real t10k labels, different bytes: rejected.
    fake = idx_bytes(np.zeros(10_000, np.uint8))
    assert len(fake) == readers.MNIST_FILES["t10k-labels-idx1-ubyte"][0]
    p = write(tmp_path / "a" / "t10k-labels-idx1-ubyte.gz", fake, gz=True)
    with pytest.raises(DataError, match="SHA-256") as e:
        read_idx_labels(p)
    assert "t10k-labels-idx1-ubyte" in str(e.value)
    assert read_idx_labels(p, verify_checksum=False).shape == (10_000,)
    # Same bytes under another name, or the known name with another size: accepted.
    assert read_idx_labels(write(tmp_path / "other-name", fake)).shape == (10_000,)
    small = write(tmp_path / "b" / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(9, np.uint8)))
    assert read_idx_labels(small).shape == (9,)


def test_cifar_checksum_enforced_for_full_size_batch(tmp_path):
    n = readers.CIFAR10_BATCH_RECORDS
    p = write(tmp_path / "data_batch_3.bin", bytes(n * readers.CIFAR10_RECORD_BYTES))
    with pytest.raises(DataError, match="SHA-256") as e:
        read_cifar10_batch(p)
    assert "data_batch_3.bin" in str(e.value)
    x, y = read_cifar10_batch(p, verify_checksum=False, expected_records=n)
    assert x.shape == (n, 3, 32, 32) and not y.any()


# ---------------------------------------------------------------- CIFAR reader

def test_cifar_batch_exact(tmp_path):
    rng = np.random.default_rng(4)
    x = rand_images(rng, 3, (3, 32, 32))
    y = np.array([9, 0, 5], np.uint8)
    p = write(tmp_path / "data_batch_1.bin", cifar_bytes(x, y))
    gx, gy = read_cifar10_batch(p)
    assert gx.dtype == np.uint8 and gx.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)
    # record layout: label byte, then the R plane row-major, then G, then B
    raw = p.read_bytes()
    assert raw[0] == 9 and raw[1] == x[0, 0, 0, 0] and raw[2] == x[0, 0, 0, 1]
    assert raw[1 + 1024] == x[0, 1, 0, 0] and raw[3073 + 1 + 2048 + 33] == x[1, 2, 1, 1]


def test_cifar_batch_errors(tmp_path):
    rng = np.random.default_rng(5)
    x = rand_images(rng, 2, (3, 32, 32))
    good = cifar_bytes(x, np.array([1, 2], np.uint8))
    p = write(tmp_path / "data_batch_2.bin", good[:-1])
    with pytest.raises(DataError, match="not a multiple of the 3073") as e:
        read_cifar10_batch(p)
    assert "data_batch_2.bin" in str(e.value)
    p = write(tmp_path / "test_batch.bin", b"")
    with pytest.raises(DataError, match="empty"):
        read_cifar10_batch(p)
    p = write(tmp_path / "bad_label.bin", cifar_bytes(x, np.array([1, 10], np.uint8)))
    with pytest.raises(DataError, match="label 10 at index 1"):
        read_cifar10_batch(p)
    p = write(tmp_path / "two.bin", good)
    with pytest.raises(DataError, match="2 records, expected 10000"):
        read_cifar10_batch(p, expected_records=10_000)
    with pytest.raises(DataError, match="not found"):
        read_cifar10_batch(tmp_path / "missing.bin")


# ---------------------------------------------------------------- SVHN reader

def test_svhn_mat_exact_and_label_10_is_digit_0(tmp_path):
    rng = np.random.default_rng(6)
    X = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    y = np.array([[10], [1], [9], [10]], np.uint8)
    p = write_mat(tmp_path / "train_32x32.mat", X, y)
    x, labels = read_svhn_mat(p)
    assert x.dtype == np.uint8 and x.shape == (4, 3, 32, 32) and x.flags.c_contiguous
    np.testing.assert_array_equal(x, X.transpose(3, 2, 0, 1))
    assert x[2, 1, 5, 7] == X[5, 7, 1, 2]
    assert labels.dtype == np.uint8 and labels.tolist() == [0, 1, 9, 0]


@pytest.mark.parametrize("case,match", [
    ("x_shape", r"X has shape \(32, 32, 4, 3\)"),
    ("x_dtype", "X has dtype"),
    ("y_shape", r"y has shape \(2, 1\)"),
    ("label0", r"label 0 at index 0 is outside 1\.\.10"),
    ("label11", "label 11"),
    ("missing_y", "'y' missing"),
    ("not_mat", "not a readable .mat"),
])
def test_svhn_mat_errors(tmp_path, case, match):
    X = np.zeros((32, 32, 3, 3), np.uint8)
    y = np.ones((3, 1), np.uint8)
    p = tmp_path / "test_32x32.mat"
    if case == "x_shape":
        write_mat(p, np.zeros((32, 32, 4, 3), np.uint8), y)
    elif case == "x_dtype":
        write_mat(p, X.astype(np.float64), y)
    elif case == "y_shape":
        write_mat(p, X, y[:2])
    elif case == "label0":
        write_mat(p, X, y * 0)
    elif case == "label11":
        write_mat(p, X, y * 11)
    elif case == "missing_y":
        scipy.io.savemat(p, {"X": X})
    else:
        p.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(DataError, match=match) as e:
        read_svhn_mat(p)
    assert "test_32x32.mat" in str(e.value)


# ---------------------------------------------------------------- loaders

@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_raw_and_dataset(tmp_path, gz):
    arrays = make_mnist(tmp_path, n_train=30, n_test=12, gz=gz)
    xtr, ytr, xte, yte = load_mnist_raw(tmp_path, strict=False)
    assert xtr.shape == (30, 1, 28, 28) and xtr.dtype == np.uint8
    np.testing.assert_array_equal(xtr[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(yte, arrays["t10k-labels-idx1-ubyte"])

    ds = load_mnist(tmp_path, n_val=8, strict=False)
    assert isinstance(ds, Dataset) and ds.name == "mnist"
    assert ds.input_shape == (1, 28, 28) and ds.n_classes == 10
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (22, 8, 12)
    for x, y in [(ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)]:
        assert x.dtype == np.float32 and x.shape[1:] == (1, 28, 28)
        assert y.dtype == np.int64 and len(x) == len(y)
        assert x.min() >= -1.0 and x.max() <= 1.0
    # validation is the *last* n_val training images, in order
    np.testing.assert_array_equal(ds.y_val, ytr[-8:])
    np.testing.assert_allclose(ds.x_val, 2 * xtr[-8:].astype(np.float64) / 255 - 1, atol=1e-6)
    np.testing.assert_allclose(ds.x_train, 2 * xtr[:22].astype(np.float64) / 255 - 1, atol=1e-6)
    assert "train=22" in repr(ds)


def test_load_mnist_strict_rejects_small_set(tmp_path):
    make_mnist(tmp_path)
    with pytest.raises(DataError, match="strict=False"):
        load_mnist(tmp_path)


def test_mnist_count_mismatch_names_both_files(tmp_path):
    make_mnist(tmp_path, gz=False)
    write(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(11, np.uint8)))
    with pytest.raises(DataError, match="12 images but") as e:
        load_mnist_raw(tmp_path, strict=False)
    assert "t10k-images-idx3-ubyte" in str(e.value)
    assert "t10k-labels-idx1-ubyte" in str(e.value)


def test_mnist_files_directly_in_data_dir_and_plain_preferred(tmp_path):
    arrays = make_mnist(tmp_path, sub=".", gz=True, seed=1)
    xtr, *_ = load_mnist_raw(tmp_path, strict=False)
    np.testing.assert_array_equal(xtr[:, 0], arrays["train-images-idx3-ubyte"])
    other = rand_images(np.random.default_rng(9), 30)
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(other))
    xtr, *_ = load_mnist_raw(tmp_path, strict=False)
    np.testing.assert_array_equal(xtr[:, 0], other)


def test_missing_files_error_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as e:
        load_mnist(tmp_path / "empty")
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and str(tmp_path / "empty" / "mnist") in msg
    assert "fetch_mnist.py" in msg and "--from" in msg and "MINIBNN_DATA" in msg
    make_mnist(tmp_path)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as e:
        load_mnist(tmp_path, strict=False)
    assert str(tmp_path / "mnist") in str(e.value)
    with pytest.raises(DataError, match="fetch_cifar10.py"):
        load_cifar10(tmp_path)
    with pytest.raises(DataError, match="fetch_svhn.py"):
        load_svhn(tmp_path)


def test_load_cifar10(tmp_path):
    batches = make_cifar(tmp_path, n_batch=4, n_test=5)
    xtr, ytr, xte, yte, names = load_cifar10_raw(tmp_path, strict=False)
    assert xtr.shape == (20, 3, 32, 32) and names[0] == "airplane" and len(names) == 10
    np.testing.assert_array_equal(xtr[4:8], batches["data_batch_2.bin"][0])
    np.testing.assert_array_equal(yte, batches["test_batch.bin"][1])
    ds = load_dataset("cifar10", tmp_path, strict=False, n_val=6)
    assert ds.input_shape == (3, 32, 32) and ds.class_names[-1] == "truck"
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (14, 6, 5)
    assert ds.x_train.dtype == np.float32 and ds.x_train.shape[1:] == (3, 32, 32)
    assert -1 <= ds.x_train.min() and ds.x_val.max() <= 1
    np.testing.assert_array_equal(ds.y_val, ytr[14:])
    with pytest.raises(DataError, match="4 records, expected 10000"):
        load_cifar10(tmp_path)  # strict by default


def test_load_cifar10_bad_meta(tmp_path):
    make_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-bin" / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match="batches.meta.txt: expected 10 class names"):
        load_cifar10_raw(tmp_path, strict=False)


def test_load_svhn(tmp_path):
    files = make_svhn(tmp_path, n_train=40, n_test=6, n_extra=5)
    ds = load_svhn(tmp_path, strict=False)
    # 5 % of 40 = 2 validation images, from the end of train
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (38, 2, 6)
    assert ds.input_shape == (3, 32, 32) and ds.y_train.dtype == np.int64
    assert set(np.unique(ds.y_test)) <= set(range(10))
    np.testing.assert_array_equal(ds.y_val, files["train_32x32.mat"][1][-2:, 0] % 10)
    ex = load_dataset("svhn", tmp_path, strict=False, extra=True)
    assert (len(ex.x_train), len(ex.x_val)) == (43, 2)
    np.testing.assert_array_equal(ex.x_val, ds.x_val)
    raw = load_svhn_raw(tmp_path, extra=True, strict=False)
    assert raw[4].shape == (5, 3, 32, 32)
    with pytest.raises(DataError, match="MD5"):
        load_svhn(tmp_path)  # strict: the tiny files are not the published ones


def test_limit_train_and_bad_args(tmp_path):
    make_mnist(tmp_path, n_train=30)
    ds = load_dataset("MNIST", tmp_path, limit_train=5, strict=False, n_val=10)
    assert (len(ds.x_train), len(ds.y_train), len(ds.x_val)) == (5, 5, 10)
    with pytest.raises(ValueError, match="n_val"):
        load_mnist(tmp_path, strict=False)  # default n_val=10000 > 30 images
    with pytest.raises(ValueError, match="limit_train"):
        load_mnist(tmp_path, strict=False, n_val=3, limit_train=0)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


# ---------------------------------------------------------------- preprocessing

def test_scale_to_pm1_exact_endpoints():
    x = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    y = scale_to_pm1(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y.min() == -1.0 and y.max() == 1.0
    np.testing.assert_allclose(y.ravel(), 2 * np.arange(256) / 255 - 1, atol=1e-6)


def test_gcn_and_zca():
    rng = np.random.default_rng(7)
    mix = rng.normal(size=(12, 12))
    x = (rng.normal(size=(600, 12)) @ mix * 20 + 100).reshape(600, 3, 2, 2)
    g = global_contrast_normalize(x)
    flat = g.reshape(600, -1)
    assert g.dtype == np.float32 and np.allclose(flat.mean(axis=1), 0, atol=1e-4)
    mean, w = fit_zca(g, bias=1e-6)
    assert w.shape == (12, 12) and np.allclose(w, w.T, atol=1e-4)
    z = apply_zca(g, mean, w).reshape(600, -1).astype(np.float64)
    cov = np.cov(z, rowvar=False, bias=True)
    # GCN removes one dimension (rows sum to 0), so the spectrum is 11 ones + one 0.
    eig = np.sort(np.linalg.eigvalsh(cov))
    np.testing.assert_allclose(eig[1:], 1.0, atol=2e-2)
    assert eig[0] < 1e-2


def test_cifar_zca_option_fits_on_train(tmp_path):
    make_cifar(tmp_path, n_batch=8, n_test=5, meta=False)
    ds = load_cifar10(tmp_path, strict=False, n_val=10, zca=True)
    assert ds.preprocessing == "gcn+zca" and ds.class_names[0] == "airplane"
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert x.dtype == np.float32 and x.shape[1:] == (3, 32, 32)
        assert np.isfinite(x).all()
    assert abs(float(ds.x_train.mean())) < 1e-3  # centred by the train mean


# ---------------------------------------------------------------- embedded sample

def test_sample():
    path = Path(mdata.__file__).with_name("mnist_sample.npz")
    assert path.stat().st_size < 1.5e6
    with np.load(path, allow_pickle=False) as z:
        assert {"x_train", "y_train", "x_test", "y_test", "attribution"} <= set(z.files)
    xtr, ytr, xte, yte, attribution = load_sample_raw()
    assert xtr.shape == (3000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.uint8
    assert "LeCun" in attribution and "CC BY-SA 3.0" in attribution
    assert "3000" in attribution and "1000" in attribution
    # the first training labels of MNIST
    assert ytr[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert set(np.unique(ytr)) == set(range(10))
    ds = load_dataset("sample")
    assert ds.name == "sample" and ds.input_shape == (1, 28, 28)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (2500, 500, 1000)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() == -1.0 and ds.x_train.max() == 1.0
    np.testing.assert_array_equal(ds.y_val, ytr[2500:])
    assert len(load_sample(limit_train=100).x_train) == 100


# ---------------------------------------------------------------- data_dir

def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".minibnn" / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "minibnn"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/xdg")  # invalid per the spec: ignored
    assert data_dir() == tmp_path / "home" / ".minibnn" / "data"
    monkeypatch.setenv("MINIBNN_DATA", "")  # empty means unset
    assert data_dir() == tmp_path / "home" / ".minibnn" / "data"
    monkeypatch.setenv("MINIBNN_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert data_dir("~/x") == tmp_path / "home" / "x"
    assert data_dir("rel").is_absolute()


def test_loaders_use_env_data_dir(tmp_path, monkeypatch):
    arrays = make_mnist(tmp_path / "env", n_train=12, n_test=3)
    monkeypatch.setenv("MINIBNN_DATA", str(tmp_path / "env"))
    ds = load_dataset("mnist", strict=False, n_val=2)
    assert len(ds.x_test) == 3
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    with pytest.raises(DataError):  # the argument wins over the env
        load_dataset("mnist", tmp_path / "elsewhere", strict=False, n_val=2)


# ---------------------------------------------------------------- fetch

@pytest.fixture
def tiny_known(monkeypatch):
    """Make the fetch module's checksum tables describe tiny synthetic files."""
    def patch_mnist(arrays):
        table = {n: (0, hashlib.sha256(idx_bytes(a)).hexdigest()) for n, a in arrays.items()}
        monkeypatch.setattr(fetch, "MNIST_FILES", table)

    def patch_cifar(root):
        d = root / "cifar-10-batches-bin"
        table = {n: (0, fetch.sha256_file(d / n)) for n in CIFAR_NAMES}
        monkeypatch.setattr(fetch, "CIFAR10_FILES", table)

    def patch_svhn(root):
        table = {n: (0, fetch.md5_file(root / "svhn" / n)) for n in
                 ("train_32x32.mat", "test_32x32.mat")}
        table["extra_32x32.mat"] = (0, "0" * 32)
        monkeypatch.setattr(fetch, "SVHN_FILES", table)
    return patch_mnist, patch_cifar, patch_svhn


def no_part_files(d: Path) -> bool:
    # temporaries of minibnn.fileio (and the .part names of earlier versions)
    return not any(p.name.endswith(".part") or p.name.startswith(".tmp-")
                   for p in d.rglob("*"))


@pytest.mark.parametrize("gz", [True, False])
def test_fetch_mnist_from_local_copy(tmp_path, tiny_known, gz, capsys):
    src = tmp_path / "src"
    arrays = make_mnist(src, gz=gz, sub=".")
    tiny_known[0](arrays)
    dest = tmp_path / "data"
    assert fetch.main("mnist", ["--data-dir", str(dest), "--from", str(src)]) == 0
    suffix = ".gz" if gz else ""
    for name in MNIST_NAMES:
        assert (dest / "mnist" / (name + suffix)).read_bytes() == \
            (src / (name + suffix)).read_bytes()
    xtr, *_ = load_mnist_raw(dest, strict=False)
    np.testing.assert_array_equal(xtr[:, 0], arrays["train-images-idx3-ubyte"])
    assert no_part_files(dest)
    # second run: nothing to do
    assert fetch.main("mnist", ["--data-dir", str(dest), "--from", str(src)]) == 0
    assert "already present" in capsys.readouterr().out


def test_fetch_rejects_corrupt_copy_atomically(tmp_path, tiny_known, capsys):
    src = tmp_path / "src"
    arrays = make_mnist(src, gz=True)
    tiny_known[0](arrays)
    # corrupt one file of the copy
    write(src / "mnist" / "t10k-labels-idx1-ubyte.gz",
          idx_bytes(np.full(12, 3, np.uint8)), gz=True)
    dest = tmp_path / "data"
    rc = fetch.main("mnist", ["--data-dir", str(dest), "--from", str(src)])
    assert rc == 1
    assert "SHA-256" in capsys.readouterr().err
    assert not (dest / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert no_part_files(dest)


def test_fetch_cifar_from_dir_and_archive(tmp_path, tiny_known):
    src = tmp_path / "src"
    batches = make_cifar(src)
    tiny_known[1](src)
    dest = tmp_path / "d1"
    assert fetch.main("cifar10", ["--data-dir", str(dest), "--from", str(src)]) == 0
    assert (dest / "cifar-10-batches-bin" / "batches.meta.txt").is_file()
    np.testing.assert_array_equal(load_cifar10_raw(dest, strict=False)[3],
                                  batches["test_batch.bin"][1])
    # the same from a .tar.gz (as distributed), with a hostile member name ignored
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
        evil = tarfile.TarInfo("../evil.txt")
        evil.size = 4
        tf.addfile(evil, io.BytesIO(b"evil"))
    dest2 = tmp_path / "d2" / "inner"
    assert fetch.main("cifar10", ["--data-dir", str(dest2), "--from", str(archive)]) == 0
    for n in CIFAR_NAMES:
        assert (dest2 / "cifar-10-batches-bin" / n).read_bytes() == \
            (src / "cifar-10-batches-bin" / n).read_bytes()
    assert not list(tmp_path.rglob("evil.txt"))
    assert no_part_files(tmp_path)


def test_fetch_svhn_from_local_copy(tmp_path, tiny_known):
    src = tmp_path / "src"
    make_svhn(src)
    tiny_known[2](src)
    dest = tmp_path / "data"
    assert fetch.main("svhn", ["--data-dir", str(dest), "--from", str(src / "svhn")]) == 0
    assert (dest / "svhn" / "train_32x32.mat").read_bytes() == \
        (src / "svhn" / "train_32x32.mat").read_bytes()
    rc = fetch.main("svhn", ["--data-dir", str(dest), "--from", str(src), "--extra"])
    assert rc == 1  # extra_32x32.mat is not in the copy


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "svhn"])
def test_fetch_network_failure_is_fast_and_clean(tmp_path, monkeypatch, capsys, dataset):
    calls = []

    def offline(req, timeout=None):
        calls.append((req.full_url, timeout))
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))
    monkeypatch.setattr(fetch, "urlopen", offline)
    dest = tmp_path / "data"
    t0 = time.perf_counter()
    rc = fetch.main(dataset, ["--data-dir", str(dest)])
    assert rc != 0 and time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert "Network is unreachable" in err and "--from" in err and "MINIBNN_DATA" in err
    assert len(calls) == 1 and calls[0][1] == fetch.DEFAULT_TIMEOUT  # no mirror storm
    assert not dest.exists() or not [p for p in dest.rglob("*") if p.is_file()]


def test_fetch_mnist_download_falls_back_to_next_mirror(tmp_path, monkeypatch, tiny_known):
    arrays = make_mnist(tmp_path / "src", gz=True)
    tiny_known[0](arrays)
    served = []

    def fake_urlopen(req, timeout=None):
        url = req.full_url
        if url.startswith(fetch.MNIST_MIRRORS[0]):
            raise urllib.error.HTTPError(url, 403, "Forbidden", {}, None)
        served.append(url)
        name = url.rsplit("/", 1)[1]
        return io.BytesIO((tmp_path / "src" / "mnist" / name).read_bytes())
    monkeypatch.setattr(fetch, "urlopen", fake_urlopen)
    dest = tmp_path / "data"
    assert fetch.main("mnist", ["--data-dir", str(dest)]) == 0
    assert len(served) == 4 and all(u.startswith(fetch.MNIST_MIRRORS[1]) for u in served)
    load_mnist_raw(dest, strict=False)
    assert no_part_files(dest)


def test_download_verify_failure_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "urlopen", lambda req, timeout=None: io.BytesIO(b"x" * 100))
    dest = tmp_path / "d" / "file.bin"

    def verify(p):
        raise DataError(f"{p}: nope")
    with pytest.raises(DataError, match="nope"):
        fetch.download("http://example.invalid/file.bin", dest, verify=verify)
    assert list(dest.parent.iterdir()) == []
    assert fetch.download("http://example.invalid/file.bin", dest).read_bytes() == b"x" * 100
    assert oct(dest.stat().st_mode & 0o777) == oct(0o644)


def test_atomic_output_keeps_old_file_on_error(tmp_path):
    dest = tmp_path / "f"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with fetch.atomic_output(dest) as f:
            f.write(b"new partial")
            raise RuntimeError("interrupted")
    assert dest.read_bytes() == b"old" and list(tmp_path.iterdir()) == [dest]


def test_fetch_scripts_are_thin_wrappers():
    for ds in ("mnist", "cifar10", "svhn"):
        text = (ROOT / "data_scripts" / f"fetch_{ds}.py").read_text()
        assert "from minibnn.data.fetch import main" in text and f'main("{ds}")' in text


def test_fetch_scripts_call_fetch_dataset_and_fashion_script_exists():
    text = (ROOT / "data_scripts" / "fetch_fashion_mnist.py").read_text()
    assert 'main("fashion-mnist")' in text
    src = Path(fetch.__file__).read_text()
    # main() is a front end of the same function `minibnn fetch` calls
    assert "folder = fetch_dataset(" in src[src.index("def main("):]


def _file_url(d: Path) -> str:
    return d.resolve().as_uri() + "/"


def test_fetch_dataset_downloads_from_file_url_with_progress(tmp_path, monkeypatch,
                                                             tiny_known, capsys):
    arrays = make_mnist(tmp_path / "src", gz=True)
    tiny_known[0](arrays)
    monkeypatch.setattr(fetch, "urlopen", REAL_URLOPEN)
    monkeypatch.setattr(fetch, "MNIST_MIRRORS", (_file_url(tmp_path / "src" / "mnist"),))
    folder = mdata.fetch_dataset("mnist", tmp_path / "data")
    assert folder == tmp_path / "data" / "mnist"
    for name in MNIST_NAMES:
        assert (folder / (name + ".gz")).read_bytes() == \
            (tmp_path / "src" / "mnist" / (name + ".gz")).read_bytes()
    out, err = capsys.readouterr()
    assert out == ""  # messages and the bar go to stderr
    # not a terminal: one progress line per finished file, with the size
    assert err.count("100%") == 4 and "train-images-idx3-ubyte.gz" in err and "\r" not in err
    assert no_part_files(tmp_path / "data")
    # second call: everything verified in place, nothing downloaded
    monkeypatch.setattr(fetch, "urlopen", lambda *a, **k: pytest.fail("downloaded again"))
    mdata.fetch_dataset("MNIST", tmp_path / "data", progress=False)
    assert capsys.readouterr().err == ""


def test_progress_bar_redraws_in_place_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    stream = Tty()
    bar = fetch._Bar("f.gz", 2_000_000, stream)
    bar.last -= 1  # due for a redraw
    bar.update(1_000_000)
    bar.update(1_000_000)  # too soon after the last redraw: not drawn
    bar.close(True)
    text = stream.getvalue()
    assert text.startswith("\rf.gz [") and " 50% " in text and "100% 2.0/2.0 MB" in text
    assert text.count("\r") == 2 and text.endswith("\n")


def test_download_short_body_is_a_network_error_and_leaves_nothing(tmp_path, monkeypatch):
    class Resp(io.BytesIO):
        headers = {"Content-Length": "100"}
    monkeypatch.setattr(fetch, "urlopen", lambda req, timeout=None: Resp(b"x" * 60))
    with pytest.raises(fetch.FetchError, match="ended after 60 of 100 bytes"):
        fetch.download("http://example.invalid/f", tmp_path / "d" / "f")
    assert list((tmp_path / "d").iterdir()) == []


def test_unresolvable_host_fails_within_the_connect_timeout(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    # a resolver that hangs (no reachable DNS server) must not hang the fetch
    monkeypatch.setattr(fetch.socket, "getaddrinfo", lambda *a, **k: time.sleep(5))
    t0 = time.perf_counter()
    with pytest.raises(urllib.error.URLError, match="could not resolve"):
        REAL_URLOPEN(fetch.Request("https://data.example.invalid/x"), timeout=0.3)
    assert time.perf_counter() - t0 < 2


def test_load_dataset_fetches_missing_data_itself(tmp_path, monkeypatch, tiny_known, capsys):
    arrays = make_mnist(tmp_path / "src", gz=True)
    tiny_known[0](arrays)
    monkeypatch.setattr(fetch, "urlopen", REAL_URLOPEN)
    monkeypatch.setattr(fetch, "MNIST_MIRRORS", (_file_url(tmp_path / "src" / "mnist"),))
    root = tmp_path / "data"
    with pytest.raises(mdata.MissingDataError, match="--no-download"):
        load_dataset("mnist", root, download=False, strict=False, n_val=2)
    assert not root.exists()
    ds = load_dataset("mnist", root, strict=False, n_val=2)
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert "not found in" in capsys.readouterr().err
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(
        n + ".gz" for n in MNIST_NAMES)


def test_load_dataset_offline_fails_fast_with_the_advice(tmp_path, capsys):
    t0 = time.perf_counter()
    with pytest.raises(mdata.MissingDataError) as e:
        load_dataset("cifar10", tmp_path / "data")  # the fixture's urlopen is offline
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    for phrase in ("Network is unreachable", "--no-download", "--from COPY",
                   "minibnn fetch cifar10", "--dataset sample", str(tmp_path / "data")):
        assert phrase in msg, phrase
    # a present but corrupt file is reported, never replaced by a download
    make_mnist(tmp_path)
    write(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", b"\x00\x00\x08\x01junk")
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path, strict=False, n_val=2)
    assert not isinstance(e.value, mdata.MissingDataError)


def test_fashion_mnist_loader_and_its_own_checksums(tmp_path, monkeypatch):
    arrays = make_mnist(tmp_path, sub="fashion-mnist", gz=True, seed=3)
    ds = load_dataset("fashion-mnist", tmp_path, strict=False, n_val=5, download=False)
    assert ds.name == "fashion-mnist" and ds.input_shape == (1, 28, 28)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    with pytest.raises(DataError, match="Fashion-MNIST file has"):
        load_dataset("fashion-mnist", tmp_path, download=False)  # strict
    # a .gz of the published size is checked by SHA-256 and MD5 of the stored bytes
    p = tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = p.read_bytes()
    table = dict(readers.FASHION_MNIST_FILES)
    table[p.name] = (len(raw), hashlib.sha256(raw).hexdigest(), "0" * 32)
    monkeypatch.setattr(readers, "FASHION_MNIST_FILES", table)
    with pytest.raises(DataError, match="MD5 mismatch for Fashion-MNIST"):
        mdata.load_fashion_mnist_raw(tmp_path, strict=False)
    table[p.name] = (len(raw), hashlib.sha256(raw).hexdigest(), hashlib.md5(raw).hexdigest())
    mdata.load_fashion_mnist_raw(tmp_path, strict=False)
    # the MNIST table (same names and sizes) is never applied to Fashion-MNIST files
    assert set(readers.FASHION_MNIST_FILES) == {n + ".gz" for n in MNIST_NAMES}


def test_fetch_fashion_mnist_download_and_plain_copy(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_mnist(src, gz=True, sub=".", seed=4)
    table = {n.name: (n.stat().st_size, fetch.sha256_file(n), fetch.md5_file(n))
             for n in src.iterdir()}
    monkeypatch.setattr(fetch, "FASHION_MNIST_FILES", table)
    monkeypatch.setattr(fetch, "urlopen", REAL_URLOPEN)
    monkeypatch.setattr(fetch, "FASHION_MNIST_MIRRORS", (_file_url(src),))
    folder = mdata.fetch_dataset("fashion-mnist", tmp_path / "d1", progress=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted(table)
    # a wrong byte: rejected, nothing left under the real name
    monkeypatch.setitem(table, "train-labels-idx1-ubyte.gz",
                        table["train-labels-idx1-ubyte.gz"][:1] + ("0" * 64, "0" * 32))
    with pytest.raises(fetch.FetchError, match="all Fashion-MNIST mirrors failed"):
        mdata.fetch_dataset("fashion-mnist", tmp_path / "d2", progress=False)
    assert not (tmp_path / "d2" / "fashion-mnist" / "train-labels-idx1-ubyte.gz").exists()
    assert no_part_files(tmp_path / "d2")
    # an uncompressed copy can only be checked structurally: the real dimensions
    plain = tmp_path / "plain"
    write(plain / "train-images-idx3-ubyte", idx_bytes(np.zeros((12, 28, 28), np.uint8)))
    with pytest.raises(DataError, match="not the expected IDX header"):
        mdata.fetch_dataset("fashion-mnist", tmp_path / "d3", source=plain, progress=False)
    assert no_part_files(tmp_path / "d3")


def test_catalog_names_and_specs():
    assert list(DATASETS) == ["mnist", "fashion-mnist", "cifar10", "svhn", "sample"]
    assert DATASETS["cifar10"].input_shape == (3, 32, 32) and not DATASETS["sample"].fetchable
    assert mdata.FETCHABLE == ("mnist", "fashion-mnist", "cifar10", "svhn")
    assert is_dataset_spec("mnist") and is_dataset_spec("Fashion_MNIST")
    assert is_dataset_spec("npz:x.npz") and not is_dataset_spec("npz:")
    assert not is_dataset_spec("imagenet") and not is_dataset_spec(None)


# ---------------------------------------------------------------- user arrays / npz

def test_from_arrays_layouts_are_exact(tmp_path):
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, (10, 3, 5, 6), dtype=np.uint8)
    y = np.arange(10) % 4
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    ds = Dataset.from_arrays(nhwc, y, nhwc[:3], y[:3], n_val=2)
    assert ds.input_shape == (3, 5, 6) and ds.x_train.flags.c_contiguous
    np.testing.assert_array_equal(ds.x_train, scale_to_pm1(nchw[:8]))
    np.testing.assert_array_equal(ds.x_val, scale_to_pm1(nchw[8:]))
    assert ds.n_classes == 4 and ds.class_names == ("0", "1", "2", "3")
    same = Dataset.from_arrays(nchw, y, nchw[:3], y[:3], n_val=2)
    np.testing.assert_array_equal(same.x_train, ds.x_train)
    gray = Dataset.from_arrays(nchw[:, 0], y, nchw[:3, 0], y[:3])  # (N, H, W)
    assert gray.input_shape == (1, 5, 6) and len(gray.x_val) == 1  # 10 % of 10
    flat = Dataset.from_arrays(np.zeros((10, 7), np.float64), y, np.ones((2, 7)), y[:2],
                               n_classes=5)
    assert flat.input_shape == (1, 1, 7) and flat.preprocessing == "as given"
    assert flat.x_test.dtype == np.float32 and flat.x_test.max() == 1.0 and flat.n_classes == 5


def test_from_arrays_explicit_val_limit_and_no_side_effects():
    x = np.zeros((6, 4, 4), np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    ds = Dataset.from_arrays(x, y, x[:2], y[:2], x_val=x[:3], y_val=y[:3].reshape(3, 1),
                             limit_train=4, class_names=["a", "b", "c"], name="mine")
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (4, 3, 2)
    assert ds.class_names == ("a", "b", "c") and ds.name == "mine"
    assert ds.y_val.dtype == np.int64 and ds.y_val.shape == (3,)
    y_bad = y.copy()
    y_bad[2] = 9
    before = y_bad.copy()
    with pytest.raises(ValueError, match="label 9"):
        Dataset.from_arrays(x, y_bad, x[:2], y[:2], class_names=["a", "b", "c"])
    np.testing.assert_array_equal(y_bad, before)


def test_npz_dataset_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)  # NHWC
    y = np.arange(12) % 3
    p = tmp_path / "mine.npz"
    np.savez_compressed(p, x_train=x, y_train=y, x_test=x[:4], y_test=y[:4],
                        x_val=x[:2], y_val=y[:2], class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(f"npz:{p}")
    assert ds.name == f"npz:{p}" and ds.input_shape == (3, 8, 8)
    assert ds.class_names == ("a", "b", "c") and len(ds.x_val) == 2
    np.testing.assert_array_equal(ds.x_train, scale_to_pm1(x.transpose(0, 3, 1, 2)))
    with pytest.raises(DataError, match="class_names"):
        np.savez(p, x_train=x, y_train=y, x_test=x, y_test=y, class_names=np.zeros(3))
        load_dataset(f"npz:{p}")


def test_mat_element_claiming_more_than_the_file_is_named(tmp_path):
    # issue 11: this used to say "variable 'y' missing from the .mat file"
    p = write_mat(tmp_path / "train_32x32.mat", np.zeros((32, 32, 3, 2), np.uint8),
                  np.array([[1], [2]], np.uint8))
    b = bytearray(p.read_bytes())
    b[132:136] = (2 ** 31).to_bytes(4, "little")
    p.write_bytes(bytes(b))
    with pytest.raises(DataError) as e:
        read_svhn_mat(p)
    msg = str(e.value)
    assert str(p) in msg and "claims 2147483648 bytes" in msg and "missing" not in msg
    # compressed files (savemat's do_compression) still read exactly
    X = np.random.default_rng(2).integers(0, 256, (32, 32, 3, 3), dtype=np.uint8)
    scipy.io.savemat(p, {"X": X, "y": np.array([[10], [1], [5]])}, do_compression=True)
    x, y = read_svhn_mat(p)
    np.testing.assert_array_equal(x, X.transpose(3, 2, 0, 1))
    assert y.tolist() == [0, 1, 5]


# ---------------------------------------------------------------- real data (MINIBNN_DATA)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# Read at import: the autouse _no_env fixture removes it before each test body.
_ENV_AT_IMPORT = os.environ.get("MINIBNN_DATA", "")


def _real(sub: str, first: str) -> Path:
    if not _ENV_AT_IMPORT:
        pytest.skip("MINIBNN_DATA not set: real-data test skipped")
    root = Path(_ENV_AT_IMPORT)
    for d in (root / sub, root):
        if (d / first).is_file() or (d / (first + ".gz")).is_file():
            return root
    pytest.skip(f"MINIBNN_DATA={root} has no {sub}/{first}: real-data test skipped")


@pytest.mark.slow
def test_real_mnist():
    root = _real("mnist", "train-images-idx3-ubyte")
    xtr, ytr, xte, yte = load_mnist_raw(root)  # strict: counts + SHA-256 enforced
    assert np.bincount(ytr, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(yte, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert round(float(xtr.mean()), 4) == 33.3184
    d = root / "mnist" if (root / "mnist").is_dir() else root
    for name, (_, sha) in readers.MNIST_FILES.items():
        p = d / name if (d / name).is_file() else d / (name + ".gz")
        assert fetch.content_sha256(p) == sha, name
    ds = load_dataset("mnist", root)
    assert (ds.x_train.shape, ds.x_val.shape, ds.x_test.shape) == (
        (50000, 1, 28, 28), (10000, 1, 28, 28), (10000, 1, 28, 28))
    assert ds.x_train.min() == -1.0 and ds.x_train.max() == 1.0
    np.testing.assert_array_equal(ds.y_val, ytr[50000:])
    # the embedded sample is exactly the head of the real files
    s = load_sample_raw()
    np.testing.assert_array_equal(s[0], xtr[:3000])
    np.testing.assert_array_equal(s[1], ytr[:3000])
    np.testing.assert_array_equal(s[2], xte[:1000])
    np.testing.assert_array_equal(s[3], yte[:1000])


@pytest.mark.slow
def test_real_mnist_fetch_from_and_make_sample(tmp_path):
    root = _real("mnist", "train-images-idx3-ubyte")
    dest = tmp_path / "data"
    assert fetch.main("mnist", ["--data-dir", str(dest), "--from", str(root)]) == 0
    assert len(list((dest / "mnist").iterdir())) == 4 and no_part_files(dest)
    spec = importlib.util.spec_from_file_location(
        "make_mnist_sample", ROOT / "data_scripts" / "make_mnist_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "sample.npz"
    assert mod.main(["--data-dir", str(dest), "--out", str(out)]) == 0
    packaged = Path(mdata.__file__).with_name("mnist_sample.npz")
    with np.load(out, allow_pickle=False) as a, np.load(packaged, allow_pickle=False) as b:
        for k in ("x_train", "y_train", "x_test", "y_test", "attribution"):
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.slow
def test_real_cifar10():
    root = _real("cifar-10-batches-bin", "data_batch_1.bin")
    xtr, ytr, xte, yte, names = load_cifar10_raw(root)  # strict: counts + SHA-256
    assert xtr.shape == (50000, 3, 32, 32) and xte.shape == (10000, 3, 32, 32)
    assert np.bincount(ytr, minlength=10).tolist() == [5000] * 10
    assert np.bincount(yte, minlength=10).tolist() == [1000] * 10
    assert ytr[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert yte[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    means = xtr.reshape(50000, 3, -1).mean(axis=(0, 2)) / 255
    np.testing.assert_allclose(means, [0.4914, 0.4822, 0.4465], atol=1e-4)
    assert names == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                     "horse", "ship", "truck")
    d = root / "cifar-10-batches-bin" if (root / "cifar-10-batches-bin").is_dir() else root
    for name, (_, sha) in readers.CIFAR10_FILES.items():
        assert fetch.sha256_file(d / name) == sha, name
    ds = load_dataset("cifar10", root)
    assert (ds.x_train.shape, ds.x_val.shape, ds.x_test.shape) == (
        (45000, 3, 32, 32), (5000, 3, 32, 32), (10000, 3, 32, 32))
    np.testing.assert_array_equal(ds.y_val, ytr[45000:])
    assert ds.x_test.dtype == np.float32 and -1 <= ds.x_test.min() and ds.x_test.max() <= 1
