"""``train(..., backend="cuda")`` and packed inference on the device, end to end.

Runs on a GPU or in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), where every
CUDA thread is a Python thread: the data are the embedded MNIST sample averaged down to
4 x 4 pixels (still 8-bit pixels, so the bit-plane first layer applies), the MLP has one
hidden layer of 16 units, batches of 8.  What is checked:

* one training step of the device loop (:class:`minibnn.device.DeviceLoop`) and of the
  host loop (:class:`minibnn.train.HostLoop`) from the same state: the same updated
  latent weights within ``rtol 1e-4`` wherever the gradient is more than float32 noise
  (above 1e-4 of its largest entry), and within two Adam steps (a first step moves a
  weight by at most ``lr * lr_scale``, each side either way) where it is noise; BN running statistics within
  ``1e-5``, the same error count, the loss within ``1e-5``;
* a 2-epoch device run writes a consistent run directory; interrupted inside its first
  epoch and resumed, it ends with ``last.npz`` (model, optimizer, random state) equal
  bit for bit to the uninterrupted run's and the same metrics rows; its ``best.npz``
  loads and evaluates on the CPU;
* the device packed model's predictions and integer sums equal the CPU packed model's
  (bit-plane first layer: exact; float first layer: equal on these images), for an MLP
  and a small ConvNet (packed convolutions, flip-aware integer pooling);
* the command line: ``train --backend cuda``, ``export``, ``eval --backend cuda``;
* one step with shift-based BN (``bn="shift"``) matches the CPU's as above;
* settings the device loop cannot train (Bop: its first-step set-up is host NumPy) are
  refused before anything is written,
  and the device loss accumulator sums like the host loop and reports a NaN batch.
"""

import json
import os
import sys

import numpy as np
import pytest

from minibnn import kernels

if "cuda" not in kernels.available_backends():
    pytest.skip("the cuda backend is not available here (no GPU; set NUMBA_ENABLE_CUDASIM=1 "
                "to run the device training loop in Numba's simulator)", allow_module_level=True)

from minibnn.checkpoint import load_checkpoint  # noqa: E402
from minibnn.data import load_dataset  # noqa: E402
from minibnn.data.datasets import Dataset  # noqa: E402
from minibnn.model import Sequential  # noqa: E402
from minibnn.packed import PackedModel  # noqa: E402
from minibnn.train import EpochState, HostLoop, Session, TrainConfig, evaluate, train  # noqa: E402

# faster barriers in the simulator: the fixture is in tests/conftest.py
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.usefixtures("fast_simulator_barriers")]
WALL_CLOCK = ("seconds", "elapsed")




def _pool(x):
    """(N, 1, 28, 28) float images 2p/255-1 -> (N, 4, 4) uint8 pixels (7 x 7 means)."""
    p = np.rint((x.astype(np.float64) + 1) * 127.5).reshape(len(x), 4, 7, 4, 7)
    return np.rint(p.mean(axis=(2, 4))).astype(np.uint8)


def _pool_back(x):
    """The uint8 pixels behind float images 2p/255-1 (the npz form of a dataset)."""
    return np.rint((x.astype(np.float64) + 1) * 127.5).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny():
    ds = load_dataset("sample")
    return Dataset.from_arrays(_pool(ds.x_train[:16]), ds.y_train[:16], _pool(ds.x_test[:8]),
                               ds.y_test[:8], _pool(ds.x_val[:8]), ds.y_val[:8], name="tiny")


def _config(**kw):
    base = dict(dataset="sample", hidden=16, depth=1, epochs=2, batch_size=8, backend="cuda",
                eval_batch_size=8, seed=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("bn", ["standard", "shift"])
def test_one_step_on_cuda_matches_cpu(tiny, bn):
    from minibnn.device import DeviceLoop

    host = Session(_config(backend="cpu", bn=bn), tiny, progress=False)
    dev = Session(_config(bn=bn), tiny, progress=False)
    for (n, p, _, _), (_, q, _, _) in zip(host.model.parameters(), dev.model.parameters()):
        np.testing.assert_array_equal(p, q, err_msg=n)          # same seed, same start
    start = {n: p.copy() for n, p, _, _ in host.model.parameters()}
    host.loop, dev.loop = HostLoop(host), DeviceLoop(dev)
    perm = np.random.default_rng(0).permutation(len(tiny.x_train))
    states = []
    for s in (host, dev):
        state = EpochState(0, perm, s.loop.new_tracker())
        s.loop.begin(state)
        s.loop.step(state, 0, 8)
        s.loop.sync(state)
        states.append(state)
    got = dev.loop.host_model()
    lr = host.opt.lr
    for (n, p, g, info), (_, q, _, _) in zip(host.model.parameters(), got.parameters()):
        assert not np.array_equal(p, start[n]), n                  # the step moved it
        # Adam's first step is lr * g / (|g| + eps): where the gradient is float32
        # rounding noise (an input feature constant over the batch: BN's backward removes
        # the batch mean) the two sides may move the weight differently, by at most one
        # step lr * lr_scale each; elsewhere they agree to rtol 1e-4
        real = np.abs(g) > 1e-4 * np.abs(g).max()
        np.testing.assert_allclose(q[real], p[real], rtol=1e-4, atol=1e-4, err_msg=n)
        step = lr * info.get("lr_scale", 1.0)
        assert np.all(np.abs(q - p) <= 2 * step * (1 + 1e-6)), n
    for (n, b), (_, c) in zip(host.model.buffers(), got.buffers()):
        np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-5, err_msg=n)
    (hs, ds_) = states
    assert hs.wrong == ds_.wrong and hs.seen == ds_.seen == 8
    np.testing.assert_allclose(ds_.loss_sum, hs.loss_sum, rtol=1e-5)
    # the STE-cancel statistic, counted on the device, equals the host's
    assert hs.tracker.summary(host.model)["ste_cancel"] == \
        ds_.tracker.summary(got)["ste_cancel"]


def _rows(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]


def test_cuda_run_resumes_bit_exact_and_best_evaluates_on_cpu(tiny, tmp_path):
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    quiet = dict(progress=False, log=lambda msg: None)
    summary = train(_config(), whole, dataset=tiny, **quiet)
    assert summary["finished"] and summary["epochs_planned"] == 2
    with open(os.path.join(whole, "config.json")) as f:
        assert json.load(f)["backend"] == "cuda"
    rows = _rows(whole)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]["flip_ratio"]) == {"1.w", "4.w"} and "3" in rows[0]["ste_cancel"]

    stopped = train(_config(), parts, dataset=tiny, stop_after_batches=1, **quiet)
    assert not stopped["finished"]
    train(None, parts, resume=True, dataset=tiny, **quiet)
    assert _rows(parts) == rows
    a_model, a_opt, a_meta, a_run = load_checkpoint(os.path.join(whole, "last.npz"), True)
    b_model, b_opt, b_meta, b_run = load_checkpoint(os.path.join(parts, "last.npz"), True)
    for a, b in ((a_model, b_model), (a_opt, b_opt)):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    assert a_meta["rng"] == b_meta["rng"] and a_meta["best"] == b_meta["best"]

    # best.npz is an ordinary model file: it loads and evaluates on the CPU, and its
    # test error there is the one the device run recorded (a float first layer could
    # move at most an image whose pre-activation is within float32 rounding of 0)
    best = Sequential.load(os.path.join(whole, "best.npz"))
    cpu_err = evaluate(best, tiny.x_test, tiny.y_test)
    assert abs(cpu_err - summary["test_error_at_best"]) <= 1 / len(tiny.y_test)


def test_cuda_run_with_shift_batchnorm(tiny, tmp_path):
    # the whole device loop with ShiftBatchNorm layers (Alg. 3): a 1-epoch run, whose
    # best.npz is a CPU model with the same test error as the device run recorded
    out = str(tmp_path / "shift")
    summary = train(_config(bn="shift", epochs=1), out, dataset=tiny, progress=False,
                    log=lambda msg: None)
    assert summary["finished"]
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1] and np.isfinite(rows[0]["train_loss"])
    best = Sequential.load(os.path.join(out, "best.npz"))
    assert any(type(layer).__name__ == "ShiftBatchNorm" for layer in best.layers)
    cpu_err = evaluate(best, tiny.x_test, tiny.y_test)
    assert abs(cpu_err - summary["test_error_at_best"]) <= 1 / len(tiny.y_test)


@pytest.mark.parametrize("first_layer", ["bitplane", "float"])
def test_device_packed_predictions_equal_cpu(tiny, tmp_path, first_layer):
    from minibnn import zoo
    model = zoo.mnist_mlp(hidden=40, depth=2, in_features=16, seed=5)
    # a few training-mode passes so the BN running statistics are not the defaults
    for i in range(0, 16, 8):
        model.forward(tiny.x_train[i:i + 8], training=True)
    path = str(tmp_path / "m.bnn")
    PackedModel.from_model(model, first_layer=first_layer, input_shape=(1, 4, 4)).save(path)
    cpu = PackedModel.load(path, backend="cpu")
    gpu = PackedModel.load(path, backend="cuda")
    assert gpu.device_resident and not cpu.device_resident   # not per-kernel copies
    x = np.concatenate([tiny.x_train, tiny.x_test])
    np.testing.assert_array_equal(gpu.integer_scores(x), cpu.integer_scores(x))
    np.testing.assert_array_equal(gpu.predict(x, batch_size=10), cpu.predict(x, batch_size=10))


def test_cuda_refuses_settings_without_device_twins_before_writing(tiny, tmp_path,
                                                                  monkeypatch):
    from minibnn.device import DeviceLoop
    from minibnn.kernels import BackendUnavailable
    # no setting lacks its twins today: check the mechanism with a stand-in entry
    monkeypatch.setattr(DeviceLoop, "UNSUPPORTED", {"bn": ("shift", "no twin (test)")})
    out = tmp_path / "shift"
    with pytest.raises(BackendUnavailable, match="bn 'shift'"):
        train(_config(bn="shift"), str(out), dataset=tiny, progress=False)
    assert not out.exists()


def test_one_bop_step_on_cuda_matches_cpu(tiny):
    """Bop on the device: the first step sets the binary weights to their signs with the
    twin's set_signs, then flips where |m| passes the threshold -- the same +-1 weights as
    on the CPU, up to flips whose p * m lies within float32 rounding of the threshold."""
    from minibnn.device import DeviceLoop

    host = Session(_config(backend="cpu", optimizer="bop"), tiny, progress=False)
    dev = Session(_config(optimizer="bop"), tiny, progress=False)
    host.loop, dev.loop = HostLoop(host), DeviceLoop(dev)
    perm = np.random.default_rng(0).permutation(len(tiny.x_train))
    for s in (host, dev):
        state = EpochState(0, perm, s.loop.new_tracker())
        s.loop.begin(state)
        for b in range(2):
            s.loop.step(state, 8 * b, 8 * b + 8)
        s.loop.sync(state)
    got = dev.loop.host_model()
    n_binary = 0
    for (n, p, _, info), (_, q, _, _) in zip(host.model.parameters(), got.parameters()):
        if info.get("binary"):
            n_binary += 1
            assert set(np.unique(q)) <= {-1.0, 1.0}, n
            assert np.mean(p != q) <= 1e-3, n
        else:                                   # BN's gamma/beta: Adam, as in the one-step test
            np.testing.assert_allclose(q, p, rtol=1e-3, atol=1e-3, err_msg=n)
    assert n_binary >= 2


def test_device_accumulator_sums_like_the_host_and_reports_bad_batches():
    from numba import cuda

    from minibnn import losses
    from minibnn.losses_cuda import Accumulator
    r = np.random.default_rng(4)
    acc = Accumulator("squared_hinge", loss_sum=1.5, wrong=2)
    want_sum, want_wrong = 1.5, 2
    for _ in range(2):
        s = r.standard_normal((5, 10)).astype(np.float32)
        y = r.integers(0, 10, 5)
        grad = acc.add(cuda.to_device(s), cuda.to_device(y.astype(np.int32)))
        loss, g = losses.squared_hinge(s, y, 10)
        np.testing.assert_allclose(grad.copy_to_host(), g, rtol=1e-6, atol=1e-7)
        want_sum += float(loss) * 5
        want_wrong += int(np.sum(np.argmax(s, axis=1) != y))
    got_sum, got_wrong = acc.read()
    assert got_wrong == want_wrong
    np.testing.assert_allclose(got_sum, want_sum, rtol=1e-6)
    s[0, 0] = np.nan
    acc.add(cuda.to_device(s), cuda.to_device(y.astype(np.int32)))
    with pytest.raises(ValueError, match="squared_hinge: scores contain NaN"):
        acc.read()


@pytest.mark.parametrize("first_layer", ["bitplane", "float"])
def test_device_packed_convnet_equals_cpu(tmp_path, first_layer):
    """The ConvNet path: packed convolutions, flip-aware integer max pooling, threshold +
    sign between convolutions, threshold + pack into the dense layers."""
    from minibnn import zoo
    r = np.random.default_rng(6)
    pixels = r.integers(0, 256, (3, 1, 8, 8)).astype(np.uint8)
    x = (pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0))
    model = zoo.cifar10_convnet(width=1 / 64, in_channels=1, image_size=8, fc_units=8, seed=2)
    model.forward(x, training=True)         # BN running statistics off their defaults
    for layer in model.layers:              # and some negative gammas: flipped channels
        if "gamma" in layer.params:
            g = layer.params["gamma"]
            g[::2] *= -1
    path = str(tmp_path / "c.bnn")
    PackedModel.from_model(model, first_layer=first_layer, input_shape=(1, 8, 8)).save(path)
    cpu = PackedModel.load(path, backend="cpu")
    gpu = PackedModel.load(path, backend="cuda")
    assert gpu.device_resident
    assert any(op.pool is not None and op.flip.any() for op in cpu.ops if op.threshold)
    np.testing.assert_array_equal(gpu.integer_scores(x), cpu.integer_scores(x))
    np.testing.assert_array_equal(gpu.predict(x), cpu.predict(x))


def test_cli_train_export_eval_on_cuda(tiny, tmp_path, capsys):
    """`minibnn train --backend cuda`, `export`, `eval --backend cuda` (device-resident)
    and `eval --backend cpu` of the same .bnn: the same test error."""
    from minibnn.cli import main
    data = tmp_path / "tiny.npz"
    np.savez(data, x_train=_pool_back(tiny.x_train), y_train=tiny.y_train,
             x_val=_pool_back(tiny.x_val), y_val=tiny.y_val,
             x_test=_pool_back(tiny.x_test), y_test=tiny.y_test)
    run, bnn = tmp_path / "run", tmp_path / "m.bnn"
    assert main(["train", "--dataset", f"npz:{data}", "--hidden", "16", "--depth", "1",
                 "--batch-size", "8", "--epochs", "1", "--backend", "cuda", "--no-progress",
                 "--out", str(run)]) == 0
    assert main(["export", str(run / "best.npz"), "--first-layer", "bitplane",
                 "--out", str(bnn)]) == 0
    capsys.readouterr()
    results = {}
    for backend in ("cuda", "cpu"):
        assert main(["eval", str(bnn), "--dataset", f"npz:{data}", "--backend", backend]) == 0
        results[backend] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["cuda"]["device_resident"] and not results["cpu"]["device_resident"]
    assert results["cuda"]["errors"] == results["cpu"]["errors"]


@pytest.mark.parametrize("op", ["binary_dense", "binary_conv2d"])
def test_device_backward_options_match_host(op):
    """The device twins honour ``need_dx=False`` and ``dw_out`` as the NumPy ops do:
    dx skipped, dw written into the given buffer (returned as that very array), values
    equal to the default call's."""
    from numba import cuda

    from minibnn import functional as F
    from minibnn import functional_cuda as G
    r = np.random.default_rng(5)
    if op == "binary_dense":
        x = np.where(r.standard_normal((4, 70)) >= 0, 1.0, -1.0).astype(np.float32)
        w = r.uniform(-1, 1, (70, 6)).astype(np.float32)
        fwd, bwd = "binary_dense_forward", "binary_dense_backward"
        kw = {}
    else:
        x = np.where(r.standard_normal((2, 2, 4, 4)) >= 0, 1.0, -1.0).astype(np.float32)
        w = r.uniform(-1, 1, (3, 2, 3, 3)).astype(np.float32)
        fwd, bwd = "binary_conv2d_forward", "binary_conv2d_backward"
        kw = {"padding": 1}
    out, hc = getattr(F, fwd)(x, w, backend="cpu", **kw)
    d = r.standard_normal(out.shape).astype(np.float32)
    _, want_dw, _ = getattr(F, bwd)(d, hc)
    _, dc = getattr(G, fwd)(cuda.to_device(x), cuda.to_device(w), backend="cuda", **kw)
    dd = cuda.to_device(d)
    dx, dw, _ = getattr(G, bwd)(dd, dc)
    assert dx is not None
    buf = cuda.to_device(np.full(w.shape, np.nan, np.float32))
    dx2, dw2, _ = getattr(G, bwd)(dd, dc, need_dx=False, dw_out=buf)
    assert dx2 is None and dw2 is buf
    np.testing.assert_allclose(buf.copy_to_host(), dw.copy_to_host(), rtol=0, atol=0)
    np.testing.assert_allclose(buf.copy_to_host(), want_dw, rtol=1e-5, atol=1e-5)
    wrong = cuda.to_device(np.zeros((1,) + w.shape, np.float32))   # not dw's shape: ignored
    _, dw3, _ = getattr(G, bwd)(dd, dc, dw_out=wrong)
    assert dw3 is not wrong and not wrong.copy_to_host().any()


def test_cuda_refuses_bfloat16_gradients():
    """The bfloat16 backward GEMM is a CPU kernel: the device loop refuses the setting at
    selection, naming it, and the device op refuses it too."""
    from minibnn import functional_cuda as G
    from minibnn.device import DeviceLoop
    from minibnn.kernels import BackendUnavailable
    with pytest.raises(BackendUnavailable, match="grad_dtype 'bfloat16'"):
        DeviceLoop.check(TrainConfig(dataset="sample", backend="cuda", grad_dtype="bfloat16"))
    with pytest.raises(ValueError, match="grad_dtype"):
        G.binary_dense_backward(None, {}, grad_dtype="bfloat16")
