"""bfloat16 GEMM (:mod:`minibnn.kernels.bf16`): the rounding by hand, the kernel against
its float64 twin :func:`minibnn.kernels.reference.matmul_bf16`, the NumPy fallback, and
the checks at the boundary.

Tolerance of the kernel, from float32 accumulation of K products of bf16 values (each
product exact in float32): ``|C - ref| <= K * 2**-23 * (|ra| @ |rb|) + 2 K * 2**-126``
(``ra``, ``rb`` the rounded operands; the last term covers the instruction flushing
subnormal partial sums to zero).  Exactly representable cases are compared exactly.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minibnn.kernels import bf16, reference

needs_kernel = pytest.mark.skipif(
    not bf16.available(),
    reason="this CPU lacks AVX512-BF16 (vdpbf16ps): only the NumPy fallback is tested")

rng = np.random.default_rng(14)


def bits(x):
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def f32(pattern):
    return np.array(pattern, dtype=np.uint32).view(np.float32)


def assert_close_bf16(got, a, b):
    """The kernel's result against the float64 twin, within the accumulation bound."""
    K = a.shape[1]
    want = reference.matmul_bf16(a, b)
    ra = np.abs(bf16.round_bf16(a).astype(np.float64))
    rb = np.abs(bf16.round_bf16(b).astype(np.float64))
    bound = K * 2.0 ** -23 * (ra @ rb) + 2 * K * 2.0 ** -126
    assert got.dtype == np.float32 and got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    with np.errstate(invalid="ignore"):     # inf - inf where both are inf
        ok = np.isnan(want) | (got == want) | (np.abs(got.astype(np.float64) - want) <= bound)
    assert ok.all(), f"first bad: {np.argwhere(~ok)[0]}, got {got[~ok][0]}, want {want[~ok][0]}"


# ---------------------------------------------------------------- round_bf16 by hand

@pytest.mark.parametrize("pattern, expect", [
    (0x00000000, 0x00000000),          # +0
    (0x80000000, 0x80000000),          # -0 keeps its sign
    (0x3F800000, 0x3F800000),          # 1.0 exact
    (0x3F807FFF, 0x3F800000),          # below the half: down
    (0x3F808000, 0x3F800000),          # tie, even neighbour below
    (0x3F818000, 0x3F820000),          # tie, even neighbour above
    (0x3F808001, 0x3F810000),          # above the half: up
    (0xBF808000, 0xBF800000),          # negative tie, to even
    (0x3FFF8000, 0x40000000),          # carry into the exponent
    (0x7F7F7FFF, 0x7F7F0000),          # largest bf16 stays
    (0x7F7FFFFF, 0x7F800000),          # float32 max rounds to inf
    (0xFF7FFFFF, 0xFF800000),          # and -max to -inf
    (0x7F800000, 0x7F800000),          # inf
    (0xFF800000, 0xFF800000),          # -inf
    (0x00000001, 0x00000000),          # smallest subnormal: down to 0
    (0x00008000, 0x00000000),          # subnormal tie, to even (0)
    (0x00018000, 0x00020000),          # subnormal tie, to even (up)
    (0x00010000, 0x00010000),          # bf16 subnormal, exact
    (0x807FFFFF, 0x80800000),          # largest subnormal -> -smallest normal
])
def test_round_bf16_by_hand(pattern, expect):
    got = bits(bf16.round_bf16(f32([pattern])))[0]
    assert got == expect, f"{pattern:#010x} -> {got:#010x}, want {expect:#010x}"


@pytest.mark.parametrize("pattern", [0x7FC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFC12345])
def test_round_bf16_nan_stays_nan(pattern):
    # a NaN with only low payload bits must not carry into inf
    got = bf16.round_bf16(f32([pattern]))
    assert np.isnan(got[0]) and np.signbit(got[0]) == bool(pattern >> 31)
    assert bits(got)[0] & 0xFFFF == 0


def test_round_bf16_shape_and_idempotence():
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    r = bf16.round_bf16(x)
    assert r.shape == x.shape and r.dtype == np.float32
    assert (bits(r) & 0xFFFF == 0).all()
    np.testing.assert_array_equal(bf16.round_bf16(r), r)
    assert np.all(np.abs(r - x) <= np.abs(x) * 2.0 ** -8)       # half an ulp of 8 bits
    np.testing.assert_array_equal(bf16.round_bf16(x.T), r.T)    # strided input


def test_round_bf16_refuses_other_dtypes():
    with pytest.raises(ValueError, match="x must be float32"):
        bf16.round_bf16(np.zeros(3))


# ---------------------------------------------------------------- the kernel

@st.composite
def operands(draw):
    """(a, b): M, N, K in 1..70 (odd K and K off multiples of 32 included), values from
    normals, exact zeros, +-1 and small integers, optionally as transposed or
    non-unit-stride views."""
    M, K, N = (draw(st.integers(1, 70)) for _ in range(3))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    r = np.random.default_rng(seed)

    def values(shape):
        kind = draw(st.sampled_from(["normal", "sign", "zeros_mixed", "ints", "wide"]))
        if kind == "normal":
            x = r.standard_normal(shape)
        elif kind == "sign":
            x = np.where(r.random(shape) < 0.5, -1.0, 1.0)
        elif kind == "zeros_mixed":
            x = r.standard_normal(shape) * (r.random(shape) < 0.5)
        elif kind == "ints":
            x = r.integers(-20, 21, shape)
        else:
            x = r.standard_normal(shape) * 10.0 ** r.integers(-12, 13, shape)  # no overflow
        return x.astype(np.float32)

    def layout(x):
        how = draw(st.sampled_from(["C", "T", "step", "neg", "rows_reversed", "cols_reversed"]))
        if how == "T":                      # a transposed view of a C array, like x.T
            return np.ascontiguousarray(x.T).T
        if how == "step":                   # every other row and column of a bigger array
            big = np.zeros((2 * x.shape[0], 2 * x.shape[1]), np.float32)
            big[::2, ::2] = x
            return big[::2, ::2]
        if how == "neg":
            return x[::-1, ::-1].copy()[::-1, ::-1]
        if how == "rows_reversed":          # negative row stride, unit stride along axis 1
            return x[::-1].copy()[::-1]
        if how == "cols_reversed":          # negative stride along axis 1, like x.T of x[::-1]
            return np.ascontiguousarray(x.T[::-1]).T[:, ::-1]
        return x

    return layout(values((M, K))), layout(values((K, N)))


@needs_kernel
@given(operands())
def test_matmul_matches_reference(ab):
    a, b = ab
    assert_close_bf16(bf16.matmul(a, b), a, b)


@needs_kernel
@given(st.integers(1, 70), st.integers(1, 70), st.integers(1, 70), st.integers(0, 2 ** 32 - 1),
       st.booleans(), st.booleans())
def test_matmul_exact_for_signs_times_integers(M, K, N, seed, a_t, b_t):
    # +-1 times integers |b| <= 256 (exact in bf16), sums < 2**24: exact in float32
    r = np.random.default_rng(seed)
    a = np.where(r.random((M, K)) < 0.5, -1.0, 1.0).astype(np.float32)
    b = r.integers(-256, 257, (K, N)).astype(np.float32)
    a = np.ascontiguousarray(a.T).T if a_t else a
    b = np.ascontiguousarray(b.T).T if b_t else b
    np.testing.assert_array_equal(bf16.matmul(a, b), (a.astype(np.float64) @ b).astype(np.float32))


@needs_kernel
@pytest.mark.parametrize("side", ["a", "b"])
@pytest.mark.parametrize("transposed", [False, True])
def test_packing_rounds_like_round_bf16(side, transposed):
    # times the identity, the kernel returns the rounded operand exactly: every normal
    # pattern (ties and carries included) packs by the rule of round_bf16
    n, k = 37, 67
    u = rng.integers(0x00800000, 0x7F7F0000, (n, k), dtype=np.uint32)
    u[:, ::3] = (u[:, ::3] & np.uint32(0xFFFF0000)) | np.uint32(0x8000)   # exact ties
    u |= rng.integers(0, 2, (n, k), dtype=np.uint32) << np.uint32(31)
    x = u.view(np.float32)
    if side == "a":
        a, b = x, np.eye(k, dtype=np.float32)
        want = bf16.round_bf16(x)
    else:
        a, b = np.eye(n, dtype=np.float32), x
        want = bf16.round_bf16(x)
    if transposed:
        a, b = np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T
    np.testing.assert_array_equal(bits(bf16.matmul(a, b)), bits(want))


@needs_kernel
def test_backward_shapes_small():
    # the two products of a binary layer's backward and the first layer's, at H = 200
    H, Nb = 200, 100
    x = np.where(rng.random((Nb, H)) < 0.5, -1.0, 1.0).astype(np.float32)
    dout = rng.standard_normal((Nb, H)).astype(np.float32)
    w_b = np.where(rng.random((H, H)) < 0.5, -1.0, 1.0).astype(np.float32)
    x0 = rng.random((Nb, 784)).astype(np.float32)
    for a, b in [(x.T, dout), (dout, w_b.T), (x0.T, dout)]:
        assert_close_bf16(bf16.matmul(a, b), a, b)


@needs_kernel
def test_nan_and_inf_propagate():
    a = rng.standard_normal((9, 40)).astype(np.float32)
    b = rng.standard_normal((40, 70)).astype(np.float32)
    a[2, 5] = np.nan
    a[4, 7] = np.inf
    b[3, 66] = -np.inf
    assert_close_bf16(bf16.matmul(a, b), a, b)
    got = bf16.matmul(a, b)
    assert np.isnan(got[2]).all() and np.isinf(got[4]).sum() + np.isnan(got[4]).sum() == 70


@needs_kernel
@pytest.mark.parametrize("a_t, b_t", [(False, False), (True, True), (False, True), (True, False)])
def test_nan_with_low_payload_is_not_rounded_to_inf(a_t, b_t):
    # 0x7F800001 plus the rounding increment would carry into inf: every packing path
    # (vector and scalar, both layouts) must keep it NaN, and NaN poisons its row/column
    M, K, N = 7, 70, 67
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    a[3, 5] = f32([0x7F800001])[0]
    a[6, K - 1] = f32([0xFF80FFFF])[0]
    b[40, 20] = f32([0x7F800001])[0]
    b[K - 1, N - 1] = f32([0xFF800001])[0]
    a = np.ascontiguousarray(a.T).T if a_t else a
    b = np.ascontiguousarray(b.T).T if b_t else b
    got = bf16.matmul(a, b)
    assert np.isnan(got[3]).all() and np.isnan(got[6]).all()
    assert np.isnan(got[:, 20]).all() and np.isnan(got[:, N - 1]).all()
    assert_close_bf16(got, a, b)


@needs_kernel
def test_subnormal_operand_is_not_flushed():
    # vdpbf16ps reads bf16 subnormals as zero; matmul must still follow the definition
    a = np.full((3, 5), 2.0 ** -130, np.float32)
    b = np.full((5, 20), 2.0 ** 100, np.float32)
    np.testing.assert_array_equal(bf16.matmul(a, b), np.full((3, 20), 5 * 2.0 ** -30, np.float32))
    np.testing.assert_array_equal(bf16.matmul(b.T.copy(), a.T.copy()),
                                  np.full((20, 3), 5 * 2.0 ** -30, np.float32))


@needs_kernel
@pytest.mark.parametrize("b_t", [False, True])
def test_subnormal_in_vector_packed_b(b_t):
    # B wide and deep enough for the vectorized packing paths (16 x 16 pair blocks)
    K, N = 70, 33
    a = np.ones((2, K), np.float32)
    b = np.zeros((K, N), np.float32)
    b[33, 17] = 2.0 ** -130
    b = np.ascontiguousarray(b.T).T if b_t else b
    got = bf16.matmul(a * np.float32(2.0 ** 100), b)
    assert got[0, 17] == np.float32(2.0 ** -30) and got[1, 16] == 0


def test_available_is_a_bool_and_repeatable():
    assert bf16.available() in (True, False)
    assert bf16.available() == bf16.available()


def test_available_where_the_cpu_has_the_instruction():
    # a kernel that fails its self-check must not pass as "this CPU lacks the instruction"
    import llvmlite.binding as llb
    import numba
    if not llb.get_host_cpu_features().get("avx512bf16", False):
        pytest.skip("this CPU lacks AVX512-BF16")
    if numba.config.CPU_NAME is not None or numba.config.CPU_FEATURES is not None:
        pytest.skip("Numba targets another CPU (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES)")
    assert bf16.available()


def test_numba_target_override_falls_back_without_crashing():
    # NUMBA_CPU_NAME=generic: LLVM cannot lower the 512-bit intrinsic (it aborted the
    # process before available() checked Numba's target); the fallback must answer
    import subprocess
    import sys
    code = ("import numpy as np; from minibnn.kernels import bf16; "
            "a = np.ones((3, 4), np.float32); b = np.full((4, 2), 3, np.float32); "
            "print(bf16.available(), float(bf16.matmul(a, b).sum()))")
    env = dict(__import__("os").environ, NUMBA_CPU_NAME="generic")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["False", "72.0"]


# ---------------------------------------------------------------- fallback, sizes, out=

@given(operands())
def test_fallback_is_the_definition(ab):
    a, b = ab
    saved = bf16.available
    bf16.available = lambda: False          # monkeypatch inside hypothesis (no fixture reuse)
    try:
        got = bf16.matmul(a, b)
    finally:
        bf16.available = saved
    np.testing.assert_array_equal(got, bf16.round_bf16(a) @ bf16.round_bf16(b))
    assert_close_bf16(got, a, b)


def test_fallback_monkeypatched(monkeypatch):
    monkeypatch.setattr(bf16, "available", lambda: False)
    a = rng.standard_normal((5, 33)).astype(np.float32)
    b = rng.standard_normal((33, 7)).astype(np.float32)
    out = np.full((5, 7), 7.0, np.float32)
    assert bf16.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, bf16.round_bf16(a) @ bf16.round_bf16(b))


@pytest.mark.parametrize("M, K, N", [(0, 3, 4), (3, 0, 4), (3, 4, 0), (0, 0, 0)])
def test_zero_sizes(M, K, N):
    got = bf16.matmul(np.ones((M, K), np.float32), np.ones((K, N), np.float32))
    assert got.shape == (M, N) and got.dtype == np.float32
    assert (got == 0).all()


def test_out_is_written_and_returned():
    a = rng.standard_normal((13, 50)).astype(np.float32)
    b = rng.standard_normal((50, 70)).astype(np.float32)
    out = np.full((13, 70), np.nan, np.float32)
    assert bf16.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, bf16.matmul(a, b))


def test_out_aliasing_an_input():
    a = rng.standard_normal((20, 20)).astype(np.float32)
    b = rng.standard_normal((20, 20)).astype(np.float32)
    want = bf16.matmul(a, b)
    bf16.matmul(a, b, out=b)
    np.testing.assert_array_equal(b, want)


def _arr(shape, dtype=np.float32):
    return np.ones(shape, dtype)


@pytest.mark.parametrize("args, name, phrase", [
    ((_arr((3, 4), np.float64), _arr((4, 2))), "a", "float32"),
    ((_arr((3, 4)), _arr((4, 2), np.float16)), "b", "float32"),
    (([[1.0, 2.0]], _arr((2, 2))), "a", "numpy"),
    ((_arr((3,)), _arr((3, 2))), "a", "2-D"),
    ((_arr((3, 4)), _arr((2, 4, 1))), "b", "2-D"),
    ((_arr((3, 4)), _arr((5, 2))), "b", "4 rows"),
])
def test_bad_operands(args, name, phrase):
    with pytest.raises(ValueError, match=phrase) as info:
        bf16.matmul(*args)
    assert str(info.value).startswith(name + " ")


@pytest.mark.parametrize("out", [
    np.zeros((3, 2), np.float64),            # dtype
    np.zeros((2, 3), np.float32),            # shape
    np.zeros((2, 3), np.float32).T,          # not C-contiguous
    [[0.0, 0.0]] * 3,                        # not an array
])
def test_bad_out(out):
    before = np.array(out, copy=True)
    with pytest.raises(ValueError, match="out must be"):
        bf16.matmul(_arr((3, 4)), _arr((4, 2)), out=out)
    np.testing.assert_array_equal(np.asarray(out), before)  # left as it was


def test_read_only_out_refused():
    out = np.zeros((3, 2), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be"):
        bf16.matmul(_arr((3, 4)), _arr((4, 2)), out=out)
