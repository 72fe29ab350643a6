"""Time the binary kernels against float32 BLAS, side by side in one process.

    python benchmarks/bench_kernels.py            # full table (about a minute)
    python benchmarks/bench_kernels.py --quick    # fewer repeats, smaller shapes

Every row checks the binary result against the float one first, then times (median of
repeats, fresh random inputs, warm-up call excluded).  Ratios are float32 time divided by
binary time.  "T ops/s" counts 2*M*N*K operations, as for a float GEMM.  The table is
printed and written as JSON to benchmarks/results/kernels_<time>.json.
"""

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minibnn  # noqa: E402

minibnn.quiet_blas_spin()  # before numpy loads OpenBLAS; see its docstring

import numpy as np  # noqa: E402

from _common import blas_info, median_time, settle, write_json  # noqa: E402
from minibnn import kernels  # noqa: E402
from minibnn.kernels import cpu  # noqa: E402

GEMM_SHAPES = [(100, 4096, 4096), (1000, 4096, 4096), (4096, 2304, 256), (4096, 4096, 4096)]
CONV_CASE = dict(N=50, C=128, H=32, W=32, F=128, k=3, padding=1)


def float_conv_im2col(x, w, padding):
    """Float reference path for the conv benchmark: im2col copy + one float32 GEMM."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (KH, KW), axis=(2, 3))  # N,C,Ho,Wo,KH,KW
    cols = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(N * win.shape[2] * win.shape[3], -1)
    out = cols @ w.reshape(F, -1).T
    return out.reshape(N, win.shape[2], win.shape[3], F).transpose(0, 3, 1, 2)


def bench_gemm(M, K, N, repeats, rng):
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    a_words = kernels.pack(a)
    b_words = kernels.pack(np.ascontiguousarray(b.T))
    prepared = kernels.prepare_weights(b_words, K, backend="cpu")
    out = np.empty((M, N), np.int32)
    expected = kernels.binary_matmul(a[:50], b, backend="reference")
    assert (kernels.xnor_gemm(a_words[:50], prepared, K) == expected).all(), "xnor_gemm wrong"

    t_float = median_time(lambda: np.matmul(a, b), repeats)
    settle()
    t_fast = median_time(lambda: kernels.xnor_gemm(a_words, prepared, K, out=out), repeats)
    t_simple = median_time(lambda: cpu.gemm_simple(a_words, b_words, K, out), max(1, repeats // 2))
    t_pack = median_time(lambda: kernels.pack(a), repeats)
    ops = 2.0 * M * N * K
    return dict(shape=[M, K, N], float32_ms=t_float * 1e3, xnor_ms=t_fast * 1e3,
                simple_ms=t_simple * 1e3, pack_ms=t_pack * 1e3,
                ratio=t_float / t_fast, ratio_simple=t_float / t_simple,
                pack_pct_of_gemm=100 * t_pack / t_fast,
                float_gflops=ops / t_float / 1e9, xnor_tops=ops / t_fast / 1e12)


def bench_conv(case, repeats, rng):
    x = rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(np.float32)
    w = rng.standard_normal((case["F"], case["C"], case["k"], case["k"])).astype(np.float32)
    p = case["padding"]
    got = kernels.binary_conv2d(x[:2], w, padding=p)
    want = np.rint(float_conv_im2col(np.where(x[:2] >= 0, 1, -1).astype(np.float32),
                                     np.where(w >= 0, 1, -1).astype(np.float32), p)).astype(np.int32)
    assert (got == want).all(), "binary_conv2d wrong"
    t_float = median_time(lambda: float_conv_im2col(x, w, p), repeats)
    settle()
    t_bin = median_time(lambda: kernels.binary_conv2d(x, w, padding=p), repeats)
    return dict(case=case, float32_ms=t_float * 1e3, binary_ms=t_bin * 1e3, ratio=t_float / t_bin)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and only the smaller shapes")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    shapes = GEMM_SHAPES[:3] if args.quick else GEMM_SHAPES
    rng = np.random.default_rng(0)

    import numba
    env = dict(python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
               numba_threads=numba.get_num_threads(), cpu=platform.processor() or platform.machine(),
               blas=blas_info())
    print("environment:", json.dumps(env))

    rows = [bench_gemm(M, K, N, repeats, rng) for (M, K, N) in shapes]
    conv = bench_conv(CONV_CASE, repeats, rng)

    print()
    print(f"{'M x K x N':>18} | {'f32 ms':>8} | {'xnor ms':>8} | {'ratio':>6} | {'simple ms':>9} | "
          f"{'ratio':>6} | {'pack ms':>7} | {'pack %':>6} | {'T ops/s':>7}")
    for r in rows:
        M, K, N = r["shape"]
        print(f"{f'{M}x{K}x{N}':>18} | {r['float32_ms']:8.2f} | {r['xnor_ms']:8.2f} | {r['ratio']:5.1f}x | "
              f"{r['simple_ms']:9.2f} | {r['ratio_simple']:5.1f}x | {r['pack_ms']:7.3f} | "
              f"{r['pack_pct_of_gemm']:5.1f}% | {r['xnor_tops']:7.2f}")
    c = conv["case"]
    print(f"conv N={c['N']} C={c['C']} {c['H']}x{c['W']} F={c['F']} {c['k']}x{c['k']} pad {c['padding']}: "
          f"float32 im2col+BLAS {conv['float32_ms']:.1f} ms, binary {conv['binary_ms']:.1f} ms, "
          f"ratio {conv['ratio']:.1f}x")
    path = write_json("kernels", dict(env=env, gemm=rows, conv=conv, repeats=repeats), args.out_dir)
    print("wrote", path)


if __name__ == "__main__":
    main()
