"""Test helpers and hypothesis strategies, shared by minibnn's tests and by users who
property-test their own kernels against minibnn's references.

One helper per kind of comparison:

* integer results: :func:`assert_exact` (shape, dtype and every value);
* a fast kernel against its slow twin: :func:`check_xnor_gemm`, :func:`check_binary_matmul`,
  :func:`check_binary_conv2d`, :func:`check_pack_roundtrip` (each one line in a test);
* float gradients: :func:`rel_error`, :func:`numeric_gradient` (central differences) and
  :func:`check_gradient`.

Strategies (need ``hypothesis``, the ``test`` extra): :func:`real_arrays` draws float
arrays that include exact zeros (sign(0) = +1 must hold) and :func:`gemm_shapes` /
:func:`conv_cases` bounded shapes with K not a multiple of 64.
"""

import numpy as np

from . import kernels
from .kernels import reference


# ---------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------

def assert_exact(got, expected, what="result"):
    """Integer results must match exactly: same shape, same dtype, same values."""
    got = np.asarray(got)
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype} != {expected.dtype}"
    np.testing.assert_array_equal(got, expected, err_msg=what)


def check_pack_roundtrip(x, backend=None):
    """pack -> unpack gives sign(x) and pack equals the reference packer bit for bit."""
    words = kernels.pack(x, backend=backend)
    assert_exact(words, reference.pack(x), "pack vs reference.pack")
    assert_exact(kernels.unpack(words, x.shape[-1]), reference.sign(x).astype(np.float32), "unpack(pack(x))")


def check_xnor_gemm(a, b, backend=None, prepared=False):
    """a (M, K), b (N, K) real: xnor_gemm of their packed signs == float sign(a) @ sign(b).T."""
    k = a.shape[1]
    bw = kernels.pack(b)
    if prepared:
        bw = kernels.prepare_weights(bw, k, backend=backend)
    got = kernels.xnor_gemm(kernels.pack(a), bw, k, backend=backend)
    assert_exact(got, reference.binary_matmul(a, b.T), f"xnor_gemm[{backend}]")


def check_binary_matmul(a, b, backend=None):
    """binary_matmul(a, b) == float sign(a) @ sign(b), exactly."""
    assert_exact(kernels.binary_matmul(a, b, backend=backend), reference.binary_matmul(a, b),
                 f"binary_matmul[{backend}]")


def check_binary_conv2d(x, w, stride, padding, backend=None):
    """binary_conv2d == naive float zero-padded cross-correlation of the signs, exactly."""
    assert_exact(kernels.binary_conv2d(x, w, stride=stride, padding=padding, backend=backend),
                 reference.binary_conv2d(x, w, stride=stride, padding=padding),
                 f"binary_conv2d[{backend}] stride={stride} padding={padding}")


def check_unfold(x, kh, kw, stride, padding):
    """Numba im2col == the NumPy twin bit for bit (a copy); col2im (a sum) to rounding.

    x (N, C, H, W) float32/float64.  col2im is fed random rows; its twin adds the same
    terms per pixel in another order, so the bound is a few ulps of the summed magnitude.
    """
    from .functional import col2im, im2col
    cols = im2col(x, kh, kw, stride, padding)
    assert_exact(cols, reference.im2col(x, kh, kw, stride, padding), "im2col vs reference")
    c = np.random.default_rng(cols.size).standard_normal(cols.shape).astype(x.dtype)
    got = col2im(c, x.shape, kh, kw, stride, padding)
    want = reference.col2im(c, x.shape, kh, kw, stride, padding)
    assert got.shape == x.shape and got.dtype == x.dtype and got.flags.c_contiguous
    tol = 8 * kh * kw * np.finfo(x.dtype).eps
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(c).max()))


def check_maxpool(x, k, s):
    """Numba max pooling == the NumPy twin: values and argmax exactly; the backward (a
    scatter-add, summed in another order where windows overlap) to rounding."""
    from .functional import maxpool2d_backward, maxpool2d_forward
    out, cache = maxpool2d_forward(x, k, s)
    want, want_arg = reference.maxpool2d(x, k, s)
    assert_exact(out, want, "maxpool values")
    assert_exact(cache[1], want_arg, "maxpool argmax")
    d = np.random.default_rng(out.size).standard_normal(out.shape).astype(x.dtype)
    got = maxpool2d_backward(d, cache)
    ref = reference.maxpool2d_backward(d, want_arg, x.shape, k, s)
    assert got.shape == x.shape and got.dtype == x.dtype
    tol = 8 * k * k * np.finfo(x.dtype).eps
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * max(1.0, np.abs(d).max()))


def rel_error(x, y):
    """max |x - y| / max(1e-8, |x| + |y|), elementwise (CS231n's gradient-check measure)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y)))) if x.size else 0.0


def numeric_gradient(f, x, dout, h=1e-6):
    """Central-difference gradient of ``sum(f(x) * dout)`` with respect to x (modified in
    place and restored).  x float64, any shape; returns an array shaped like x."""
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        pos = np.sum(f(x) * dout)
        x[i] = old - h
        neg = np.sum(f(x) * dout)
        x[i] = old
        grad[i] = (pos - neg) / (2 * h)
        it.iternext()
    return grad


def check_gradient(f, x, dout, analytic, tol=1e-6, h=1e-6):
    """Assert ``rel_error(analytic, numeric_gradient(f, x, dout)) < tol``; returns the error."""
    num = numeric_gradient(f, x, dout, h=h)
    err = rel_error(analytic, num)
    assert err < tol, f"gradient check failed: rel_error {err:.3e} >= {tol:.1e}"
    return err


# ---------------------------------------------------------------------------
# hypothesis strategies (bounded, so suites stay fast)
# ---------------------------------------------------------------------------

def real_arrays(shape, zeros=True):
    """float64 arrays of ``shape`` with values in [-2, 2]; about one in eight entries is an
    exact 0 (or -0.0) when ``zeros`` is true, so sign(0) = +1 is always exercised."""
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    values = st.floats(-2, 2, allow_nan=False, allow_infinity=False, width=64)
    if zeros:
        values = st.one_of(st.sampled_from([0.0, -0.0]), values, values, values, values,
                           values, values, values)
    return arrays(np.float64, shape, elements=values)


def k_values(max_k=300):
    """K from 1 to max_k, biased to word boundaries (1, 63, 64, 65, 127, 128, 129...)."""
    from hypothesis import strategies as st

    edges = [k for k in (1, 2, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256, 257) if k <= max_k]
    return st.one_of(st.sampled_from(edges), st.integers(1, max_k))


def gemm_shapes(max_m=9, max_n=17, max_k=300):
    """(M, K, N) with M, N >= 1 small and K around word boundaries."""
    from hypothesis import strategies as st

    return st.tuples(st.integers(1, max_m), k_values(max_k), st.integers(1, max_n))


def gemm_operands(max_m=9, max_n=17, max_k=300):
    """Draws ``(a (M, K), b (N, K))`` float64 with exact zeros."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        m, k, n = draw(gemm_shapes(max_m, max_n, max_k))
        return draw(real_arrays((m, k))), draw(real_arrays((n, k)))

    return build()


def conv_cases(max_n=2, max_c=70, max_hw=7, max_f=5, max_kernel=4):
    """Draws ``(x (N, C, H, W), w (F, C, KH, KW), stride, padding)`` with H', W' >= 1."""
    from hypothesis import assume, strategies as st

    @st.composite
    def build(draw):
        n = draw(st.integers(1, max_n))
        c = draw(st.one_of(st.sampled_from([1, 3, 64, 65]), st.integers(1, max_c)))
        h = draw(st.integers(1, max_hw))
        wd = draw(st.integers(1, max_hw))
        f = draw(st.integers(1, max_f))
        kh = draw(st.integers(1, max_kernel))
        kw = draw(st.integers(1, max_kernel))
        stride = draw(st.integers(1, 3))
        padding = draw(st.integers(0, 2))
        assume(h + 2 * padding >= kh and wd + 2 * padding >= kw)
        x = draw(real_arrays((n, c, h, wd)))
        w = draw(real_arrays((f, c, kh, kw)))
        return x, w, stride, padding

    return build()


# ---------------------------------------------------------------------------
# layers (minibnn.layers): gradient checks and +-1 inputs
# ---------------------------------------------------------------------------

def check_layer_gradients(layer, x, training=True, params=None, tol=1e-6, h=1e-6, seed=0):
    """Finite-difference check of a layer's ``backward``: d/dx and d/d(each param).

    ``layer`` must hold float64 params (``layer.astype(np.float64)``) and be
    deterministic (no dropout / stochastic sign in ``training`` mode, or reseeded);
    ``x`` is converted to float64.  A random ``dout`` (from ``seed``) is back-propagated
    once; then ``sum(forward(.) * dout)`` is differentiated numerically w.r.t. x and
    every name in ``params`` (default: all of ``layer.params``; pass ``[]`` for binary
    layers, whose forward uses sign(w) and has no finite-difference gradient in w).

    Returns ``{"x": rel_error, name: rel_error, ...}``; raises ``AssertionError`` naming
    the layer and the array whose error is >= ``tol``.
    """
    names = list(layer.params) if params is None else list(params)
    for k in names:
        if layer.params[k].dtype != np.float64:
            raise TypeError(f"check_layer_gradients: param {k!r} is {layer.params[k].dtype}; "
                            "call layer.astype(np.float64) first")
    x = np.array(x, dtype=np.float64)
    out = layer.forward(x, training=training)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    dx = layer.backward(dout)
    grads = {k: np.array(layer.grads[k], copy=True) for k in names}

    def run(name, f, arr, analytic):
        try:
            return check_gradient(f, arr, dout, analytic, tol=tol, h=h)
        except AssertionError as exc:
            raise AssertionError(f"{layer!r}: d/d{name}: {exc}") from None

    errors = {"x": run("x", lambda v: layer.forward(v, training=training), x, dx)}
    for k in names:
        # numeric_gradient perturbs layer.params[k] itself, in place
        errors[k] = run(k, lambda _: layer.forward(x, training=training), layer.params[k],
                        grads[k])
    return errors


def pm1_arrays(shape):
    """float32 arrays of ``shape`` with entries in {-1, +1}: the input of a hidden binary
    layer (the signs of :func:`real_arrays`, so sign(0) = +1 decides some entries)."""
    return real_arrays(shape).map(lambda a: np.where(a >= 0, 1.0, -1.0).astype(np.float32))
