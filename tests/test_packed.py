"""Packed inference (minibnn.packed): folded thresholds, XNOR-only runs, identical to the
float model; the .bnn file format; the summary table; the export/eval/summary CLI."""

import importlib
import io
import json
import struct
import zipfile
from contextlib import redirect_stdout
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibnn import functional as Fn
from minibnn import kernels, zoo
from minibnn.kernels import available_backends
from minibnn.data import load_dataset, scale_to_pm1
from minibnn.layers import (BatchNorm, BinaryConv2D, BinaryDense, Dense, Dropout, Flatten,
                            HardTanh, MaxPool2D, ShiftBatchNorm, SignActivation)
from minibnn.model import Sequential
EXPORT_MOD = importlib.import_module("minibnn.packed.export")   # packed.export is the function
from minibnn.packed import (PackedModel, bitplane_dense, export, fold_thresholds,
                            pack_bitplanes, pixels_from_input, threshold_pack)
from minibnn.summary import summarize, summary

BACKENDS = available_backends()
# model-level properties are costlier than kernel ones: cap them whatever the profile
FEW = settings(max_examples=min(settings.default.max_examples, 20), deadline=None)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

@pytest.fixture
def one_thread():
    """Numba on one thread for the tests that make hundreds of small parallel calls
    (training steps): on a busy 2-core machine every OpenMP region otherwise waits for
    descheduled threads.  Results do not depend on the thread count."""
    import numba

    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(n)


def randomize_bn(model, rng, ties=True):
    """Random BN params: negative, zero and positive gamma, integer running means with
    beta = 0 (BN(mu) = 0 exactly: a tie on an integer), random stats elsewhere."""
    for layer in model.layers:
        if not isinstance(layer, BatchNorm):
            continue
        F = layer.num_features
        K = 10
        gamma = rng.choice([-2.0, -0.7, -0.1, 0.0, 0.05, 0.6, 1.5], F)
        beta = rng.choice([0.0, 0.0, 0.3, -0.45, 1.0, -2.0], F) * rng.uniform(0.5, 1.5, F)
        mean = rng.integers(-K, K + 1, F).astype(np.float64)
        if not ties:
            mean = mean + rng.uniform(-0.5, 0.5, F)
        tie = rng.random(F) < 0.4
        beta[tie] = 0.0
        layer.params["gamma"][:] = gamma
        layer.params["beta"][:] = beta
        layer.buffers["running_mean"][:] = mean
        layer.buffers["running_var"][:] = rng.choice([0.25, 1.0, 4.0, 37.0], F) * rng.uniform(0.9, 1.1, F)


def popcount(words):
    """Bits set per row of uint64 words: (..., W) -> (...,) int64."""
    w = np.ascontiguousarray(words, dtype="<u8")
    return np.unpackbits(w.view(np.uint8), axis=-1).sum(axis=-1, dtype=np.int64)


def pixel_batch(rng, shape):
    p = rng.integers(0, 256, shape).astype(np.uint8)
    p[0] = 0
    if shape[0] > 1:
        p[1] = 255
    return p, scale_to_pm1(p)


def pre_last_bn(model, x):
    """The float model's values just before its last batch norm."""
    last_bn = max(i for i, l in enumerate(model.layers) if isinstance(l, BatchNorm))
    for layer in model.layers[:last_bn]:
        x = layer.forward(x, training=False)
    return x


def bitplane_reference(model, p):
    """The float model with its first binary layer computed exactly: float32(u / 255),
    u = (2p - 255) . sign(w) in integers -- the semantics of bit-plane mode."""
    first = next(i for i, l in enumerate(model.layers) if isinstance(l, (BinaryDense, BinaryConv2D)))
    layer = model.layers[first]
    xi = 2.0 * p.astype(np.float64) - 255.0
    if isinstance(layer, BinaryDense):
        u = Fn.binary_dense_forward(xi.reshape(len(p), -1), layer.params["w"].astype(np.float64),
                                    binary_input=False)[0]
    else:
        u = Fn.binary_conv2d_forward(xi, layer.params["w"].astype(np.float64), None, layer.stride,
                                     layer.padding, binary_input=False)[0]
    assert np.array_equal(u, np.rint(u))
    v = (u / 255.0).astype(np.float32)
    b = layer.params.get("b")
    if b is not None:
        v = v + (b.reshape(1, -1, 1, 1) if v.ndim == 4 else b)
    for layer in model.layers[first + 1:]:
        v = layer.forward(v, training=False)
    return v


def random_mlp(rng, hidden, depth, in_features, n_classes, bn="standard", bias=False, dropout=False):
    layers = [Flatten()]
    if dropout:
        layers.append(Dropout(0.2, rng=1))
    fan = in_features
    BN = ShiftBatchNorm if bn == "shift" else BatchNorm
    for i in range(depth):
        layers += [BinaryDense(fan, hidden, binary_input=i > 0, bias=bias, rng=rng), BN(hidden),
                   SignActivation()]
        if dropout:
            layers.append(Dropout(0.5, rng=2))
        fan = hidden
    layers += [BinaryDense(fan, n_classes, bias=bias, rng=rng), BN(n_classes)]
    model = Sequential(layers)
    randomize_bn(model, rng)
    if bias:
        for l in model.layers:
            if "b" in l.params:
                l.params["b"][:] = rng.choice([0.0, 0.5, -1.0, 0.25], l.params["b"].shape)
    return model


def random_convnet(rng, c_in, c1, c2, pool1, pool2, stride2, pad2, fc, n_classes, bn="standard"):
    BN = ShiftBatchNorm if bn == "shift" else BatchNorm
    layers = [BinaryConv2D(c_in, c1, 3, padding=1, binary_input=False, rng=rng)]
    s = 8
    if pool1:
        layers.append(MaxPool2D(2))
        s //= 2
    layers += [BN(c1, spatial=True), SignActivation(),
               BinaryConv2D(c1, c2, 3, stride=stride2, padding=pad2, rng=rng)]
    s = (s + 2 * pad2 - 3) // stride2 + 1
    if pool2 and s >= 2:
        layers.append(MaxPool2D(2))
        s //= 2
    layers += [BN(c2, spatial=True), SignActivation(), Flatten(),
               BinaryDense(c2 * s * s, fc, rng=rng), BN(fc), SignActivation(),
               BinaryDense(fc, n_classes, rng=rng), BN(n_classes)]
    model = Sequential(layers)
    randomize_bn(model, rng)
    return model


# ---------------------------------------------------------------------------
# kernels of the packed path
# ---------------------------------------------------------------------------

@FEW
@given(st.integers(0, 9), st.sampled_from([1, 5, 63, 64, 65, 130]), st.integers(0, 2 ** 31 - 1))
def test_threshold_pack_matches_compare_then_pack(n, d, seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(-20, 21, (n, d)).astype(np.int32)
    t = rng.integers(-20, 21, d).astype(np.int32)
    got = threshold_pack(s, t)
    want = kernels.pack(np.where(s >= t, 1.0, -1.0)) if n else np.empty((0, (d + 63) // 64), np.uint64)
    assert got.dtype == np.uint64 and np.array_equal(got, want)


@FEW
@given(st.integers(1, 6), st.sampled_from([1, 7, 64, 65, 100]), st.integers(1, 9),
       st.integers(0, 2 ** 31 - 1))
def test_bitplane_popcount_formula(n, k, f, seed):
    """b . w for {0,1} planes b: 2 popcount(B & W) - popcount(B) = (xnor(B, W) + sum w) / 2,
    and the eight planes give u = (2p - 255) . w, s_int = p . w exactly."""
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 256, (n, k)).astype(np.uint8)
    w = np.where(rng.random((k, f)) < 0.5, -1.0, 1.0).astype(np.float32)
    words = kernels.pack_columns(w)                       # (f, W)
    planes = pack_bitplanes(p)                            # (8, n, W)
    sw = w.sum(axis=0).astype(np.int64)
    for b in range(8):
        bits = ((p >> b) & 1).astype(np.int64)
        exact = bits @ w.astype(np.int64)
        B = planes[b]
        assert np.array_equal(kernels.unpack(B, k), np.where(bits, 1, -1).astype(np.float32))
        pc_and = popcount(B[:, None, :] & words[None, :, :])
        pc_b = popcount(B)[:, None]
        assert np.array_equal(2 * pc_and - pc_b, exact)
        xn = kernels.xnor_gemm(np.ascontiguousarray(B), words, k).astype(np.int64)
        assert np.array_equal((xn + sw) // 2, exact) and np.all((xn + sw) % 2 == 0)
    u, s_int = bitplane_dense(p, words, k)
    pw = p.astype(np.int64) @ w.astype(np.int64)
    assert np.array_equal(s_int, pw)
    exact_u = (2 * p.astype(np.int64) - 255) @ w.astype(np.int64)
    assert np.array_equal(u, exact_u)
    for backend in BACKENDS:                       # fused CPU kernel and the other backends
        prep = kernels.prepare_weights(words, k, backend=backend)
        pl = kernels.pack_bitplanes(p, backend=backend)
        assert np.array_equal(kernels.bitplane_gemm(pl, prep, k, backend=backend), exact_u)
        assert np.array_equal(kernels.bitplane_gemm(pl, words, k, backend=backend), exact_u)


def test_pixels_round_trip_and_reject():
    p = np.arange(256, dtype=np.uint8).reshape(2, 128)
    x = scale_to_pm1(p)
    assert np.array_equal(pixels_from_input(x), p)
    assert pixels_from_input(p) is p
    y = x.copy()
    y[0, 3] = np.nextafter(y[0, 3], np.float32(2))
    with pytest.raises(ValueError, match="2\\*p/255-1"):
        pixels_from_input(y)
    with pytest.raises(ValueError):
        pixels_from_input(np.full((1, 3), 1.5, np.float32))


def test_fold_bisection_equals_exhaustive_and_rejects_non_monotone():
    rng = np.random.default_rng(3)
    bn = BatchNorm(40)
    m = Sequential([bn])
    randomize_bn(m, rng)

    def post(z):
        return bn.forward((z.astype(np.float64) / 255).astype(np.float32), training=False)

    t1, f1 = fold_thresholds(post, -2000, 2000, 40)
    t2, f2 = fold_thresholds(post, -2000, 2000, 40, exhaustive_limit=0)
    assert np.array_equal(t1, t2) and np.array_equal(f1, f2)
    assert f1.any() and (~f1).any()
    with pytest.raises(ValueError, match="not monotone"):
        fold_thresholds(lambda z: np.cos(z / 3.0), -50, 50, 3)
    with pytest.raises(ValueError, match="not monotone"):
        fold_thresholds(lambda z: np.cos(z / 3.0), -5000, 5000, 3, exhaustive_limit=0)
    with pytest.raises(ValueError, match="NaN"):
        fold_thresholds(lambda z: np.full(z.shape, np.nan), -5, 5, 2)


# ---------------------------------------------------------------------------
# identity with the float model
# ---------------------------------------------------------------------------

@FEW
@given(hidden=st.integers(8, 70), depth=st.integers(1, 2), in_features=st.integers(1, 90),
       n_classes=st.integers(2, 10), bn=st.sampled_from(["standard", "shift"]),
       bias=st.booleans(), seed=st.integers(0, 2 ** 31 - 1))
def test_mlp_float_first_layer_is_identical(hidden, depth, in_features, n_classes, bn, bias, seed):
    rng = np.random.default_rng(seed)
    model = random_mlp(rng, hidden, depth, in_features, n_classes, bn=bn, bias=bias,
                       dropout=seed % 3 == 0)
    p, x = pixel_batch(rng, (40, in_features))
    x[2] = 0.0                                       # an exact zero input row
    packed = PackedModel.from_model(model, first_layer="float")
    want = model.forward(x, training=False)
    got = packed.scores(x)
    assert got.dtype == want.dtype and np.array_equal(got, want)     # bit for bit
    assert np.array_equal(packed.predict(x), np.argmax(want, axis=1))
    sums = packed.integer_scores(x)
    assert sums.dtype == np.int32
    ref = pre_last_bn(model, x) - (model.layers[-2].params["b"] if bias else 0)
    assert np.array_equal(sums, ref)
    # some neurons are flipped (negative gamma) whenever a hidden layer has them
    for i in range(1, len(packed.ops) - 1):
        assert packed.arrays[f"op{i}.flip"].dtype == np.uint8


@FEW
@given(hidden=st.integers(8, 70), depth=st.integers(1, 2), in_features=st.integers(1, 90),
       bn=st.sampled_from(["standard", "shift"]), bias=st.booleans(),
       seed=st.integers(0, 2 ** 31 - 1))
def test_mlp_bitplane_equals_exact_first_layer(hidden, depth, in_features, bn, bias, seed):
    rng = np.random.default_rng(seed)
    model = random_mlp(rng, hidden, depth, in_features, 5, bn=bn, bias=bias)
    p, x = pixel_batch(rng, (30, in_features))
    packed = PackedModel.from_model(model, first_layer="bitplane")
    want = bitplane_reference(model, p)
    assert np.array_equal(packed.scores(x), want)
    assert np.array_equal(packed.scores(p), want)                   # uint8 pixels directly
    with mock.patch.object(EXPORT_MOD, "EXHAUSTIVE_LIMIT", 0):      # bisection instead
        bis = PackedModel.from_model(model, first_layer="bitplane")
    for k in packed.arrays:
        assert np.array_equal(bis.arrays[k], packed.arrays[k])


@FEW
@given(c_in=st.integers(1, 3), c1=st.integers(1, 6), c2=st.integers(1, 70),
       pool1=st.booleans(), pool2=st.booleans(), stride2=st.integers(1, 2), pad2=st.integers(0, 1),
       fc=st.integers(2, 20), bn=st.sampled_from(["standard", "shift"]),
       seed=st.integers(0, 2 ** 31 - 1))
def test_convnet_is_identical(c_in, c1, c2, pool1, pool2, stride2, pad2, fc, bn, seed):
    rng = np.random.default_rng(seed)
    model = random_convnet(rng, c_in, c1, c2, pool1, pool2, stride2, pad2, fc, 4, bn=bn)
    p, x = pixel_batch(rng, (6, c_in, 8, 8))
    packed = PackedModel.from_model(model, first_layer="float", input_shape=(c_in, 8, 8))
    want = model.forward(x, training=False)
    assert np.array_equal(packed.scores(x), want)
    assert np.array_equal(packed.integer_scores(x), pre_last_bn(model, x))
    bp = PackedModel.from_model(model, first_layer="bitplane", input_shape=(c_in, 8, 8))
    assert np.array_equal(bp.scores(x), bitplane_reference(model, p))


def test_zoo_convnet_and_backends(backend):
    rng = np.random.default_rng(5)
    model = zoo.cifar10_convnet(width=1 / 32, image_size=8, fc_units=16, seed=2)
    randomize_bn(model, rng)
    _, x = pixel_batch(rng, (5, 3, 8, 8))
    want = model.forward(x, training=False)
    packed = PackedModel.from_model(model, backend=backend)
    assert packed.backend == backend and packed.input_shape == (3, 8, 8)    # inferred
    assert np.array_equal(packed.scores(x), want)
    mlp = random_mlp(rng, 70, 2, 30, 10)
    _, xm = pixel_batch(rng, (9, 30))
    for mode in ("float", "bitplane"):
        pm = PackedModel.from_model(mlp, first_layer=mode)
        ref = pm.scores(xm)
        assert np.array_equal(pm.set_backend(backend).scores(xm), ref)


def test_trained_mlp_on_sample_both_first_layer_modes(tmp_path, one_thread):
    from minibnn.losses import squared_hinge
    from minibnn.optim import Adam

    ds = load_dataset("sample")
    model = zoo.mnist_mlp(hidden=64, depth=2, seed=0)
    opt = Adam(model, lr=1e-2)
    rng = np.random.default_rng(0)
    for epoch in range(4):
        order = rng.permutation(len(ds.x_train))
        for i in range(0, len(order) - 249, 250):
            idx = order[i:i + 250]
            scores = model.forward(ds.x_train[idx], training=True)
            _, g = squared_hinge(scores, ds.y_train[idx], 10)
            model.backward(g)
            opt.step()
    x, y = ds.x_test, ds.y_test
    float_pred = np.argmax(model.forward(x, training=False), axis=1)
    assert np.mean(float_pred != y) < 0.25                          # it did learn
    path = tmp_path / "m.bnn"
    packed = export(model, path, first_layer="float", input_shape=(1, 28, 28))
    loaded = PackedModel.load(path)
    assert np.array_equal(loaded.predict(x), float_pred)
    assert np.array_equal(loaded.scores(x), model.forward(x, training=False))
    assert np.array_equal(packed.predict(x, batch_size=1000), float_pred)
    bp = export(model, tmp_path / "b.bnn", first_layer="bitplane", input_shape=(1, 28, 28))
    mism = int(np.sum(bp.predict(x) != float_pred))
    print(f"\nbit-plane vs float model on the sample test set: {mism} / {len(y)} predictions differ")
    assert mism <= 0.005 * len(y)
    assert np.array_equal(bp.scores(x), bitplane_reference(model, pixels_from_input(x)))


# ---------------------------------------------------------------------------
# unsupported models
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("layers, match", [
    (lambda: [Flatten(), Dense(6, 5), BatchNorm(5), SignActivation(), BinaryDense(5, 3), BatchNorm(3)],
     "layer 1 \\(Dense"),
    (lambda: [Flatten(), BinaryDense(6, 5, binary_input=False), BatchNorm(5), HardTanh(),
              BinaryDense(5, 3), BatchNorm(3)], "layer 3 \\(HardTanh"),
    (lambda: [Flatten(), BinaryDense(6, 5, binary_input=False), BatchNorm(5), SignActivation(),
              BinaryDense(5, 3), BatchNorm(3), SignActivation()], "BinaryDense -> batch norm"),
    (lambda: [Flatten(), BinaryDense(6, 3, binary_input=False), BatchNorm(3)], "hidden block"),
    (lambda: [BinaryConv2D(1, 2, 3, padding=1, binary_input=False), BatchNorm(2, spatial=True),
              SignActivation(), BinaryDense(128, 3), BatchNorm(3)], "Flatten"),
    (lambda: [Flatten(), BinaryDense(6, 5, binary_input=False), SignActivation(),
              BinaryDense(5, 3), BatchNorm(3)], "layer 2 \\(SignActivation"),
])
def test_unsupported_layers_are_named(layers, match):
    with pytest.raises(ValueError, match=match):
        PackedModel.from_model(Sequential(layers()))


# ---------------------------------------------------------------------------
# the .bnn file
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_bnn(tmp_path_factory):
    rng = np.random.default_rng(11)
    model = random_mlp(rng, 33, 2, 20, 4, bias=True)
    path = tmp_path_factory.mktemp("bnn") / "small.bnn"
    packed = export(model, path, first_layer="float")
    _, x = pixel_batch(rng, (12, 20))
    return model, packed, path, x


def _rewrite(src, dst, edit):
    with np.load(src, allow_pickle=False) as z:
        files = {k: z[k] for k in z.files}
    edit(files)
    buf = io.BytesIO()
    np.savez_compressed(buf, **files)
    dst.write_bytes(buf.getvalue())


def test_file_round_trip(small_bnn):
    model, packed, path, x = small_bnn
    loaded = PackedModel.load(path)
    assert loaded.header == json.loads(json.dumps(packed.header))
    assert set(loaded.arrays) == set(packed.arrays)
    for k in packed.arrays:
        assert loaded.arrays[k].dtype == packed.arrays[k].dtype
        assert np.array_equal(loaded.arrays[k], packed.arrays[k])
    assert np.array_equal(loaded.scores(x), model.forward(x, training=False))
    h = loaded.header
    assert (h["format"], h["format_version"], h["preprocessing"]) == ("minibnn-packed", 1, "2*x/255-1")
    assert [op["kind"] for op in h["architecture"]] == ["dense"] * 3
    with np.load(path, allow_pickle=False) as z:
        assert z["op1.weights"].dtype == np.uint64 and z["op1.thresholds"].dtype == np.int32


def test_corrupted_truncated_and_wrong_files(small_bnn, tmp_path):
    _, _, path, _ = small_bnn
    data = path.read_bytes()
    # a flipped byte inside an array's compressed data: zip CRC / deflate error
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("op1.weights.npy")
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    off = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    bad = bytearray(data)
    bad[off] ^= 0xFF
    p = tmp_path / "flip.bnn"
    p.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="flip.bnn"):
        PackedModel.load(p)
    # a changed array in a well-formed archive: the sha256 catches it
    p = tmp_path / "sha.bnn"
    _rewrite(path, p, lambda f: f.__setitem__("op1.thresholds", f["op1.thresholds"] + 1))
    with pytest.raises(ValueError, match="sha.bnn: checksum"):
        PackedModel.load(p)
    # truncated
    for cut in (len(data) // 2, 100, 0):
        p = tmp_path / f"cut{cut}.bnn"
        p.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=f"cut{cut}.bnn"):
            PackedModel.load(p)

    def header_edit(**kw):
        def edit(files):
            h = json.loads(str(files["header"]))
            h.update(kw)
            files["header"] = np.array(json.dumps(h))
        return edit

    p = tmp_path / "v2.bnn"
    _rewrite(path, p, header_edit(format_version=2))
    with pytest.raises(ValueError, match="v2.bnn: format_version 2"):
        PackedModel.load(p)
    p = tmp_path / "fmt.bnn"
    _rewrite(path, p, header_edit(format="something-else"))
    with pytest.raises(ValueError, match="fmt.bnn: format 'something-else'"):
        PackedModel.load(p)
    def drop_bn(files):
        h = json.loads(str(files["header"]))
        del h["architecture"][1]["bn"]
        files["header"] = np.array(json.dumps(h))

    p = tmp_path / "malformed.bnn"
    _rewrite(path, p, drop_bn)
    with pytest.raises(ValueError, match="malformed.bnn: architecture op 1 is malformed"):
        PackedModel.load(p)
    p = tmp_path / "noheader.bnn"
    _rewrite(path, p, lambda f: f.pop("header"))
    with pytest.raises(ValueError, match="noheader.bnn: no 'header'"):
        PackedModel.load(p)
    p = tmp_path / "npy.bnn"
    with open(p, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match="npy.bnn"):
        PackedModel.load(p)
    with pytest.raises(FileNotFoundError):
        PackedModel.load(tmp_path / "missing.bnn")


# ---------------------------------------------------------------------------
# summary and CLI
# ---------------------------------------------------------------------------

def test_summary_numbers_by_hand():
    model = Sequential([Flatten(), BinaryDense(6, 5, binary_input=False, rng=0), BatchNorm(5),
                        SignActivation(), BinaryDense(5, 4, rng=1), BatchNorm(4), SignActivation(),
                        BinaryDense(4, 3, rng=2), BatchNorm(3)])
    info = summarize(model)
    rows = {r["layer"]: r for r in info["rows"]}
    first = rows["BinaryDense 6->5 (real input)"]
    assert (first["params"], first["packed_bytes"], first["float32_bytes"]) == (30, 40, 120)
    assert (first["float_macs"], first["binary_macs"]) == (30, 0)
    hid = rows["BinaryDense 5->4"]
    assert (hid["params"], hid["packed_bytes"], hid["float32_bytes"], hid["binary_macs"]) == (20, 32, 80, 20)
    thr = rows["BatchNorm -> int32 threshold"]
    assert (thr["params"], thr["packed_bytes"], thr["float32_bytes"]) == (16, 20, 64)
    t = info["totals"]
    # params 30 + 20 + 20 + 16 + 12 + 12; packed 40 + 80 + 32 + 20 + 24 + 48
    assert (t["params"], t["packed_bytes"], t["float32_bytes"]) == (110, 244, 440)
    assert (t["binary_macs"], t["float_macs"]) == (20 + 12, 30)
    assert t["compression"] == pytest.approx(440 / 244)
    text = summary(model)
    assert "compression (float32 / packed): 1.80x" in text and "BinaryDense 4->3" in text
    bp = summarize(PackedModel.from_model(model, first_layer="bitplane"))
    assert bp["totals"]["binary_macs"] == 8 * 30 + 20 + 12 and bp["totals"]["float_macs"] == 0


def test_cli_export_eval_summary(tmp_path, one_thread):
    from minibnn.cli import main

    rng = np.random.default_rng(4)
    model = zoo.mnist_mlp(hidden=24, depth=1, seed=3)
    randomize_bn(model, rng)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "best.npz")
    (run / "config.json").write_text(json.dumps({"dataset": "sample"}))
    out = tmp_path / "m.bnn"

    def call(*argv):
        buf = io.StringIO()
        with redirect_stdout(buf):
            rc = main([str(a) for a in argv])
        return rc, buf.getvalue()

    rc, text = call("export", run / "best.npz", "--out", out, "--first-layer", "bitplane")
    assert rc == 0 and out.exists()
    info = json.loads(text)
    assert info["input_shape"] == [1, 28, 28] and info["ratio"] > 1
    rc, text = call("eval", out, "--dataset", "sample", "--batch-size", "400", "--limit", "600")
    assert rc == 0
    res = json.loads(text)
    assert res["n"] == 600 and 0 <= res["test_error"] <= 1 and res["images_per_s"] > 0
    ds = load_dataset("sample")
    pred = PackedModel.load(out).predict(ds.x_test[:600])
    assert res["errors"] == int(np.sum(pred != ds.y_test[:600]))
    rc, text = call("summary", out)
    assert rc == 0 and "BinaryDense 784->24 (8 bit-planes)" in text and "compression" in text
    rc, text = call("summary", run / "best.npz", "--json")
    assert rc == 0 and json.loads(text)["totals"]["params"] > 0
    bad = tmp_path / "bad.bnn"
    bad.write_bytes(out.read_bytes()[:50])
    rc, _ = call("eval", bad, "--dataset", "sample")
    assert rc == 2
