"""Bad data files and arrays: IDX, CIFAR-10, SVHN .mat, .npz, from_arrays, fetch (ids ``data-``).

Every row writes its own small file under ``tmp_path``; nothing touches the network
(the fetch rows fail before any download: unknown name, missing ``--from`` copy).
"""

import gzip
import struct
import zipfile

import numpy as np

from bad_inputs import Case, CliCase
from minibnn.data import DataError


def _idx(arr, magic=None):
    arr = np.asarray(arr, dtype=np.uint8)
    magic = (0x0800 | arr.ndim) if magic is None else magic
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape) \
        + arr.tobytes()


def _read_idx(payload, name="t10k-images-idx3-ubyte", gz=False, **kw):
    def call(tmp_path):
        from minibnn.data import read_idx
        p = tmp_path / name
        p.write_bytes(gzip.compress(payload) if gz else payload)
        return read_idx(p, **kw)
    return call


_IMGS = np.zeros((3, 4, 4), np.uint8)


def _truncated_gzip(tmp_path):
    from minibnn.data import read_idx
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(_idx(_IMGS))[:-12])
    return read_idx(p)


def _mnist_tree(tmp_path, n_test_labels=5, label_value=0):
    d = tmp_path / "mnist"
    d.mkdir()
    (d / "train-images-idx3-ubyte").write_bytes(_idx(np.zeros((6, 28, 28))))
    (d / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(6)))
    (d / "t10k-images-idx3-ubyte").write_bytes(_idx(np.zeros((5, 28, 28))))
    (d / "t10k-labels-idx1-ubyte").write_bytes(
        _idx(np.full(n_test_labels, label_value)))
    return tmp_path


def _load_mnist_count_mismatch(tmp_path):
    from minibnn.data import load_mnist_raw
    return load_mnist_raw(_mnist_tree(tmp_path, n_test_labels=4), strict=False)


def _load_mnist_bad_label(tmp_path):
    from minibnn.data import load_mnist_raw
    return load_mnist_raw(_mnist_tree(tmp_path, label_value=10), strict=False)


def _mnist_checksum(tmp_path):
    # a file with the name and size of the real t10k labels but other content
    from minibnn.data import read_idx_labels
    p = tmp_path / "t10k-labels-idx1-ubyte"
    p.write_bytes(_idx(np.zeros(10_000)))
    return read_idx_labels(p)


def _cifar(size):
    def call(tmp_path):
        from minibnn.data import read_cifar10_batch
        p = tmp_path / "data_batch_1.bin"
        p.write_bytes(bytes(size))
        return read_cifar10_batch(p)
    return call


def _cifar_bad_label(tmp_path):
    from minibnn.data import read_cifar10_batch
    rec = bytearray(3073 * 2)
    rec[3073] = 12
    p = tmp_path / "data_batch_1.bin"
    p.write_bytes(bytes(rec))
    return read_cifar10_batch(p)


def _mat(tmp_path, X=None, y=None, **extra):
    import scipy.io
    X = np.zeros((32, 32, 3, 2), np.uint8) if X is None else X
    y = np.array([[1], [2]], np.uint8) if y is None else y
    p = tmp_path / "test_32x32.mat"
    scipy.io.savemat(p, {"X": X, "y": y, **extra})
    return p


def _svhn(mutate):
    def call(tmp_path):
        from minibnn.data import read_svhn_mat
        return read_svhn_mat(mutate(tmp_path))
    return call


def _mat_huge_first(tmp_path):
    # issue 11: X's element claims 2**31 bytes; scipy skipped to the end and
    # reported "variable 'y' missing"
    p = _mat(tmp_path)
    b = bytearray(p.read_bytes())
    struct.pack_into("<I", b, 128 + 4, 2 ** 31)
    p.write_bytes(bytes(b))
    return p


def _mat_huge_last(tmp_path):
    p = _mat(tmp_path)
    b = bytearray(p.read_bytes())
    n = struct.unpack_from("<I", b, 132)[0]
    struct.pack_into("<I", b, 128 + 8 + n + 4, 2 ** 31)
    p.write_bytes(bytes(b))
    return p


def _mat_truncated(tmp_path):
    p = _mat(tmp_path)
    p.write_bytes(p.read_bytes()[:1000])
    return p


def _mat_bad_header(tmp_path):
    p = _mat(tmp_path)
    b = bytearray(p.read_bytes())
    b[126:128] = b"XX"
    p.write_bytes(bytes(b))
    return p


def _mat_short(tmp_path):
    p = tmp_path / "test_32x32.mat"
    p.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(40))
    return p


def _mat_no_y(tmp_path):
    import scipy.io
    p = tmp_path / "test_32x32.mat"
    scipy.io.savemat(p, {"X": np.zeros((32, 32, 3, 2), np.uint8)})
    return p


def _npz(write):
    def call(tmp_path):
        from minibnn.data import load_dataset
        p = tmp_path / "mine.npz"
        write(p)
        return load_dataset(f"npz:{p}")
    return call


def _good(**over):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
              "y_train": np.arange(8) % 3,
              "x_test": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
              "y_test": np.arange(4) % 3}
    arrays.update(over)
    return {k: v for k, v in arrays.items() if v is not None}


def _savez(**over):
    return lambda p: np.savez(p, **_good(**over))


def _npz_pickled(p):
    # np.savez pickles object arrays; the loader must refuse, not unpickle
    a = _good()
    a["y_test"] = np.array([1, "two", None, 3], dtype=object)
    np.savez(p, **a)


def _npz_huge_claim(p):
    np.savez(p, **_good())
    with zipfile.ZipFile(p) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    head = members["x_train.npy"]
    members["x_train.npy"] = head.replace(b"(8, 28, 28)", b"(900000, 28, 28)", 1)
    with zipfile.ZipFile(p, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)


def _npz_not_zip(p):
    p.write_bytes(b"this is not an archive" * 10)


def _npz_single_npy(p):
    with open(p, "wb") as f:
        np.save(f, np.zeros(3))


def _from_arrays(**over):
    def call(tmp_path):
        from minibnn.data import Dataset
        a = _good(**over)
        return Dataset.from_arrays(a.pop("x_train"), a.pop("y_train"), a.pop("x_test"),
                                   a.pop("y_test"), **a)
    return call


def _fetch(name, source=None):
    def call(tmp_path):
        from minibnn.data import fetch_dataset
        src = None if source is None else tmp_path / source
        return fetch_dataset(name, tmp_path / "data", source=src, progress=False)
    return call


def _load(name, **kw):
    def call(tmp_path):
        from minibnn.data import load_dataset
        return load_dataset(name, tmp_path / "data", **kw)
    return call


_NAN = np.full((4, 28, 28), np.nan, np.float32)

ROWS = [
    # IDX (MNIST, Fashion-MNIST)
    Case("data-idx-bad-magic", _read_idx(_idx(_IMGS, magic=0x0000_0903), expected_magic=2051),
         DataError, ["t10k-images-idx3-ubyte", "magic"]),
    Case("data-idx-not-idx", _read_idx(b"\x1f\x00hello world"), DataError,
         ["not an IDX file"]),
    Case("data-idx-truncated", _read_idx(_idx(_IMGS)[:-5]), DataError,
         ["truncated", "48 data bytes"]),
    Case("data-idx-truncated-gzip", _truncated_gzip, DataError, ["x.gz", "gzip"]),
    Case("data-idx-huge-header", _read_idx(_idx(_IMGS)[:4] + (10 ** 9).to_bytes(4, "big")
                                           + (10 ** 4).to_bytes(4, "big") * 2 + bytes(8)),
         DataError, ["more than the file can hold"]),
    Case("data-idx-trailing", _read_idx(_idx(_IMGS) + b"xx"), DataError, ["trailing bytes"]),
    Case("data-idx-count-mismatch", _load_mnist_count_mismatch, DataError,
         ["5 images", "4 labels", "t10k-labels-idx1-ubyte"]),
    Case("data-idx-label-range", _load_mnist_bad_label, DataError,
         ["label 10", "outside 0..9"]),
    Case("data-idx-wrong-checksum", _mnist_checksum, DataError,
         ["SHA-256 mismatch", "t10k-labels-idx1-ubyte"]),
    # CIFAR-10
    Case("data-cifar-record-size", _cifar(3073 * 2 + 100), DataError,
         ["data_batch_1.bin", "not a multiple of the 3073-byte"]),
    Case("data-cifar-empty", _cifar(0), DataError, ["data_batch_1.bin", "empty file"]),
    Case("data-cifar-bad-label", _cifar_bad_label, DataError, ["label 12", "index 1"]),
    # SVHN .mat (issue 11 and friends)
    Case("data-mat-huge-claim", _svhn(_mat_huge_first), DataError,
         ["test_32x32.mat", "claims 2147483648 bytes", "truncated or corrupt"]),
    Case("data-mat-huge-claim-last", _svhn(_mat_huge_last), DataError,
         ["test_32x32.mat", "claims 2147483648 bytes"]),
    Case("data-mat-truncated", _svhn(_mat_truncated), DataError,
         ["test_32x32.mat", "truncated"]),
    Case("data-mat-bad-header", _svhn(_mat_bad_header), DataError,
         ["not a readable .mat file", "endian indicator"]),
    Case("data-mat-short", _svhn(_mat_short), DataError,
         ["too short for the 128-byte"]),
    Case("data-mat-missing-y", _svhn(_mat_no_y), DataError, ["variable 'y' missing"]),
    Case("data-mat-bad-labels", _svhn(lambda t: _mat(t, y=np.array([[0], [11]], np.uint8))),
         DataError, ["label 0", "outside 1..10"]),
    Case("data-mat-x-shape", _svhn(lambda t: _mat(t, X=np.zeros((28, 28, 2), np.uint8))),
         DataError, ["X has shape", "(32, 32, 3, N)"]),
    # npz:PATH
    Case("data-npz-missing-array", _npz(_savez(y_test=None)), DataError,
         ["mine.npz", "y_test", "missing"]),
    Case("data-npz-unknown-array", _npz(_savez(X_train=np.zeros(3))), DataError,
         ["unexpected array", "X_train"]),
    Case("data-npz-pickled", _npz(_npz_pickled), DataError,
         ["y_test", "Python objects", "never loaded"]),
    Case("data-npz-length-mismatch", _npz(_savez(y_train=np.zeros(7, np.int64))), DataError,
         ["mine.npz", "x_train has 8 images", "y_train has 7 labels"]),
    Case("data-npz-nan", _npz(_savez(x_train=np.zeros((8, 28, 28), np.float32),
                                     x_test=_NAN)), DataError, ["x_test", "NaN"]),
    Case("data-npz-negative-label", _npz(_savez(y_test=np.array([0, -1, 2, 1]))),
         DataError, ["y_test", "label -1", "negative"]),
    Case("data-npz-float-labels", _npz(_savez(y_train=np.zeros(8, np.float32))), DataError,
         ["y_train", "float32", "integers"]),
    Case("data-npz-wrong-ndim", _npz(_savez(x_train=np.zeros((8, 1, 28, 28, 1), np.uint8))),
         DataError, ["x_train has shape (8, 1, 28, 28, 1)"]),
    Case("data-npz-image-shape-mismatch",
         _npz(_savez(x_test=np.zeros((4, 32, 32), np.uint8))), DataError,
         ["x_test images are (1, 32, 32)", "x_train images are (1, 28, 28)"]),
    Case("data-npz-huge-claim", _npz(_npz_huge_claim), DataError,
         ["x_train", "claims shape (900000, 28, 28)", "truncated or corrupt"]),
    Case("data-npz-not-zip", _npz(_npz_not_zip), DataError,
         ["mine.npz", "not a readable .npz"]),
    Case("data-npz-single-npy", _npz(_npz_single_npy), DataError, ["single .npy"]),
    Case("data-npz-missing-file", _load("npz:nowhere/none.npz"), DataError,
         ["none.npz", "not found"]),
    Case("data-npz-empty-path", _load("npz:"), ValueError, ["needs a path"]),
    # Dataset.from_arrays
    Case("data-arrays-int64-images", _from_arrays(x_train=np.zeros((8, 28, 28), np.int64)),
         TypeError, ["x_train", "int64", "uint8"]),
    Case("data-arrays-bool-labels", _from_arrays(y_test=np.ones(4, bool)), TypeError,
         ["y_test", "bool", "integers"]),
    Case("data-arrays-label-over-n-classes", _from_arrays(n_classes=2), ValueError,
         ["y_train", "label 2", "outside 0..1"]),
    Case("data-arrays-val-half", _from_arrays(x_val=np.zeros((2, 28, 28), np.uint8)),
         ValueError, ["x_val given without y_val"]),
    Case("data-arrays-mixed-dtypes", _from_arrays(x_test=np.zeros((4, 28, 28), np.float32)),
         ValueError, ["x_test is float32", "x_train is uint8"]),
    Case("data-arrays-empty-train", _from_arrays(x_train=np.zeros((0, 28, 28), np.uint8),
                                                 y_train=np.zeros(0, np.int64)),
         ValueError, ["x_train is empty"]),
    Case("data-arrays-inf", _from_arrays(x_train=np.full((8, 4), np.inf), x_test=np.zeros((4, 4))),
         ValueError, ["x_train", "infinity"]),
    Case("data-arrays-n-val", _from_arrays(n_val=8), ValueError, ["n_val=8", "0..7"]),
    Case("data-arrays-one-class", _from_arrays(y_train=np.zeros(8, np.int64),
                                               y_test=np.zeros(4, np.int64)),
         ValueError, ["single class"]),
    # names and fetching
    Case("data-unknown-dataset", _load("imagenet"), ValueError,
         ["unknown dataset 'imagenet'", "fashion-mnist", "npz:PATH"]),
    Case("data-fetch-unknown", _fetch("imagenet"), ValueError, ["unknown dataset 'imagenet'"]),
    Case("data-fetch-sample", _fetch("sample"), ValueError, ["ships inside the package"]),
    Case("data-fetch-from-missing", _fetch("mnist", source="no-such-copy"),
         RuntimeError, ["--from", "no-such-copy", "no such file or directory"]),
    Case("data-fetch-from-incomplete", _fetch("svhn", source="."), RuntimeError,
         ["--from", "train_32x32.mat not found"]),
    Case("data-no-download-missing", _load("mnist", download=False), DataError,
         ["mnist file", "not found", "minibnn fetch mnist", "--from COPY", "--dataset sample"]),
    CliCase("data-cli-fetch-unknown", ["fetch", "imagenet"],
            ["invalid choice", "imagenet"]),
    CliCase("data-cli-fetch-from-missing",
            lambda t: ["fetch", "mnist", "--data-dir", t / "data", "--from", t / "nowhere"],
            ["--from", "nowhere", "no such file or directory"]),
]
