"""Property-test a kernel of your own against minibnn's references.

    python examples/test_my_kernel.py          # runs the tests, then shows two bugs being caught
    pytest examples/test_my_kernel.py          # the same tests, collected by pytest

You wrote a binary GEMM (here ``my_xnor_gemm``, a plain Numba loop) and a packer
(``my_pack``, NumPy).  How do you know they are right for *every* shape, including K not a
multiple of 64, exact zeros (sign(0) = +1) and one-row matrices?  Ask hypothesis to
generate the cases and compare, exactly, with minibnn's slow and obviously correct
reference (``minibnn.kernels.reference``).

The pieces from ``minibnn.testing`` used here:

* ``gemm_operands()`` -- a hypothesis strategy drawing ``(a (M, K), b (N, K))`` float64
  with values in [-2, 2], about one entry in eight an exact 0 or -0.0, and K biased to
  word boundaries (1, 63, 64, 65, 127, 128, 129, ...);
* ``real_arrays(shape)`` -- the same values for any shape; ``k_values()`` the K's;
* ``assert_exact(got, expected, what)`` -- shape, **dtype** and every value must match
  (integer results have no tolerance);
* ``check_xnor_gemm(a, b, backend)`` -- the one-line check of minibnn's own backends,
  written with the two above.

To check minibnn's *own* kernels on your machine (your CPU, your GPU) from an installed
package, without the source checkout's tests, run ``minibnn selftest --backend all``
(:func:`minibnn.selftest.main_selftest`): the same strategies and checkers, a table of
what passed and the smallest counterexample of anything that failed.

The binary conventions the reference follows are in minibnn/kernels/bitpack.py:
sign(0) = +1, bit 1 = +1, bit k of a row in word k // 64 at bit k % 64, padding bits 0,
``a . b = K - 2 * popcount(a XOR b)``.
"""

import os
import sys

import numpy as np
from numba import njit

try:
    import minibnn  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hypothesis import given, settings
from hypothesis import strategies as st

from minibnn import kernels
from minibnn.kernels import reference
from minibnn.kernels.bitpack import popcount64
from minibnn.testing import (assert_exact, check_xnor_gemm, gemm_operands, k_values,
                             real_arrays)

# bounded and reproducible; raise max_examples for a longer hunt
SETTINGS = settings(max_examples=100, deadline=None, derandomize=True, database=None)


# ---------------------------------------------------------------------------
# the kernels under test
# ---------------------------------------------------------------------------

@njit(cache=True)
def _gemm_loops(a, b, k, out):
    M, W = a.shape
    N = b.shape[0]
    for m in range(M):
        for n in range(N):
            differ = 0
            for w in range(W):
                differ += popcount64(a[m, w] ^ b[n, w])      # llvm.ctpop, from minibnn
            out[m, n] = k - 2 * differ


def my_xnor_gemm(a_words, b_words, k):
    """(M, W) uint64, (N, W) uint64 -> (M, N) int32 = K - 2 * popcount(a XOR b)."""
    out = np.empty((a_words.shape[0], b_words.shape[0]), dtype=np.int32)
    _gemm_loops(a_words, b_words, k, out)
    return out


def my_pack(x):
    """(M, K) real -> (M, ceil(K/64)) uint64: bit k%64 of word k//64 is x[:, k] >= 0."""
    m, k = x.shape
    w = -(-k // 64)
    bits = np.zeros((m, 64 * w), dtype=bool)
    bits[:, :k] = x >= 0                                     # padding bits stay 0
    # little bit order within each byte, bytes in little-endian order within each word
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64)


# ---------------------------------------------------------------------------
# the properties
# ---------------------------------------------------------------------------

@SETTINGS
@given(gemm_operands())
def test_my_xnor_gemm(ab):
    a, b = ab                                        # (M, K), (N, K) float64
    k = a.shape[1]
    got = my_xnor_gemm(kernels.pack(a), kernels.pack(b), k)
    # the oracle: float64 product of the signs, rounded to int32
    assert_exact(got, reference.binary_matmul(a, b.T), "my_xnor_gemm")


@SETTINGS
@given(st.tuples(st.integers(1, 5), k_values(300)).flatmap(real_arrays))
def test_my_pack(x):
    assert_exact(my_pack(x), kernels.pack(x), "my_pack vs kernels.pack")


@SETTINGS
@given(gemm_operands())
def test_minibnn_cpu_backend(ab):
    # what tests/test_kernels.py does for minibnn's own backends, in one line
    check_xnor_gemm(*ab, backend="cpu")


# ---------------------------------------------------------------------------
# two bugs, and how the properties catch them
# ---------------------------------------------------------------------------

def buggy_gemm_ignores_padding(a_words, b_words, k):
    """Bug: uses the padded length 64 * W instead of the logical K."""
    return my_xnor_gemm(a_words, b_words, 64 * a_words.shape[1])


def buggy_pack_zero_is_minus_one(x):
    """Bug: x > 0 instead of x >= 0, so sign(0) = -1."""
    m, k = x.shape
    bits = np.zeros((m, 64 * -(-k // 64)), dtype=bool)
    bits[:, :k] = x > 0
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64)


def hunt(name, prop, strategy):
    """Run ``prop`` under hypothesis; print the shrunk counterexample it finds."""
    last = {}

    @SETTINGS
    @given(strategy)
    def test(case):
        try:
            prop(case)
        except AssertionError:
            last["case"] = case                      # the final failing call is the shrunk one
            raise

    try:
        test()
    except AssertionError as exc:
        first_line = str(exc).strip().splitlines()[0]
        print(f"  {name}: caught.  {first_line}")
        return last.get("case")
    print(f"  {name}: NOT caught")
    return None


def demo_bugs():
    print("\nTwo buggy kernels, and the smallest inputs hypothesis shrinks their failures to:")

    def gemm_prop(ab):
        a, b = ab
        got = buggy_gemm_ignores_padding(kernels.pack(a), kernels.pack(b), a.shape[1])
        assert_exact(got, reference.binary_matmul(a, b.T), "buggy gemm")

    case = hunt("gemm with 64 * W in place of K", gemm_prop, gemm_operands())
    if case is not None:
        a, b = case
        print(f"    a {a.shape}, b {b.shape}: K = {a.shape[1]} is not a multiple of 64, "
              f"the result is off by 64 * W - K = {64 * kernels.n_words(a.shape[1]) - a.shape[1]}")

    def pack_prop(x):
        assert_exact(buggy_pack_zero_is_minus_one(x), kernels.pack(x), "buggy pack")

    case = hunt("pack with sign(0) = -1", pack_prop,
                st.tuples(st.integers(1, 5), k_values(300)).flatmap(real_arrays))
    if case is not None:
        print(f"    x = {case.tolist()}  (a zero: real_arrays draws exact zeros on purpose)")

    # assert_exact checks the dtype too: an int64 result is a failure, not a detail
    try:
        got = my_xnor_gemm(kernels.pack(np.ones((1, 3))), kernels.pack(np.ones((1, 3))), 3)
        assert_exact(got.astype(np.int64), reference.binary_matmul(np.ones((1, 3)), np.ones((3, 1))),
                     "int64 result")
    except AssertionError as exc:
        print(f"  a right value with the wrong dtype: caught.  {str(exc).splitlines()[0]}")


def main():
    for test in (test_my_xnor_gemm, test_my_pack, test_minibnn_cpu_backend):
        test()                                       # hypothesis runs the examples
        print(f"{test.__name__}: {SETTINGS.max_examples} generated cases passed")
    demo_bugs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
