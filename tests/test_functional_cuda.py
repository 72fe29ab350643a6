"""Device twins (functional_cuda, losses_cuda, kernels.optim_cuda) against their CPU ops.

Each test feeds the same inputs to the NumPy op and to its device twin and compares:

* binary parts (signs, XNOR products of +-1 inputs, packed weights, argmax, masks'
  support, counts) bit for bit;
* float parts within ``rtol = 1e-5`` (``atol`` scaled by the largest magnitude): the
  device accumulates float32 products in another order than BLAS (SGEMM) and reduces in
  float64 where NumPy reduces in float32, so results agree to float32 rounding, not bit
  for bit.

Runs on a GPU or in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), where every
CUDA thread is a Python thread: shapes are tiny (K around 70-130 to cross word
boundaries, a few rows, channels <= 3, 5x5 images) but still span several thread blocks
(:data:`minibnn.kernels.cuda_float.SGEMM_SIM` tiles are 8 x 8).
"""

import numpy as np
import pytest

from minibnn import functional as F
from minibnn import kernels, losses, optim, quantize

if "cuda" not in kernels.available_backends():
    pytest.skip("the cuda backend is not available here (no GPU; set NUMBA_ENABLE_CUDASIM=1 "
                "to run the device twins in Numba's simulator)", allow_module_level=True)

from numba import cuda  # noqa: E402

from minibnn import functional_cuda as G  # noqa: E402
from minibnn import losses_cuda as LG  # noqa: E402

RTOL = 1e-5



# the simulator runs the counter-based RNG's uint64 arithmetic as NumPy scalars, which
# warn on the (intended) wraparound; compiled kernels do not
# faster barriers in the simulator: the fixture is in tests/conftest.py
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.usefixtures("fast_simulator_barriers")]


def rng_for(seed):
    return np.random.default_rng(seed)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a, dtype=np.float32))


def host(a):
    return None if a is None else a.copy_to_host()


def close(got, want, rtol=RTOL, what=""):
    want = np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=rtol,
                               atol=rtol * scale, err_msg=what)


def exact(got, want, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert np.array_equal(got, want), what


def pm1(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def real(rng, shape, zeros=True):
    x = rng.standard_normal(shape).astype(np.float32)
    if zeros:
        x.flat[::7] = 0.0
    return x


# ---------------------------------------------------------------- input, sign, STE

def test_as_input_passes_float32_and_casts_integers():
    x = dev(np.arange(6).reshape(2, 3))
    assert G.as_input(x) is x
    xi = cuda.to_device(np.arange(6, dtype=np.int32).reshape(2, 3))
    got = G.as_input(xi)
    assert got.dtype == np.float32
    exact(host(got), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_as_input_copies_strided_2d():
    a = np.arange(20, dtype=np.float32).reshape(4, 5)
    got = G.as_input(cuda.to_device(a)[:, 1:4])
    exact(host(got), a[:, 1:4])


@pytest.mark.parametrize("bad, exc, phrase", [
    (np.zeros((2, 2), np.float32), TypeError, "device array"),
    ("f64", TypeError, "float64"),
    ("bool", TypeError, "real array"),
])
def test_as_input_rejects_with_the_name(bad, exc, phrase):
    if isinstance(bad, str):
        bad = cuda.to_device(np.zeros((2, 2), np.float64 if bad == "f64" else np.bool_))
    with pytest.raises(exc, match=phrase) as info:
        G.as_input(bad, "images")
    assert "images" in str(info.value)


def test_sign_and_ste_match_quantize():
    r = rng_for(1)
    x = real(r, (3, 70)) * 2
    x[0, :3] = [-0.0, 1.0, -1.0]
    out, cache = G.ste_sign_forward(dev(x))
    exact(host(out), quantize.sign(x))
    g = real(r, x.shape)
    exact(host(G.ste_sign_backward(dev(g), cache)), quantize.ste_sign_backward(g, x))


def test_sign_nan_raises():
    x = np.zeros((2, 40), np.float32)
    x[1, 33] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        G.sign(dev(x))


def test_stochastic_sign_statistics_and_determinism():
    x = np.repeat(np.array([[-2.0, -0.5, 0.0, 0.5, 2.0]], np.float32), 400, axis=0)
    out = host(G.stochastic_sign(dev(x), np.random.default_rng(3)))
    assert set(np.unique(out)) <= {-1.0, 1.0}
    frac_plus = (out == 1).mean(axis=0)               # hard_sigmoid: 0, .25, .5, .75, 1
    np.testing.assert_allclose(frac_plus, [0, 0.25, 0.5, 0.75, 1], atol=0.07)
    again = host(G.stochastic_sign(dev(x), np.random.default_rng(3)))
    exact(again, out, "same generator state, same draws")


def test_check_finite_copy_into_running_average():
    x = np.ones((3, 40), np.float32)
    G.check_finite(dev(x), "input")
    x[2, 39] = np.inf
    with pytest.raises(ValueError, match="input contains infinity"):
        G.check_finite(dev(x), "input")
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="input contains NaN"):
        G.check_finite(dev(x), "input")
    dst = dev(np.zeros((2, 3)))
    G.copy_into(dst, dev(np.arange(6).reshape(2, 3)))
    exact(host(dst), np.arange(6, dtype=np.float32).reshape(2, 3))
    r, b = np.arange(5, dtype=np.float32), np.ones(5, np.float32)
    dr = dev(r)
    close(host(G.running_average(dr, dev(b), 0.1)), F.running_average(r, b, 0.1))
    exact(host(dr), r, "running is not changed")


def test_hardtanh():
    r = rng_for(2)
    x = real(r, (4, 33)) * 2
    out, cache = G.hardtanh_forward(dev(x))
    want, wcache = F.hardtanh_forward(x)
    exact(host(out), want)
    g = real(r, x.shape)
    exact(host(G.hardtanh_backward(dev(g), cache)), F.hardtanh_backward(g, wcache))


# ---------------------------------------------------------------- dense

@pytest.mark.parametrize("n, k, f", [(5, 70, 9), (3, 130, 17), (1, 1, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_dense(n, k, f, bias):
    r = rng_for(n * k + f)
    x, w = real(r, (n, k)), real(r, (k, f))
    b = real(r, (f,)) if bias else None
    out, cache = G.dense_forward(dev(x), dev(w), dev(b) if bias else None)
    want, wcache = F.dense_forward(x, w, b)
    close(host(out), want, what="out")
    g = real(r, (n, f))
    got = G.dense_backward(dev(g), cache)
    for name, a, e in zip(("dx", "dw", "db"), got, F.dense_backward(g, wcache)):
        if e is None:
            assert a is None
        else:
            close(host(a), e, what=name)


@pytest.mark.parametrize("n, k, f", [(5, 70, 9), (7, 129, 20), (2, 64, 3)])
@pytest.mark.parametrize("backend", ["float", None])
@pytest.mark.parametrize("bias", [False, True])
def test_binary_dense_hidden_is_exact(n, k, f, backend, bias):
    r = rng_for(n + k + f)
    x, w = pm1(r, (n, k)), real(r, (k, f))
    b = real(r, (f,)) if bias else None
    out, cache = G.binary_dense_forward(dev(x), dev(w), dev(b) if bias else None,
                                        binary_input=True, backend=backend)
    want, wcache = F.binary_dense_forward(x, w, b, binary_input=True, backend="float")
    if bias:
        close(host(out), want)       # the integer product plus a float32 bias: exact too
    exact(host(out) - (b if bias else 0), want - (b if bias else 0), "x_b @ sign(w)")
    exact(host(cache["w_b"]), wcache["w_b"], "w_b")
    assert ("prepared" in cache) == (backend != "float")
    if backend != "float":       # the packed columns are the CPU packer's bits
        words = np.ascontiguousarray(host(cache["prepared"].data)).view(np.uint64)
        exact(words, kernels.pack_columns(w), "packed sign(w)")
    g = real(r, (n, f))
    got = G.binary_dense_backward(dev(g), cache)
    for name, a, e in zip(("dx", "dw", "db"), got, F.binary_dense_backward(g, wcache)):
        if e is None:
            assert a is None
        else:
            close(host(a), e, what=name)


def test_binary_dense_real_input_takes_float_path():
    r = rng_for(3)
    x, w = real(r, (4, 70)), real(r, (70, 6))
    out, cache = G.binary_dense_forward(dev(x), dev(w), binary_input=True, backend="cuda")
    close(host(out), F.binary_dense_forward(x, w)[0])
    assert "prepared" not in cache          # not +-1: no packed form, float SGEMM


def test_binary_dense_prepared_weights_reused():
    r = rng_for(4)
    x, w = pm1(r, (3, 100)), real(r, (100, 5))
    prep = G.prepare_binary_weights(dev(w), "cuda")
    out, cache = G.binary_dense_forward(dev(x), dev(w), backend="cuda", prepared=prep)
    assert cache["prepared"] is prep
    exact(host(out), F.binary_dense_forward(x, w)[0])


def test_binary_dense_nan_weight_and_shape_errors():
    w = np.ones((70, 3), np.float32)
    w[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        G.binary_dense_forward(dev(np.ones((2, 70))), dev(w), backend="cuda")
    with pytest.raises(ValueError, match="binary_dense_forward"):
        G.binary_dense_forward(dev(np.ones((2, 71))), dev(np.ones((70, 3))))
    with pytest.raises(TypeError, match="w must be a CUDA device array"):
        G.binary_dense_forward(dev(np.ones((2, 70))), np.ones((70, 3), np.float32))


# ---------------------------------------------------------------- batch norm

@pytest.mark.parametrize("shape", [(6, 9), (3, 3, 5, 5)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm(shape, mode):
    r = rng_for(sum(shape))
    x = real(r, shape) * 3 + 1
    C = shape[1]
    gamma, beta = real(r, (C,)), real(r, (C,))
    rm, rv = real(r, (C,)), (np.abs(real(r, (C,))) + 0.5).astype(np.float32)
    drm, drv = dev(rm), dev(rv)
    out, cache = G.batchnorm_forward(dev(x), dev(gamma), dev(beta), mode, drm, drv, 0.1, 1e-4)
    want, wcache = F.batchnorm_forward(x, gamma, beta, mode, rm, rv, 0.1, 1e-4)
    close(host(out), want, what="out")
    close(host(drm), rm, what="running_mean")      # updated in place (train) or untouched
    close(host(drv), rv, what="running_var")
    assert set(cache) == set(wcache)
    if mode == "train":
        close(host(cache["batch_mean"]), wcache["batch_mean"])
        close(host(cache["batch_var"]), wcache["batch_var"])
    g = real(r, shape)
    got = G.batchnorm_backward(dev(g), cache)
    for name, a, e in zip(("dx", "dgamma", "dbeta"), got, F.batchnorm_backward(g, wcache)):
        close(host(a), e, rtol=1e-4, what=name)   # sums of m products: rounding grows


def test_batchnorm_eval_needs_running_stats():
    with pytest.raises(ValueError, match="running_mean"):
        G.batchnorm_forward(dev(np.ones((2, 3))), dev(np.ones(3)), dev(np.zeros(3)), "eval")



# ---------------------------------------------------------------- shift-based batch norm

def test_ap2_matches_quantize_bit_for_bit():
    tiny32, big32 = np.finfo(np.float32).tiny, np.finfo(np.float32).max
    edges = [2.0 ** k * np.sqrt(2.0) for k in (-130, -20, -1, 0, 3, 126)]   # round-up edges
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 0.75, -3.0, tiny32,
                  tiny32 / 3, -np.float32(2.0 ** -149), big32, -big32, 2.0 ** 127 * 1.5]
                 + edges, dtype=np.float32)
    near = np.concatenate([np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))])
    spread = real(rng_for(11), (200,)) * 10.0 ** rng_for(12).integers(-8, 8, 200)
    x = np.concatenate([x, near, spread.astype(np.float32)])
    with np.errstate(over="ignore"):
        want = quantize.ap2(x)
    got = host(G.ap2(dev(x)))
    assert got.dtype == want.dtype == np.float32
    # bit patterns: +0 vs -0 and NaN payloads count too
    exact(got.view(np.uint32), want.view(np.uint32))


def _sbn_inputs(shape, dyadic):
    """x, gamma, beta, running stats; dyadic: small multiples of 1/4 (every sum, mean and
    AP2 product exact in float32, so train mode is exact on both sides too)."""
    r = rng_for(sum(shape) + dyadic)
    C = shape[1]
    if dyadic:
        x = (r.integers(-12, 13, shape) / 4).astype(np.float32)
    else:
        x = real(r, shape) * 3 + 1
    gamma, beta = real(r, (C,)), real(r, (C,))
    rm, rv = real(r, (C,)), (np.abs(real(r, (C,))) + 0.5).astype(np.float32)
    return x, gamma, beta, rm, rv


@pytest.mark.parametrize("shape", [(8, 5), (2, 3, 2, 2)])        # m = 8 values per feature
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dyadic", [False, True])
def test_shift_batchnorm(shape, mode, dyadic):
    x, gamma, beta, rm, rv = _sbn_inputs(shape, dyadic)
    drm, drv = dev(rm), dev(rv)
    out, cache = G.shift_batchnorm_forward(dev(x), dev(gamma), dev(beta), mode, drm, drv,
                                           0.1, 1e-4)
    want, wcache = F.shift_batchnorm_forward(x, gamma, beta, mode, rm, rv, 0.1, 1e-4)
    assert set(cache) == set(wcache)
    # eval: x - mean, 1/sqrt, and products by powers of two: NumPy's float32 ops exactly;
    # train on dyadic inputs: the batch sums are exact too
    same = exact if (mode == "eval" or dyadic) else close
    for k in ("c", "a", "r", "s", "xhat", "g"):
        if wcache[k] is None:
            assert cache[k] is None, k
        else:
            same(host(cache[k]), wcache[k], what=k)
    same(host(out), want, what="out")
    if mode == "train":
        same(host(cache["batch_mean"]), wcache["batch_mean"], what="batch_mean")
        same(host(cache["batch_var"]), wcache["batch_var"], what="batch_var")
    close(host(drm), rm, what="running_mean")      # updated in place (train) or untouched
    close(host(drv), rv, what="running_var")
    g = real(rng_for(3), shape)
    got = G.shift_batchnorm_backward(dev(g), cache)
    for name, a, e in zip(("dx", "dgamma", "dbeta"), got, F.shift_batchnorm_backward(g, wcache)):
        close(host(a), e, rtol=1e-4, what=name)


def test_shift_batchnorm_layer_on_device_matches_cpu():
    from minibnn.device import to_device
    from minibnn.layers import ShiftBatchNorm
    from minibnn.model import Sequential

    x, gamma, beta, _, _ = _sbn_inputs((2, 3, 2, 2), False)
    cpu = Sequential([ShiftBatchNorm(3, spatial=True)])
    cpu.layers[0].params["gamma"][...] = gamma
    cpu.layers[0].params["beta"][...] = beta
    import copy
    gpu = copy.deepcopy(cpu)
    to_device(gpu)
    want = cpu.forward(x, training=True)
    got = gpu.forward(dev(x), training=True)
    close(host(got), want)
    for n in ("running_mean", "running_var"):
        close(host(gpu.layers[0].buffers[n]), cpu.layers[0].buffers[n], what=n)
    g = real(rng_for(4), x.shape)
    close(host(gpu.backward(dev(g))), cpu.backward(g), rtol=1e-4)


def test_shift_batchnorm_errors():
    with pytest.raises(ValueError, match="running_mean"):
        G.shift_batchnorm_forward(dev(np.ones((2, 3))), dev(np.ones(3)), dev(np.zeros(3)), "eval")
    with pytest.raises(ValueError, match="gamma"):
        G.shift_batchnorm_forward(dev(np.ones((2, 3))), dev(np.ones(4)), dev(np.zeros(3)))
    with pytest.raises(TypeError, match="beta"):
        G.shift_batchnorm_forward(dev(np.ones((2, 3))), dev(np.ones(3)), np.zeros(3, np.float32))


# ---------------------------------------------------------------- dropout, flatten

def test_dropout_statistics_and_backward():
    r = rng_for(5)
    x = real(r, (40, 50), zeros=False)
    p = 0.25
    gen = np.random.default_rng(0)
    out, mask = G.dropout_forward(dev(x), p, "train", gen)
    m = host(mask)
    scale = np.float32(1.0) / np.float32(1.0 - p)
    assert set(np.unique(m)) <= {0.0, scale}
    kept = (m != 0).mean()
    assert abs(kept - (1 - p)) < 0.05            # 2000 draws: sd of the mean ~0.01
    exact(host(out), x * m, "out = x * mask")
    g = real(r, x.shape)
    exact(host(G.dropout_backward(dev(g), mask)), F.dropout_backward(g, m), "dx = g * mask")
    # a second draw from the same layer's generator gives a different mask; the same
    # generator state gives the same mask
    assert not np.array_equal(host(G.dropout_forward(dev(x), p, "train", gen)[1]), m)
    same = G.dropout_forward(dev(x), p, "train", np.random.default_rng(0))[1]
    exact(host(same), m)


def test_dropout_eval_is_identity():
    x = dev(np.ones((2, 3)))
    out, cache = G.dropout_forward(x, 0.5, "eval", np.random.default_rng(0))
    assert out is x and cache is None
    assert G.dropout_backward(x, None) is x


def test_flatten_roundtrip():
    x = np.arange(2 * 3 * 5 * 5, dtype=np.float32).reshape(2, 3, 5, 5)
    out, cache = G.flatten_forward(dev(x))
    exact(host(out), F.flatten(x))
    exact(host(G.flatten_backward(out, cache)), x)


# ---------------------------------------------------------------- convolution, pooling

CONV_CASES = [  # (N, C, H, W, F, k, stride, padding)
    (2, 3, 5, 5, 4, 3, 1, 1),
    (1, 2, 5, 5, 3, 2, 2, 0),
    (2, 1, 5, 4, 2, 3, 2, 2),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_col2im(case):
    N, C, H, W, _, k, s, p = case
    r = rng_for(sum(case))
    x = real(r, (N, C, H, W))
    cols = G.im2col(dev(x), k, k, s, p)
    exact(host(cols), F.im2col(x, k, k, s, p), "im2col")
    c = real(r, cols.shape)
    close(host(G.col2im(dev(c), x.shape, k, k, s, p)), F.col2im(c, x.shape, k, k, s, p))


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv2d(case, bias):
    N, C, H, W, Fo, k, s, p = case
    r = rng_for(sum(case) + bias)
    x, w = real(r, (N, C, H, W)), real(r, (Fo, C, k, k))
    b = real(r, (Fo,)) if bias else None
    out, cache = G.conv2d_forward(dev(x), dev(w), dev(b) if bias else None, s, p)
    want, wcache = F.conv2d_forward(x, w, b, s, p)
    close(host(out), want)
    g = real(r, want.shape)
    for name, a, e in zip(("dx", "dw", "db"), G.conv2d_backward(dev(g), cache),
                          F.conv2d_backward(g, wcache)):
        if e is None:
            assert a is None
        else:
            close(host(a), e, what=name)


@pytest.mark.parametrize("case", CONV_CASES + [(1, 70, 3, 3, 2, 2, 1, 1)])
@pytest.mark.parametrize("backend", ["float", "cuda"])
def test_binary_conv2d_hidden_is_exact(case, backend):
    N, C, H, W, Fo, k, s, p = case
    r = rng_for(sum(case))
    x, w = pm1(r, (N, C, H, W)), real(r, (Fo, C, k, k))
    out, cache = G.binary_conv2d_forward(dev(x), dev(w), None, s, p, True, backend)
    want, wcache = F.binary_conv2d_forward(x, w, None, s, p, True, "float")
    exact(host(out), want, "x_b (*) sign(w), zero padding")
    exact(host(cache["w_b"]), wcache["w_b"])
    assert (cache["cols"] is None) == (backend != "float")
    g = real(r, want.shape)
    for name, a, e in zip(("dx", "dw", "db"), G.binary_conv2d_backward(dev(g), cache),
                          F.binary_conv2d_backward(g, wcache)):
        if e is None:
            assert a is None
        else:
            close(host(a), e, what=name)


@pytest.mark.parametrize("shape, k, s", [((2, 3, 5, 5), 2, 2), ((1, 2, 5, 5), 3, 1),
                                          ((1, 1, 4, 5), 2, 1)])
def test_maxpool(shape, k, s):
    r = rng_for(sum(shape) + k)
    x = np.round(real(r, shape) * 2) / 2        # ties: the first maximum wins
    out, cache = G.maxpool2d_forward(dev(x), k, s)
    want, wcache = F.maxpool2d_forward(x, k, s)
    exact(host(out), want)
    exact(host(cache[1]), wcache[1], "argmax")
    g = real(r, want.shape)
    close(host(G.maxpool2d_backward(dev(g), cache)), F.maxpool2d_backward(g, wcache))


# ---------------------------------------------------------------- losses

@pytest.mark.parametrize("n, c", [(5, 10), (33, 3)])
def test_losses(n, c):
    r = rng_for(n * c)
    s = real(r, (n, c))
    y = r.integers(0, c, n)
    yd = cuda.to_device(y.astype(np.int32))
    for dev_fn, cpu_fn in ((LG.squared_hinge, losses.squared_hinge),
                           (LG.softmax_cross_entropy, losses.softmax_cross_entropy)):
        loss, grad = dev_fn(dev(s), yd)
        wl, wg = cpu_fn(s, y)
        assert isinstance(loss, float)
        close(loss, wl, what=dev_fn.__name__)
        close(host(grad), wg, what=dev_fn.__name__)
    s[0, :] = s[0, 0]                            # a tie: the first maximal class counts
    assert LG.error_rate(dev(s), yd) == losses.error_rate(s, y)
    assert LG.error_count(dev(s), yd) == round(losses.error_rate(s, y) * n)


def test_losses_refuse_nan_and_bad_labels():
    s = np.zeros((3, 4), np.float32)
    y = cuda.to_device(np.array([0, 1, 2], np.int32))
    s[1, 2] = np.nan
    for fn in (LG.squared_hinge, LG.softmax_cross_entropy):
        with pytest.raises(ValueError, match="NaN"):
            fn(dev(s), y)
    with pytest.raises(ValueError, match="labels must be in"):
        LG.squared_hinge(dev(np.zeros((3, 4))), cuda.to_device(np.array([0, 4, 1], np.int32)))
    with pytest.raises(ValueError, match="y must be"):
        LG.squared_hinge(dev(np.zeros((3, 4))), cuda.to_device(np.array([0, 1], np.int32)))


# ---------------------------------------------------------------- optimizer kernels

@pytest.mark.parametrize("rule", ["adam", "adamax", "shift_adamax", "sgd", "sgd_momentum"])
@pytest.mark.parametrize("clip", [False, True])
def test_optim_kernels_match_the_cpu_kernels(rule, clip):
    from minibnn.kernels import optim_cpu as OC
    from minibnn.kernels import optim_cuda as OG
    r = rng_for(6)
    shape = (70, 9)
    p0 = np.clip(real(r, shape), -1, 1) * 0.01       # near 0: some signs flip
    g = real(r, shape)
    m0, v0 = real(r, shape) * 0.1, np.abs(real(r, shape)) * 0.1
    p, m, v = p0.copy(), m0.copy(), v0.copy()
    dp, dm, dv = dev(p0), dev(m0), dev(v0)
    flips = OG.new_counter()
    if rule == "adam":
        OC.adam_update(p, g, m, v, 0.3, 0.9, 0.999, 1e-8, 3, clip)
        OG.adam_update(dp, dev(g), dm, dv, 0.3, 0.9, 0.999, 1e-8, 3, clip, flips=flips)
    elif rule in ("adamax", "shift_adamax"):
        cpu_fn, dev_fn = getattr(OC, rule + "_update"), getattr(OG, rule + "_update")
        cpu_fn(p, g, m, v, 0.3, 0.9, 0.999, 1e-8, 3, clip)
        dev_fn(dp, dev(g), dm, dv, 0.3, 0.9, 0.999, 1e-8, 3, clip, flips=flips)
    else:
        mom = 0.9 if rule == "sgd_momentum" else 0.0
        OC.sgd_update(p, g, m if mom else None, 0.05, mom, True, clip)
        OG.sgd_update(dp, dev(g), dm if mom else None, 0.05, mom, True, clip, flips=flips)
    # float64 registers on both sides, one float32 rounding on store: equal up to the
    # last bit where the device's sqrt/division round differently from libm
    close(host(dp), p, rtol=1e-6, what=f"{rule} param")
    close(host(dm), m, rtol=1e-6, what=f"{rule} m")
    close(host(dv), v, rtol=1e-6, what=f"{rule} v")
    want_flips = int(np.count_nonzero((p0 >= 0) != (host(dp) >= 0)))
    assert want_flips > 0
    assert OG.read_counter(flips) == want_flips


def test_bop_update_matches_the_readable_rule():
    from minibnn.kernels import optim_cuda as OG
    r = rng_for(8)
    shape = (70, 9)
    p0 = pm1(r, shape)
    g = real(r, shape)
    m0 = real(r, shape) * 1e-3
    m0.flat[::5] = 0.0
    p, m = p0.copy(), m0.copy()
    dp, dm = dev(p0), dev(m0)
    flips = OG.new_counter()
    optim.bop_update(p, g, m, 0.05, 1e-3)
    OG.bop_update(dp, dev(g), dm, 0.05, 1e-3, flips=flips)
    close(host(dm), m, rtol=1e-6, what="m")
    exact(host(dp), p, what="p")
    n = int(np.count_nonzero(p != p0))
    assert 0 < n < p.size and OG.read_counter(flips) == n
    OG.bop_update(dp, dev(g), dm, 0.05, 1e-3)          # without a counter
    optim.bop_update(p, g, m, 0.05, 1e-3)
    exact(host(dp), p, what="p, second step")
    w = np.array([[0.3, -0.0, 0.0, -2.0, np.nan]], np.float32)
    dw = dev(w)
    OG.set_signs(dw)
    exact(host(dw), np.where(w >= 0, 1.0, -1.0).astype(np.float32))
    with pytest.raises(TypeError, match="bop_update"):
        OG.bop_update(dp, g, dm, 0.05, 1e-3)           # a host gradient


def test_optim_module_contract():
    from minibnn.kernels import optim_cpu as OC
    from minibnn.kernels import optim_cuda as OG
    assert set(OC.__all__) <= set(OG.__all__)
    a = dev(np.ones((3, 4)))
    assert OG.fusable(a, a, None) and not OG.fusable(a, np.ones((3, 4), np.float32))
    assert not OG.fusable(a, dev(np.ones((4, 3))))
    z = OG.zeros_like(a)
    exact(OG.to_host(z), np.zeros((3, 4), np.float32))
    exact(OG.to_host(OG.from_host(np.eye(3, dtype=np.float32))), np.eye(3, dtype=np.float32))
    g = np.zeros((5, 7), np.float32)
    g[1, 2], g[3, 4], g[4, 6] = np.nan, np.inf, -np.inf
    assert OG.count_nonfinite(dev(g)) == OC.count_nonfinite(g) == 3


def test_count_nonfinite_many_matches_the_cpu():
    from minibnn.kernels import optim_cpu as OC
    from minibnn.kernels import optim_cuda as OG
    a = real(rng_for(9), (70, 9))
    a.flat[[0, 100, 629]] = [np.nan, np.inf, -np.inf]
    grads = [a, np.zeros(3, np.float32), np.full((2, 2), np.nan, np.float32),
             np.zeros((0, 4), np.float32), a]
    want = [3, 0, 4, 0, 3]
    assert OG.count_nonfinite_many([dev(g) for g in grads]) == OC.count_nonfinite_many(grads) == want
    assert OG.count_nonfinite_many([]) == []
    ints = cuda.to_device(np.arange(4, dtype=np.int32))
    assert OG.count_nonfinite_many([ints, dev(grads[2])]) == [0, 4]
    strided = dev(np.zeros((4, 6)))[:, ::2]
    with pytest.raises(ValueError, match=r"grads\[1\] must be C-contiguous"):
        OG.count_nonfinite_many([dev(a), strided])


def _stepped_pair(seed=10):
    """(cpu model, device copy, their Adams) after one step from the same state, with the
    gradients of a second batch in place."""
    import copy

    from minibnn import device, zoo
    r = rng_for(seed)
    x = r.uniform(-1, 1, (4, 12)).astype(np.float32)
    y = r.integers(0, 10, 4)
    cpu = zoo.mnist_mlp(hidden=8, depth=2, in_features=12, seed=0)
    gpu = device.to_device(copy.deepcopy(cpu))
    opts = optim.Adam(cpu, lr=0.01), optim.Adam(gpu, lr=0.01)
    for i in range(2):
        cpu.backward(losses.squared_hinge(cpu.forward(x), y)[1])
        gpu.backward(LG.squared_hinge(gpu.forward(dev(x)), cuda.to_device(y.astype(np.int32)))[1])
        if i == 0:
            for opt in opts:
                opt.step()          # the state slots exist from here on
    return cpu, gpu, opts


def test_optimizer_step_on_device_copies_to_the_host_once(monkeypatch):
    # issue 13: the finite-gradient check of a step was one counter copy per parameter
    # (one device synchronization each); now one copy for all, and nothing goes up
    _, gpu, (_, opt) = _stepped_pair()
    names = [n for n, _, _, _ in gpu.parameters()]
    assert len(names) > 4
    cls = type(dev(np.zeros(1)))
    down, up = [], []
    to_host, to_device = cls.copy_to_host, cuda.to_device
    monkeypatch.setattr(cls, "copy_to_host",
                        lambda self, *a, **k: down.append(self.shape) or to_host(self, *a, **k))
    monkeypatch.setattr(cuda, "to_device", lambda *a, **k: up.append(1) or to_device(*a, **k))
    opt.step()
    assert down == [(len(names),)] and up == []
    assert opt.t == 2


def test_nonfinite_gradient_on_device_raises_like_the_cpu():
    cpu, gpu, (opt_c, opt_g) = _stepped_pair(11)
    for model in (cpu, gpu):
        for k, (_, _, g, _) in enumerate(model.parameters()):
            if k in (2, 4):                 # two bad gradients: the first one is named
                bad = g.copy() if isinstance(g, np.ndarray) else g.copy_to_host()
                bad.flat[:2] = [np.nan, np.inf] if k == 2 else [-np.inf, np.nan]
                if isinstance(g, np.ndarray):
                    g[...] = bad
                else:
                    g.copy_to_device(bad)
    before = [host(p) for _, p, _, _ in gpu.parameters()]
    errors = []
    for opt in (opt_c, opt_g):
        with pytest.raises(ValueError, match="gradient has 2 non-finite value") as info:
            opt.step()
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    assert f"parameter '{list(gpu.parameters())[2][0]}'" in errors[1]
    for (n, p, _, _), b in zip(gpu.parameters(), before):
        exact(host(p), b, n)
    assert opt_g.t == opt_c.t == 1


# ---------------------------------------------------------------- device residency

def test_dataset_gather_and_model_roundtrip():
    from minibnn import device, zoo
    r = rng_for(7)
    x = real(r, (10, 2, 3, 3))
    y = r.integers(0, 10, 10)
    data = device.DeviceDataset(x, y)
    xb, yb = data.gather(np.array([3, 0, 9]))
    exact(host(xb), x[[3, 0, 9]])
    exact(host(yb), y[[3, 0, 9]].astype(np.int32))
    seen = np.concatenate([host(b) for _, b in data.batches(4, rng=0)])
    exact(np.sort(seen), np.sort(y).astype(np.int32))          # one epoch: each row once
    with pytest.raises(IndexError, match="indices"):
        data.gather([10])
    model = zoo.mnist_mlp(hidden=8, depth=1, in_features=20, seed=0)
    before = {n: p.copy() for n, p, _, _ in model.parameters()}
    device.to_device(model)
    assert all(G.is_device_array(p) for _, p, _, _ in model.parameters())
    assert all(G.is_device_array(b) for _, b in model.buffers())
    device.to_host(model)
    for n, p, _, _ in model.parameters():
        assert isinstance(p, np.ndarray)
        exact(p, before[n], n)


def test_training_steps_on_device_match_the_cpu():
    """model.forward / loss / model.backward / opt.step with everything on the device
    (layers dispatch to functional_cuda, Adam to optim_cuda) track the CPU run."""
    import copy

    from minibnn import device, zoo
    r = rng_for(8)
    x = r.uniform(-1, 1, (6, 20)).astype(np.float32)
    y = r.integers(0, 10, 6)
    cpu = zoo.mnist_mlp(hidden=33, depth=2, in_features=20, seed=0)   # 33: two 32-bit words
    gpu = device.to_device(copy.deepcopy(cpu))
    opt_c, opt_g = optim.Adam(cpu, lr=0.01), optim.Adam(gpu, lr=0.01)
    xd, yd = dev(x), cuda.to_device(y.astype(np.int32))
    for _ in range(2):
        sc = cpu.forward(x)
        lc, gc = losses.squared_hinge(sc, y)
        cpu.backward(gc)
        opt_c.step()
        sg = gpu.forward(xd)
        lg, gg = LG.squared_hinge(sg, yd)
        gpu.backward(gg)
        opt_g.step()
        close(host(sg), sc, rtol=1e-5, what="scores")
        close(lg, lc, rtol=1e-5, what="loss")
    for (n, p, g, _), (_, pd, gd, _) in zip(cpu.parameters(), gpu.parameters()):
        # Adam divides by sqrt(v): float32-rounding differences of tiny gradients move a
        # weight by up to ~lr * lr_scale * 1e-3, hence the looser tolerance on params
        close(host(pd), p, rtol=1e-4, what=n)
        close(host(gd), g, rtol=1e-4, what=n + " grad")
    for (n, b), (_, bd) in zip(cpu.buffers(), gpu.buffers()):
        close(host(bd), b, rtol=1e-5, what=n)
    device.optimizer_to_host(opt_g)
    assert all(isinstance(a, np.ndarray) for slot in opt_g.state.values() for a in slot.values())
