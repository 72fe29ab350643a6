"""Sequential: naming, modes, state, save/load format and its errors, a training smoke
test, and the losses' input checks."""

import json
import os

import numpy as np
import pytest

from minibnn import layers as L
from minibnn import losses
from minibnn.model import FORMAT_VERSION, Sequential, spawn_rngs
from minibnn.testing import assert_exact


def mlp(seed=0, backend=None, bn=L.BatchNorm):
    """BinaryDense(real input) -> BN -> Sign -> BinaryDense -> BN, 16 -> 64 -> 4."""
    r = spawn_rngs(seed, 5)
    return Sequential([L.BinaryDense(16, 64, binary_input=False, backend=backend, rng=r[0]),
                       bn(64), L.SignActivation(rng=r[2]),
                       L.BinaryDense(64, 4, backend=backend, rng=r[3]), bn(4)])


def convnet(seed=0):
    r = spawn_rngs(seed, 10)
    return Sequential([L.BinaryConv2D(3, 4, 3, padding=1, binary_input=False, rng=r[0]),
                       L.MaxPool2D(2), L.BatchNorm(4, spatial=True), L.SignActivation(rng=r[3]),
                       L.BinaryConv2D(4, 6, (3, 2), stride=1, padding=1, bias=True, rng=r[4]),
                       L.ShiftBatchNorm(6, spatial=True), L.HardTanh(), L.Dropout(0.3, rng=r[7]),
                       L.Flatten(), L.Dense(6 * 4 * 5, 3, rng=r[9])])


def blobs(seed, n, d=16, c=4):
    """Gaussian blobs around fixed, well separated centers: linearly separable enough."""
    centers = np.random.default_rng(100).standard_normal((c, d)) * 2
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return (centers[y] + rng.standard_normal((n, d))).astype(np.float32), y


def sgd_step(model, lr):
    """Plain SGD with BinaryNet's rules for latent binary weights (scaled lr, clip)."""
    for _, p, g, info in model.parameters():
        if info["binary"]:
            p -= lr * info["lr_scale"] * g
            np.clip(p, -1, 1, out=p)
        else:
            p -= lr * g


def train(seed, epochs=8, lr=0.1, batch=32):
    x, y = blobs(0, 512)
    model = mlp(seed)
    order = np.random.default_rng(seed)
    history = []
    for _ in range(epochs):
        perm = order.permutation(len(x))
        total = 0.0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss, grad = losses.squared_hinge(model.forward(x[idx], training=True), y[idx], 4)
            model.backward(grad)
            sgd_step(model, lr)
            total += loss
        history.append(total / (len(x) // batch))
    return model, history


# ---------------------------------------------------------------------------
# training smoke test
# ---------------------------------------------------------------------------

def test_training_smoke():
    model, history = train(seed=3)
    assert history[-1] < 0.3 * history[0], history
    x_test, y_test = blobs(1, 400)
    err = losses.error_rate(model.forward(x_test, training=False), y_test)
    assert err < 0.15, err                                           # chance is 0.75
    for _, p, _, info in model.parameters():
        if info["binary"]:
            assert np.abs(p).max() <= 1
    # a fixed seed gives the same run, weight for weight
    again, history2 = train(seed=3)
    assert history == history2
    for (n1, p1, _, _), (n2, p2, _, _) in zip(model.parameters(), again.parameters()):
        assert n1 == n2
        assert_exact(p1, p2, n1)
    # and the trained model runs identically on the packed kernels
    scores = model.forward(x_test, training=False)
    assert_exact(model.set_backend("cpu").forward(x_test, training=False), scores)


# ---------------------------------------------------------------------------
# Sequential basics
# ---------------------------------------------------------------------------

def test_parameter_names_and_info():
    model = mlp()
    names = [n for n, *_ in model.parameters()]
    assert names == ["0.w", "1.gamma", "1.beta", "3.w", "4.gamma", "4.beta"]
    info = {n: i for n, _, _, i in model.parameters()}
    assert info["0.w"]["binary"] and info["3.w"]["binary"]
    assert not info["1.gamma"]["binary"] and info["1.gamma"]["lr_scale"] == 1.0
    for _, p, g, _ in model.parameters():
        assert p is not g and p.shape == g.shape and p.dtype == g.dtype == np.float32
    assert [n for n, _ in model.buffers()] == ["1.running_mean", "1.running_var",
                                               "4.running_mean", "4.running_var"]


def test_train_eval_modes():
    model = mlp()
    x, _ = blobs(0, 20)
    assert model.training
    model.eval()
    before = model.state_dict()
    out1 = model.forward(x)
    after = model.state_dict()
    for k in before:                                     # eval: running stats untouched
        assert_exact(before[k], after[k], k)
    assert_exact(model.forward(x), out1)
    model.train()
    model.forward(x)
    assert not np.array_equal(model.state_dict()["1.running_mean"], before["1.running_mean"])


def test_backward_shapes_and_errors():
    model = convnet()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(np.ones((2, 3)))
    out = model.forward(x)
    assert out.shape == (2, 3)
    assert model.backward(np.ones_like(out)).shape == x.shape
    with pytest.raises(TypeError):
        Sequential([L.Flatten(), "not a layer"])


def test_from_architecture_is_seeded():
    arch = convnet().architecture()
    a = Sequential.from_architecture(arch, seed=5)
    b = Sequential.from_architecture(arch, seed=5)
    assert a.architecture() == arch
    for (n, p, _, _), (_, q, _, _) in zip(a.parameters(), b.parameters()):
        assert_exact(p, q, n)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert_exact(a.forward(x, training=True), b.forward(x, training=True))   # dropout too


def test_state_dict_roundtrip_and_checks():
    a, b = mlp(seed=0), mlp(seed=1)
    a.forward(blobs(0, 10)[0])                           # non-trivial running stats
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        assert_exact(b.state_dict()[k], v, k)
    sd = a.state_dict()
    del sd["3.w"]
    with pytest.raises(ValueError, match=r"missing entries \['3.w'\]"):
        b.load_state_dict(sd)
    sd = a.state_dict()
    sd["0.w"] = sd["0.w"][:, :10]
    with pytest.raises(ValueError, match=r"'0.w' has shape \(16, 10\).*\(16, 64\)"):
        b.load_state_dict(sd)
    sd = a.state_dict()
    sd["9.w"] = np.zeros(3)
    with pytest.raises(ValueError, match="unexpected"):
        b.load_state_dict(sd)
    b.load_state_dict(sd, strict=False)


# ---------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------

def test_save_load_roundtrip(tmp_path):
    model = convnet(seed=2)
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    for _ in range(2):
        model.forward(x, training=True)
    path = tmp_path / "model.npz"
    model.save(path)
    assert os.listdir(tmp_path) == ["model.npz"]          # no temporary file left over
    loaded = Sequential.load(path)
    assert loaded.architecture() == model.architecture()
    assert_exact(loaded.forward(x, training=False), model.forward(x, training=False))
    for k, v in model.state_dict().items():
        assert_exact(loaded.state_dict()[k], v, k)
    # the file is plain arrays: readable without pickle
    with np.load(path, allow_pickle=False) as z:
        assert int(z["format_version"]) == FORMAT_VERSION
        arch = json.loads(str(z["architecture"]))
    assert arch[4] == {"class": "BinaryConv2D",
                       "config": {"in_ch": 4, "out_ch": 6, "kernel": [3, 2], "stride": 1,
                                  "padding": 1, "binary_input": True, "bias": True,
                                  "backend": None, "H": 1.0}}
    # saving again replaces the file atomically
    model.save(path)
    assert os.listdir(tmp_path) == ["model.npz"]


def test_save_load_mlp_with_backend(tmp_path):
    model = mlp(backend="cpu")
    x, _ = blobs(0, 7)
    model.forward(x)
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(str(tmp_path / "m.npz"))
    assert loaded[3].backend == "cpu"
    assert_exact(loaded.forward(x, training=False), model.forward(x, training=False))


def _rewrite(src, dst, **changes):
    with np.load(src, allow_pickle=False) as z:
        files = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            del files[k]
        else:
            files[k] = v
    np.savez(dst, **files)


@pytest.mark.parametrize("change,match", [
    ({"format_version": np.array(99)}, "format_version 99.*reads version 1"),
    ({"format_version": None}, "no 'format_version'"),
    ({"architecture": None}, "no 'architecture'"),
    ({"architecture": np.array("[{not json")}, "not valid JSON"),
    ({"architecture": np.array('[{"class": "Nope", "config": {}}]')}, "unknown layer class 'Nope'"),
    ({"architecture": np.array('{"layers": 1}')}, "architecture must be a list"),
    ({"3.w": None}, r"missing entries \['3.w'\]"),
    ({"3.w": np.zeros((64, 5), np.float32)}, r"'3.w' has shape \(64, 5\).*\(64, 4\)"),
    ({"1.running_var": np.zeros(3, np.float32)}, "'1.running_var' has shape"),
    ({"extra": np.zeros(1)}, "unexpected entries"),
])
def test_load_rejects_bad_files(tmp_path, change, match):
    good = tmp_path / "good.npz"
    mlp().save(good)
    bad = tmp_path / "bad.npz"
    _rewrite(good, bad, **change)
    with pytest.raises(ValueError, match=match):
        Sequential.load(bad)


def test_load_rejects_non_model_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="not a readable minibnn model file"):
        Sequential.load(junk)
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="not a minibnn model file"):
        Sequential.load(npy)
    with pytest.raises(FileNotFoundError):
        Sequential.load(tmp_path / "missing.npz")


# ---------------------------------------------------------------------------
# losses: bad input
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [lambda s, y: losses.squared_hinge(s, y, 3), losses.softmax_cross_entropy])
def test_nan_or_inf_reaching_the_loss(fn):
    y = np.array([0, 2])
    with pytest.raises(ValueError, match="NaN"):
        fn(np.array([[0.0, np.nan, 1.0], [1.0, 2.0, 3.0]]), y)
    with pytest.raises(ValueError, match="inf"):
        fn(np.array([[0.0, np.inf, 1.0], [1.0, 2.0, 3.0]]), y)
    with pytest.raises(ValueError, match="labels"):
        fn(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        fn(np.zeros((2, 3)), np.array([0, 1, 2]))


def test_nan_in_model_is_caught():
    model = mlp()
    x, y = blobs(0, 8)
    model[0].params["w"][0, 0] = np.nan           # a diverged weight
    with pytest.raises(ValueError, match="NaN"):
        scores = model.forward(x)
        losses.squared_hinge(scores, y, 4)


def test_loss_shapes_and_error_rate():
    s = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 0.0]], dtype=np.float32)
    y = np.array([1, 1, 0])
    assert losses.error_rate(s, y) == pytest.approx(1 / 3)
    loss, grad = losses.softmax_cross_entropy(s, y)
    assert grad.dtype == np.float32 and grad.shape == s.shape
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-7)
    with pytest.raises(ValueError, match="n_classes=4"):
        losses.squared_hinge(s, y, 4)


# ---------------------------------------------------------------------------
# load: checked before anything is allocated
# ---------------------------------------------------------------------------

def _arch(*layers):
    return np.array(json.dumps([{"class": c, "config": cfg} for c, cfg in layers]))


def test_load_refuses_a_huge_declared_layer_without_allocating(tmp_path):
    # the architecture claims a 10**6 x 10**6 layer (7.28 TiB as float64 init): refused
    # from the declared shapes, before a layer is built
    path = tmp_path / "huge.npz"
    np.savez(path, format_version=np.array(FORMAT_VERSION),
             architecture=_arch(("BinaryDense", {"in_features": 10 ** 6, "out_features": 10 ** 6})),
             **{"0.w": np.zeros((2, 2), np.float32)})
    with pytest.raises(ValueError, match=r"huge.npz: the architecture declares 1000000000000 "):
        Sequential.load(path)
    # within the limit, the stored arrays are checked against it before building
    np.savez(path, format_version=np.array(FORMAT_VERSION),
             architecture=_arch(("BinaryDense", {"in_features": 10 ** 4, "out_features": 10 ** 4})),
             **{"0.w": np.zeros((2, 2), np.float32)})
    with pytest.raises(ValueError, match=r"huge.npz: entry '0.w' has shape \(2, 2\).*\(10000, 10000\)"):
        Sequential.load(path)


def test_load_refuses_more_than_the_size_limit(tmp_path, monkeypatch):
    import minibnn.model as M
    path = tmp_path / "m.npz"
    mlp().save(path)
    monkeypatch.setattr(M, "MAX_LOAD_ELEMENTS", 1000)
    with pytest.raises(ValueError, match="declares 1552 parameter and buffer values.*MAX_LOAD_ELEMENTS"):
        Sequential.load(path)


def test_load_refuses_a_forged_array_header(tmp_path):
    # an entry whose .npy header claims far more data than the member holds: refused
    # from the header, before numpy allocates the claimed array
    import zipfile
    good = tmp_path / "good.npz"
    mlp().save(good)
    bad = tmp_path / "forged.npz"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "0.w.npy":
                data = data.replace(b"(16, 64)", b"(16, 64000000000)")
            zout.writestr(item, data)
    with pytest.raises(ValueError, match=r"forged.npz: entry '0.w' claims shape \(16, 64000000000\)"):
        Sequential.load(bad)


@pytest.mark.parametrize("arch,match", [
    (_arch(("BinaryDense", {"in_features": 0, "out_features": 3})), r"layer 0: in_features must be"),
    (_arch(("BinaryDense", {"in_features": 3, "out_features": 2, "colour": 1})), r"layer 0: bad config"),
    (_arch(("Flatten", {}), ("Nope", {})), r"layer 1: unknown layer class 'Nope'"),
    (np.array("[1, 2]"), r"architecture must be a list"),
    (np.array(["[]", "[]"]), r"architecture must be one string"),
    (np.array(3), r"architecture must be one string"),
])
def test_load_names_the_file_for_bad_architectures(tmp_path, arch, match):
    path = tmp_path / "bad.npz"
    np.savez(path, format_version=np.array(FORMAT_VERSION), architecture=arch)
    with pytest.raises(ValueError, match=rf"bad.npz: .*{match}"):
        Sequential.load(path)


def test_load_error_names_the_file_for_non_json(tmp_path):
    path = tmp_path / "nojson.npz"
    np.savez(path, format_version=np.array(FORMAT_VERSION), architecture=np.array("{not json"))
    with pytest.raises(ValueError, match=r"nojson.npz: architecture is not valid JSON"):
        Sequential.load(path)


def test_save_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
    model = mlp()
    target = tmp_path / "m.npz"
    model.save(target)
    before = target.read_bytes()

    class Boom(Exception):
        pass

    def half_a_file(f, **arrays):
        f.write(b"PK half a file")
        raise Boom("disk full")

    # a failure while writing leaves the old file and no .tmp-* behind
    monkeypatch.setattr(np, "savez", half_a_file)
    with pytest.raises(Boom):
        model.save(target)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.npz"] and target.read_bytes() == before
    with pytest.raises(IsADirectoryError):
        mlp().save(tmp_path)


def test_saved_models_of_every_backend_setting_load(tmp_path):
    # None (default kernels), "float", a kernel name: all round-trip through the file
    x, _ = blobs(0, 6)
    for backend in (None, "float", "reference"):
        model = mlp(backend=backend)
        model.forward(x)
        model.save(tmp_path / "m.npz")
        loaded = Sequential.load(tmp_path / "m.npz")
        assert loaded[3].backend == backend
        assert_exact(loaded.forward(x, training=False), model.forward(x, training=False))
