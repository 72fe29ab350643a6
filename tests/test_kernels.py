"""Kernel properties: every fast kernel equals its slow reference twin, exactly.

Each property runs on every available backend (``backend`` fixture).  Shrunk
counterexamples that ever failed are pinned as parametrize cases below the property.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minibnn import kernels
from minibnn.kernels import bitpack, reference
from minibnn.testing import (assert_exact, check_binary_conv2d, check_binary_matmul,
                             check_maxpool, check_pack_roundtrip, check_unfold, check_xnor_gemm, conv_cases,
                             gemm_operands, real_arrays, k_values)

rng = np.random.default_rng(20161205)


# ---------------------------------------------------------------- pack / unpack

@given(st.tuples(st.integers(1, 4), k_values(300)).flatmap(lambda s: real_arrays(s)))
def test_pack_roundtrip_property(x):
    check_pack_roundtrip(x)


@pytest.mark.parametrize("k", [1, 63, 64, 65, 128, 4100])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.int64, np.float16])
def test_pack_roundtrip_dtypes(k, dtype):
    check_pack_roundtrip((rng.standard_normal((3, k)) * 3).astype(dtype))


def test_pack_convention_by_hand():
    # sign(0) = +1 and -0.0 = +1; bit 1 = +1; LSB first; padding bits zero
    x = np.array([1.0, -1.0, 0.0, -0.0, -3.0])
    assert kernels.pack(x)[0] == 0b01101
    assert kernels.pack(np.ones(70)).tolist() == [2**64 - 1, 0b111111]


def test_pack_leading_axes():
    x = rng.standard_normal((2, 3, 130))
    assert_exact(kernels.pack(x), reference.pack(x))
    assert kernels.pack(x).shape == (2, 3, 3)


def test_pack_uint32_view_convention():
    # the CUDA path reads the same buffer as uint32: element k -> word k // 32, bit k % 32
    x = rng.standard_normal((2, 100))
    w32 = kernels.pack(x).view(np.uint32)
    for k in range(100):
        assert bool((w32[1, k // 32] >> np.uint32(k % 32)) & 1) == (x[1, k] >= 0)


# ---------------------------------------------------------------- xnor_gemm

@given(gemm_operands())
def test_xnor_gemm_property(backend, ab):
    check_xnor_gemm(*ab, backend=backend)


@given(gemm_operands())
def test_xnor_gemm_prepared_property(backend, ab):
    check_xnor_gemm(*ab, backend=backend, prepared=True)


# pinned cases: edges of the CPU micro-kernel tiling (4 rows x 3 panels of 8 columns,
# 128-row tasks) and word boundaries
@pytest.mark.parametrize("m,k,n", [
    (1, 1, 1), (1, 64, 1), (4, 65, 24), (5, 63, 25), (3, 129, 8), (129, 200, 23),
    (130, 1000, 49), (7, 4096, 33), (2, 2500, 9)])
def test_xnor_gemm_cases(backend, m, k, n):
    check_xnor_gemm(rng.standard_normal((m, k)), rng.standard_normal((n, k)), backend=backend)


def test_xnor_gemm_all_equal_and_all_opposite(backend):
    ones = np.ones((3, 130))
    k = 130
    assert_exact(kernels.xnor_gemm(kernels.pack(ones), kernels.pack(ones), k, backend=backend),
                 np.full((3, 3), 130, np.int32))
    assert_exact(kernels.xnor_gemm(kernels.pack(ones), kernels.pack(-ones), k, backend=backend),
                 np.full((3, 3), -130, np.int32))


def test_xnor_gemm_out_reused(backend):
    a, b = rng.standard_normal((6, 100)), rng.standard_normal((5, 100))
    out = np.full((6, 5), 7, dtype=np.int32)
    res = kernels.xnor_gemm(kernels.pack(a), kernels.pack(b), 100, out=out, backend=backend)
    assert res is out
    assert_exact(out, reference.binary_matmul(a, b.T))


@pytest.mark.parametrize("m,n", [(0, 5), (5, 0), (0, 0)])
def test_xnor_gemm_empty(backend, m, n):
    a = np.zeros((m, 2), np.uint64)
    b = np.zeros((n, 2), np.uint64)
    assert kernels.xnor_gemm(a, b, 100, backend=backend).shape == (m, n)


def test_xnor_gemm_large_k_cpu_baseline_equals_fast():
    from minibnn.kernels import cpu
    a = kernels.pack(rng.standard_normal((37, 3000)))
    b = kernels.pack(rng.standard_normal((29, 3000)))
    out = np.empty((37, 29), np.int32)
    cpu.gemm_simple(a, b, 3000, out)
    assert_exact(kernels.xnor_gemm(a, b, 3000, backend="cpu"), out)


# ---------------------------------------------------------------- binary_matmul

@given(gemm_operands())
def test_binary_matmul_property(backend, ab):
    a, b = ab
    check_binary_matmul(a, b.T.copy(), backend=backend)


# ---------------------------------------------------------------- binary_conv2d

@given(conv_cases())
def test_binary_conv2d_property(backend, case):
    check_binary_conv2d(*case, backend=backend)


@pytest.mark.parametrize("shape_x,shape_w,stride,padding", [
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0),        # H' = W' = 1
    ((1, 1, 1, 1), (1, 1, 3, 3), 1, 1),        # all but one tap on the border
    ((2, 3, 5, 5), (4, 3, 3, 3), 1, 1),
    ((1, 65, 6, 7), (9, 65, 3, 2), 2, 1),
    ((2, 130, 5, 5), (3, 130, 5, 5), 1, 2),
    ((1, 2, 3, 3), (2, 2, 3, 3), 1, 2),        # padding wider than half the kernel
    ((2, 4, 7, 6), (5, 4, 3, 3), 3, 0),
    ((1, 16, 9, 9), (17, 16, 3, 3), 2, 1),     # F not a multiple of 8
])
def test_binary_conv2d_cases(backend, shape_x, shape_w, stride, padding):
    x = rng.standard_normal(shape_x)
    x[x < -1.2] = 0.0
    check_binary_conv2d(x, rng.standard_normal(shape_w), stride, padding, backend=backend)


def test_binary_conv2d_zero_padding_is_not_minus_one(backend):
    # all-(-1) input: with zero padding the corner output of a 3x3 all-(+1) filter is -4,
    # not -9 (which is what padding with -1 would give) nor -4 + 5 (padding with +1)
    x = -np.ones((1, 1, 4, 4))
    w = np.ones((1, 1, 3, 3))
    out = kernels.binary_conv2d(x, w, padding=1, backend=backend)
    assert out[0, 0, 0, 0] == -4 and out[0, 0, 1, 1] == -9 and out[0, 0, 0, 1] == -6


# ---------------------------------------------------------------- bad input

def test_pack_rejects_nan_and_bad_types():
    with pytest.raises(ValueError, match="NaN"):
        kernels.pack(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="NaN"):
        kernels.pack(np.array([[1.0, np.nan]]), backend="reference")
    with pytest.raises(TypeError):
        kernels.pack(np.array(["a", "b"]))
    with pytest.raises(TypeError):
        kernels.pack(np.array([True, False]))
    with pytest.raises(ValueError, match="K = 0"):
        kernels.pack(np.zeros((3, 0)))
    with pytest.raises(ValueError):
        kernels.pack(np.float64(1.0))


def test_unpack_rejects_bad_input():
    with pytest.raises(TypeError):
        kernels.unpack(np.zeros((2, 1), np.int64), 10)
    with pytest.raises(ValueError, match="ceil"):
        kernels.unpack(np.zeros((2, 1), np.uint64), 65)
    with pytest.raises(ValueError):
        kernels.unpack(np.zeros((2, 1), np.uint64), 0)
    with pytest.raises(TypeError):
        kernels.unpack(np.zeros((2, 1), np.uint64), 1.5)


@pytest.mark.parametrize("bad,err,match", [
    (dict(a=np.zeros((3, 2), np.int64)), TypeError, "uint64"),
    (dict(b=np.zeros((3, 2), np.float32)), TypeError, "uint64"),
    (dict(b=np.zeros((3, 3), np.uint64)), ValueError, "words"),
    (dict(a=np.zeros((3, 3), np.uint64)), ValueError, "words"),
    (dict(k=0), ValueError, ">= 1"),
    (dict(k=-5), ValueError, ">= 1"),
    (dict(k=2.0), TypeError, "integer"),
    (dict(k=200), ValueError, "words"),
    (dict(a=np.zeros((4, 2), np.uint64)[:, ::-1]), ValueError, "contiguous"),
    (dict(a=np.zeros((2,), np.uint64)), ValueError, "2-D"),
    (dict(out=np.zeros((3, 4), np.int64)), TypeError, "int32"),
    (dict(out=np.zeros((4, 3), np.int32)), ValueError, "shape"),
    (dict(out=np.zeros((3, 8), np.int32)[:, ::2]), ValueError, "contiguous"),
    (dict(backend="gpu"), ValueError, "unknown backend"),
])
def test_xnor_gemm_rejects(bad, err, match):
    args = dict(a=np.zeros((3, 2), np.uint64), b=np.zeros((4, 2), np.uint64), k=100, out=None,
                backend=None)
    args.update(bad)
    with pytest.raises(err, match=match):
        kernels.xnor_gemm(args["a"], args["b"], args["k"], out=args["out"], backend=args["backend"])


def test_prepared_weights_checked():
    bw = kernels.pack(rng.standard_normal((5, 100)))
    pw = kernels.prepare_weights(bw, 100, backend="cpu")
    a = kernels.pack(rng.standard_normal((2, 100)))
    with pytest.raises(ValueError, match="prepared for backend"):
        kernels.xnor_gemm(a, pw, 100, backend="reference")
    with pytest.raises(ValueError):
        kernels.xnor_gemm(kernels.pack(rng.standard_normal((2, 90))), pw, 90, backend="cpu")
    with pytest.raises(ValueError, match="words"):
        kernels.prepare_weights(bw, 200)


def test_binary_matmul_rejects():
    with pytest.raises(ValueError, match="inner"):
        kernels.binary_matmul(np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        kernels.binary_matmul(np.array([[np.nan]]), np.ones((1, 1)))
    with pytest.raises(ValueError, match="2-D"):
        kernels.binary_matmul(np.ones(3), np.ones((3, 1)))
    with pytest.raises(TypeError):
        kernels.binary_matmul(np.ones((2, 2), dtype=complex), np.ones((2, 2)))
    assert kernels.binary_matmul(np.ones((0, 3)), np.ones((3, 2))).shape == (0, 2)


@pytest.mark.parametrize("xs,ws,kw,err,match", [
    ((1, 2, 5, 5), (3, 4, 3, 3), {}, ValueError, "channels"),
    ((1, 2, 5), (3, 2, 3, 3), {}, ValueError, "4-D"),
    ((1, 2, 2, 2), (3, 2, 3, 3), {}, ValueError, "larger than"),
    ((1, 2, 5, 5), (3, 2, 3, 3), dict(stride=0), ValueError, ">= 1"),
    ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding=-1), ValueError, ">= 0"),
    ((1, 2, 5, 5), (3, 2, 3, 3), dict(stride=1.5), TypeError, "integer"),
    ((1, 0, 5, 5), (3, 0, 3, 3), {}, ValueError, "zero-size"),
])
def test_binary_conv2d_rejects(xs, ws, kw, err, match):
    with pytest.raises(err, match=match):
        kernels.binary_conv2d(np.ones(xs), np.ones(ws), **kw)


def test_binary_conv2d_rejects_nan(backend):
    x = np.ones((1, 2, 4, 4))
    x[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kernels.binary_conv2d(x, np.ones((1, 2, 3, 3)), backend=backend)


def test_binary_conv2d_empty_batch(backend):
    assert kernels.binary_conv2d(np.ones((0, 2, 5, 5)), np.ones((3, 2, 3, 3)), padding=1,
                                 backend=backend).shape == (0, 3, 5, 5)


# ---------------------------------------------------------------- backends

def test_backend_selection(monkeypatch):
    assert {"reference", "cpu"} <= set(kernels.available_backends())
    monkeypatch.setenv("MINIBNN_BACKEND", "reference")
    from minibnn.kernels.backend import resolve_name
    assert resolve_name(None) == "reference"
    monkeypatch.setenv("MINIBNN_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_name(None)


def test_unavailable_backend_fails_at_selection():
    if "cuda" in kernels.available_backends():
        pytest.skip("cuda is available here")
    with pytest.raises(kernels.BackendUnavailable, match="cuda"):
        kernels.get_backend("cuda")
    with pytest.raises(kernels.BackendUnavailable):
        kernels.xnor_gemm(np.zeros((1, 1), np.uint64), np.zeros((1, 1), np.uint64), 3, backend="cuda")


def test_n_words():
    assert [bitpack.n_words(k) for k in (1, 63, 64, 65, 128, 129)] == [1, 1, 1, 2, 2, 3]


@given(st.tuples(k_values(200), st.integers(1, 19)).flatmap(lambda s: real_arrays(s)))
def test_pack_columns_equals_pack_of_transpose(x):
    assert_exact(kernels.pack_columns(x), reference.pack(x.T))


def test_pack_columns_rejects():
    with pytest.raises(ValueError, match="NaN"):
        kernels.pack_columns(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="2-D"):
        kernels.pack_columns(np.ones(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_sign_f32(dtype):
    x = np.array([[-2, -0.0, 0, 3], [1, -1, 0.5, -0.5]]).astype(dtype)
    assert_exact(kernels.sign_f32(x), reference.sign(x).astype(np.float32))


@given(st.tuples(k_values(200), st.integers(1, 19)).flatmap(lambda s: real_arrays(s)))
def test_sign_pack_columns(x):
    signs, words = kernels.sign_pack_columns(x)
    assert_exact(signs, reference.sign(x).astype(np.float32))
    assert_exact(words, reference.pack(x.T))


# ---------------------------------------------------------------- float im2col / col2im
# (training backward of every convolution: minibnn.kernels.unfold vs its NumPy twin)

@given(conv_cases(max_c=9), st.sampled_from([np.float32, np.float64]))
def test_unfold_property(case, dtype):
    x, w, stride, padding = case
    check_unfold(x.astype(dtype), w.shape[2], w.shape[3], stride, padding)


@pytest.mark.parametrize("shape,k,stride,padding", [
    ((50, 64, 8, 8), (3, 3), 1, 1),      # the CIFAR layout's first binary layer, smaller
    ((1, 1, 1, 1), (1, 1), 1, 0),
    ((2, 3, 5, 5), (5, 5), 1, 2),        # kernel = image: every window reaches the border
    ((2, 2, 7, 6), (3, 2), 3, 2),        # stride larger than the kernel: skipped pixels
])
def test_unfold_cases(shape, k, stride, padding):
    check_unfold(rng.standard_normal(shape).astype(np.float32), *k, stride, padding)


@pytest.mark.parametrize("call,match", [
    (lambda F: F.im2col(np.zeros((2, 3, 4)), 3, 3), "must be .N, C, H, W."),
    (lambda F: F.im2col(np.zeros((1, 1, 2, 2)), 3, 3), "larger than the padded image"),
    (lambda F: F.im2col(np.zeros((1, 1, 4, 4)), 3, 3, stride=0), "stride must be"),
    (lambda F: F.im2col(np.zeros((1, 1, 4, 4)), 3, 3, padding=-1), "padding must be"),
    (lambda F: F.col2im(np.zeros((5, 9)), (1, 1, 4, 4), 3, 3), r"cols must be \(4, 9\)"),
])
def test_unfold_rejects_bad_geometry(call, match):
    from minibnn import functional as F
    with pytest.raises(ValueError, match=match):
        call(F)


# ---------------------------------------------------------------- max pooling (float)

@given(st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 7), st.integers(1, 7),
                 st.integers(1, 3), st.integers(1, 3)).filter(lambda t: t[4] <= min(t[2], t[3]))
       .flatmap(lambda t: st.tuples(real_arrays(t[:4]), st.just(t[4]), st.just(t[5]))),
       st.sampled_from([np.float32, np.float64]))
def test_maxpool_property(case, dtype):
    x, k, s = case
    check_maxpool(x.astype(dtype), k, s)      # real_arrays has exact zeros: ties are drawn


@pytest.mark.parametrize("shape,k,s", [((2, 3, 32, 32), 2, 2), ((1, 2, 5, 7), 3, 1),
                                       ((1, 1, 3, 3), 3, 3)])
def test_maxpool_cases(shape, k, s):
    x = np.round(rng.standard_normal(shape), 1).astype(np.float32)   # many ties
    check_maxpool(x, k, s)


# ---------------------------------------------------------------- padding bits and k (issue 11.1)

def test_xnor_gemm_rejects_set_padding_bits(backend):
    # before the check: all-ones padding in a counted 54 extra "differences": -118, not 10
    ones = np.full((1, 1), 2**64 - 1, np.uint64)
    zero = np.zeros((1, 1), np.uint64)
    with pytest.raises(ValueError, match="a_words has nonzero padding bits"):
        kernels.xnor_gemm(ones, zero, 10, backend=backend)
    with pytest.raises(ValueError, match="b_words has nonzero padding bits"):
        kernels.xnor_gemm(zero, ones, 10, backend=backend)
    with pytest.raises(ValueError, match="b_words has nonzero padding bits"):
        kernels.prepare_weights(ones, 10, backend=backend)
    # bit 9 is the last real bit of k=10: allowed; bit 10 is padding
    last = np.array([[1 << 9]], np.uint64)
    assert kernels.xnor_gemm(last, zero, 10, backend=backend)[0, 0] == 8
    with pytest.raises(ValueError, match="padding bits"):
        kernels.xnor_gemm(np.array([[1 << 10]], np.uint64), zero, 10, backend=backend)
    # k a multiple of 64 has no padding bits
    assert kernels.xnor_gemm(ones, zero, 64, backend=backend)[0, 0] == -64


def test_xnor_gemm_padding_bits_named_row():
    a = np.zeros((5, 2), np.uint64)
    a[3, 1] = np.uint64(1) << np.uint64(63)
    with pytest.raises(ValueError, match=r"row 3"):
        kernels.xnor_gemm(a, np.zeros((2, 2), np.uint64), 100)


@pytest.mark.parametrize("k,err,match", [
    (2**31, ValueError, "<= 2147483647"),
    (-1, ValueError, ">= 1"),
    (np.int64(64), None, None),
    (True, TypeError, "integer"),
    (63.0, TypeError, "integer"),
])
def test_xnor_gemm_k_range(k, err, match):
    a = np.zeros((1, 1), np.uint64)
    if err is None:
        assert kernels.xnor_gemm(a, a, k)[0, 0] == 64
        return
    with pytest.raises(err, match=match):
        kernels.xnor_gemm(a, a, k)


def test_hand_made_prepared_weights_rejected(backend):
    # a PreparedWeights built by hand must not reach a kernel that trusts its layout
    a = kernels.pack(rng.standard_normal((3, 100)))
    bad = kernels.PreparedWeights(backend, np.zeros((1, 2, 8), np.uint64), 40, 100)
    with pytest.raises(ValueError, match="prepared weights"):
        kernels.xnor_gemm(a, bad, 100, backend=backend)


# ---------------------------------------------------------------- geometry (issue 11)

def test_binary_conv2d_huge_padding_is_a_clear_error():
    # before: NumPy's "array is too big" from inside the backend
    with pytest.raises(ValueError, match="padding=1000000000"):
        kernels.binary_conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), padding=10**9)


def test_geometry_is_one_formula():
    from minibnn import functional
    from minibnn.kernels import geometry
    assert kernels.conv_output_size is geometry.conv_output_size
    assert functional.conv_output_size(7, 3, 2, 1) == geometry.conv_output_size(7, 3, 2, 1) == 4


# ---------------------------------------------------------------- packed inference kernels vs twins

@given(st.integers(0, 9), k_values(200), st.integers(0, 2**31 - 1))
def test_threshold_pack_vs_twin(n, d, seed):
    r = np.random.default_rng(seed)
    s = r.integers(-20, 21, (n, d)).astype(np.int32)
    t = r.integers(-20, 21, d).astype(np.int32)
    got = kernels.threshold_pack(s, t)
    assert_exact(got, reference.threshold_pack(s, t), "threshold_pack vs reference")
    assert_exact(kernels.threshold_pack(s, t, backend="reference"), got)


@given(st.integers(0, 6), k_values(200), st.integers(0, 2**31 - 1))
def test_pack_bitplanes_vs_twin(n, k, seed):
    p = np.random.default_rng(seed).integers(0, 256, (n, k)).astype(np.uint8)
    got = kernels.pack_bitplanes(p)
    assert_exact(got, reference.pack_bitplanes(p), "pack_bitplanes vs reference")


@given(st.integers(1, 9), k_values(300), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_bitplane_gemm_vs_twin(backend, m, k, n, seed):
    r = np.random.default_rng(seed)
    p = r.integers(0, 256, (m, k)).astype(np.uint8)
    w = np.where(r.random((n, k)) < 0.5, -1.0, 1.0)
    planes, words = kernels.pack_bitplanes(p), kernels.pack(w)
    exact = ((2 * p.astype(np.int64) - 255) @ w.T.astype(np.int64)).astype(np.int32)
    assert_exact(reference.bitplane_gemm(planes, words, k), exact, "reference twin")
    assert_exact(kernels.bitplane_gemm(planes, words, k, backend=backend), exact,
                 f"bitplane_gemm[{backend}]")
    prep = kernels.prepare_weights(words, k, backend=backend)
    assert_exact(kernels.bitplane_gemm(planes, prep, k, backend=backend), exact)


@pytest.mark.parametrize("m,k,n", [(4, 65, 24), (5, 63, 25), (129, 200, 23), (1, 784, 9)])
def test_bitplane_gemm_cases(backend, m, k, n):
    p = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.standard_normal((n, k))
    planes, words = kernels.pack_bitplanes(p), kernels.pack(w)
    assert_exact(kernels.bitplane_gemm(planes, words, k, backend=backend),
                 reference.bitplane_gemm(planes, words, k))


@given(st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 7), st.integers(1, 7),
                 st.integers(1, 3), st.integers(1, 3)).filter(lambda t: t[4] <= min(t[2], t[3])),
       st.integers(0, 2**31 - 1))
def test_int_maxpool_vs_twin(case, seed):
    *shape, k, s = case
    x = np.random.default_rng(seed).integers(-5, 6, shape).astype(np.int32)   # many ties
    out, arg = kernels.maxpool2d(x, k, s)
    want, want_arg = reference.maxpool2d(x, k, s)
    assert_exact(out, want, "int32 maxpool values")
    assert_exact(arg, want_arg, "int32 maxpool argmax")
    assert_exact(kernels.maxpool2d(x, k, s, backend="reference")[0], want)


def test_packed_kernels_reject():
    with pytest.raises(TypeError, match="integer"):
        kernels.threshold_pack(np.zeros((2, 3)), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="shape"):
        kernels.threshold_pack(np.zeros((2, 3), np.int32), np.zeros(4, np.int32))
    with pytest.raises(TypeError, match="uint8"):
        kernels.pack_bitplanes(np.zeros((2, 3), np.int16))
    planes = kernels.pack_bitplanes(np.zeros((2, 70), np.uint8))
    with pytest.raises(ValueError, match="8 bit planes"):
        kernels.bitplane_gemm(planes[:4].copy(), np.zeros((3, 2), np.uint64), 70)
    with pytest.raises(ValueError, match="padding bits"):
        kernels.bitplane_gemm(planes, np.full((3, 2), 2**64 - 1, np.uint64), 70)
    with pytest.raises(ValueError, match="NaN"):
        kernels.maxpool2d(np.full((1, 1, 2, 2), np.nan), 2)
    with pytest.raises(ValueError, match="window 3x3 larger"):
        kernels.maxpool2d(np.zeros((1, 1, 2, 2), np.int32), 3)
