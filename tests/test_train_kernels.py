"""Training kernels (minibnn.kernels.conv_train) against their slow NumPy twins."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minibnn import functional
from minibnn.kernels import conv_train
from minibnn.testing import assert_exact, conv_cases

rng = np.random.default_rng(14)


def _dout_for(x, w, padding, seed=0):
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    Ho, Wo = H + 2 * padding - KH + 1, W + 2 * padding - KW + 1
    return np.random.default_rng(seed).standard_normal((N, F, Ho, Wo)).astype(x.dtype)


def _check_backward(x, w, padding):
    """conv_backward == the im2col formula (reference twin), to rounding."""
    F = w.shape[0]
    KH, KW = w.shape[2:]
    d = _dout_for(x, w, padding)
    wm = np.where(w >= 0, 1.0, -1.0).astype(x.dtype).reshape(F, -1)
    assert conv_train.supported(x, d, wm, 1)
    dx, dw = conv_train.conv_backward(d, x, wm, KH, KW, padding)
    rdx, rdw = conv_train.conv_backward_reference(d, x, wm, KH, KW, padding)
    assert dx.shape == x.shape and dx.dtype == x.dtype and dx.flags.c_contiguous
    assert dw.shape == rdw.shape and dw.dtype == x.dtype
    # each entry sums at most C*KH*KW (dx) or N*H'*W' (dw) products of |d| * 1
    eps = np.finfo(x.dtype).eps
    scale = np.abs(d).max() + 1e-30
    tol_dx = 4 * F * KH * KW * eps * scale
    tol_dw = 4 * d[:, 0].size * eps * scale * max(1.0, np.abs(x).max())
    np.testing.assert_allclose(dx, rdx, rtol=0, atol=tol_dx)
    np.testing.assert_allclose(dw, rdw, rtol=0, atol=tol_dw)


@given(conv_cases(max_c=9, max_hw=8), st.sampled_from([np.float32, np.float64]))
def test_conv_backward_property(case, dtype):
    x, w, _, padding = case                    # stride 1 only: the path's domain
    if x.shape[2] + 2 * padding < w.shape[2] or x.shape[3] + 2 * padding < w.shape[3]:
        return
    _check_backward(x.astype(dtype), w.astype(dtype), padding)


@pytest.mark.parametrize("shape,f,k,padding", [
    ((3, 64, 8, 8), 16, (3, 3), 1),       # the paper's layout, smaller: shared borders
    ((2, 3, 5, 7), 4, (3, 3), 3),         # padding > k - 1: the fully padded grid
    ((2, 2, 6, 5), 3, (1, 1), 0),         # 1x1
    ((2, 2, 5, 5), 2, (5, 5), 2),         # kernel = image
    ((1, 1, 1, 1), 1, (1, 1), 0),
    ((2, 3, 4, 9), 2, (2, 4), 1),         # rectangular kernel
])
def test_conv_backward_cases(shape, f, k, padding):
    x = rng.standard_normal(shape)
    w = rng.standard_normal((f, shape[1]) + k)
    for dtype in (np.float32, np.float64):
        _check_backward(x.astype(dtype), w.astype(dtype), padding)


def test_conv_backward_pm1_input_matches_functional_float_path():
    """The binary layer's backward (stride 1 -> conv_train) equals the im2col path."""
    x = np.where(rng.standard_normal((4, 5, 6, 6)) >= 0, 1.0, -1.0).astype(np.float32)
    w = rng.uniform(-1, 1, (3, 5, 3, 3)).astype(np.float32)
    out, cache = functional.binary_conv2d_forward(x, w, padding=1, backend="cpu")
    d = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, _ = functional.binary_conv2d_backward(d, cache)
    rdx, rdw = conv_train.conv_backward_reference(d, x, cache["w_b"].reshape(3, -1), 3, 3, 1)
    np.testing.assert_allclose(dx, rdx, atol=1e-4)
    np.testing.assert_allclose(dw.reshape(3, -1), rdw, atol=1e-4)


@given(st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 7), st.integers(1, 7),
                 st.integers(0, 3), st.integers(0, 9), st.integers(0, 9), st.booleans()),
       st.sampled_from([np.float32, np.float64]))
def test_layout_passes_match_twins(dims, dtype):
    N, C, H, W, padding, lead, tail, shared = dims
    x = np.random.default_rng(sum(dims)).standard_normal((N, C, H, W)).astype(dtype)
    grid = (H + padding, W + padding) if shared else None
    got = conv_train.pad_channel_major(x, padding, lead, tail, grid)
    assert_exact(got, conv_train.pad_channel_major_reference(x, padding, lead, tail, grid))
    back = conv_train.extract_interior(got, x.shape, padding, lead, grid)
    assert_exact(back, conv_train.extract_interior_reference(got, x.shape, padding, lead, grid))
    assert_exact(back, x)
    big = (H + padding + 1, W + 2)
    assert_exact(conv_train.embed_channel_major(x, big, lead, tail),
                 conv_train.embed_channel_major_reference(x, big, lead, tail))


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_strided_views_and_beta(ta, tb):
    """gemm reads row-strided and transposed views in place and accumulates with beta."""
    for dtype in (np.float32, np.float64):
        big_a = rng.standard_normal((7, 20)).astype(dtype)
        big_b = rng.standard_normal((9, 30)).astype(dtype)
        a = big_a[:, 3:3 + 5].T if ta else big_a[:5, 2:2 + 7]           # (5, 7)
        b = big_b[:7, 4:4 + 6] if not tb else big_b[:6, 1:1 + 7].T     # (7, 6)
        c0 = rng.standard_normal((5, 6)).astype(dtype)
        c = c0.copy()
        conv_train.gemm(a, b, c)
        np.testing.assert_allclose(c, a @ b, rtol=1e-5)
        conv_train.gemm(a, b, c, beta=1.0)
        np.testing.assert_allclose(c, 2 * (a @ b), rtol=1e-5)


def test_gemm_rejects_layouts_blas_cannot_read():
    a = np.ones((4, 4), np.float32)[::2, ::2]
    with pytest.raises(ValueError, match="no BLAS layout"):
        conv_train.gemm(a, np.ones((2, 2), np.float32), np.empty((2, 2), np.float32))


def test_supported_domain():
    x = np.ones((1, 1, 4, 4), np.float32)
    d = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 9), np.float32)
    assert conv_train.supported(x, d, w, 1)
    assert not conv_train.supported(x, d, w, 2)                       # stride 2
    assert not conv_train.supported(x, d.astype(np.float64), w, 1)    # mixed dtypes
    assert not conv_train.supported(x.astype(np.float16), d, w, 1)


# ---------------------------------------------------------------- fused batch norm
# twin: functional's NumPy rule, which runs where the kernel does not apply (forced here)

def _numpy_rule():
    from unittest import mock
    return mock.patch.object(functional.norm_cpu, "fusable", lambda *a: False)


# 4-D (N, C, H, W) and dense (N, D), D crossing the row kernels' feature blocks
@given(st.one_of(st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 6),
                           st.integers(1, 6)),
                 st.tuples(st.integers(1, 7),
                           st.sampled_from([1, 3, 255, 256, 257, 600]))),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31 - 1))
def test_batchnorm_train_kernels_match_numpy_rule(shape, dtype, seed):
    r = np.random.default_rng(seed)
    x = (r.standard_normal(shape) * 3 + 1).astype(dtype)
    gamma = r.uniform(0.5, 2, shape[1]).astype(dtype)
    beta = r.standard_normal(shape[1]).astype(dtype)
    d = r.standard_normal(shape).astype(dtype)
    assert functional.norm_cpu.fusable(x)
    out, cache = functional.batchnorm_forward(x, gamma, beta, "train")
    with _numpy_rule():
        ref_out, ref_cache = functional.batchnorm_forward(x, gamma, beta, "train")
    tol = 64 * np.finfo(dtype).eps
    assert out.dtype == ref_out.dtype == dtype
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol * 10)
    for k in ("xhat", "inv_std", "batch_mean", "batch_var"):
        assert cache[k].dtype == ref_cache[k].dtype
        np.testing.assert_allclose(cache[k], ref_cache[k], rtol=tol, atol=tol * 10)
    dx, dg, db = functional.batchnorm_backward(d, cache)
    with _numpy_rule():
        rdx, rdg, rdb = functional.batchnorm_backward(d, ref_cache)
    # the size of the terms that cancel in dx = gamma*inv_std/m * (m*d - sum d - xhat*sum d*xhat)
    m = d.size // shape[1]
    xh = np.abs(cache["xhat"]).max()
    terms = np.abs(gamma * cache["inv_std"]).max() * np.abs(d).max() * (2 + 2 * xh * xh)
    for got, ref, size in ((dx, rdx, terms), (dg, rdg, m * np.abs(d).max() * xh),
                           (db, rdb, m * np.abs(d).max())):
        assert got.dtype == ref.dtype
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * m * size)


def test_batchnorm_running_statistics_unchanged_by_fusion():
    x = rng.standard_normal((3, 4, 5, 5)).astype(np.float32)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    rm2, rv2 = rm.copy(), rv.copy()
    functional.batchnorm_forward(x, np.ones(4, np.float32), np.zeros(4, np.float32), "train",
                                 rm, rv, 0.1)
    with _numpy_rule():
        functional.batchnorm_forward(x, np.ones(4, np.float32), np.zeros(4, np.float32),
                                     "train", rm2, rv2, 0.1)
    np.testing.assert_allclose(rm, rm2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rv, rv2, rtol=1e-5)


def test_binary_conv2d_backward_rejects_wrong_dout_shape():
    """The stride-1 path's kernels do not bounds-check: a dout of the wrong shape must be
    refused before them (it failed inside NumPy's matmul before that path existed)."""
    x = np.ones((2, 3, 5, 5), np.float32)
    _, cache = functional.binary_conv2d_forward(x, np.ones((4, 3, 3, 3), np.float32),
                                                padding=1, backend="cpu")
    for shape in ((2, 4, 6, 6), (3, 4, 5, 5), (2, 5, 5, 5)):
        with pytest.raises(ValueError, match="dout must have shape"):
            functional.binary_conv2d_backward(np.ones(shape, np.float32), cache)


def test_batchnorm_wrong_gamma_shape_still_raises():
    x = np.ones((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError):
        functional.batchnorm_forward(x, np.ones(5, np.float32), np.zeros(5, np.float32))
