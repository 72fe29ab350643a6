"""Time the bfloat16 GEMM (``minibnn.kernels.bf16.matmul``) against NumPy float32 ``a @ b``
on the products of an MLP's training backward, side by side in one process.

    python benchmarks/bench_bf16.py                 # H = 1024, 2048, 4096 (about a minute)
    python benchmarks/bench_bf16.py --hidden 1024 --repeats 9

Shapes, batch 100 (issue 14): per hidden width H,

* ``dW``:    a = x.T (H x 100, x (100, H) +-1 C-contiguous), b = dout (100, H) -> H x H
* ``dX``:    a = dout (100, H), b = w_b.T (H x H view of a C-contiguous +-1 w_b) -> 100 x H
* ``first``: a = x.T with x (100, 784) pixels in [0, 1), b = dout (100, H) -> 784 x H

Both functions get the same operands (the transposed views as they are; bf16 packs from
them, NumPy's BLAS reads them in place too).  The two are timed alternately, one call
each per round, so that a load change hits both; medians over the rounds.  Every shape
is checked first (bf16 result against the float64 product of the rounded operands,
within the float32 accumulation bound).  "GFLOP/s" counts 2*M*N*K.  Ratio = float32
time / bf16 time (> 1: bf16 faster).  The table is printed and written as JSON to
benchmarks/results/bf16_<time>.json.  Other processes share the cores: the load average
before and after is recorded; run it when ``uptime`` is low.

The float32 side is whatever OpenBLAS kernel the environment selects (printed, and in the
JSON): the README's tables use OpenBLAS's own choice (``OPENBLAS_CORETYPE`` unset:
SkylakeX on the 2-core reference machine); a forced ``OPENBLAS_CORETYPE=Haswell``
(AVX2) made sgemm ~1.5x slower there.
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minibnn  # noqa: E402

minibnn.quiet_blas_spin()  # before numpy loads OpenBLAS; see its docstring

import numpy as np  # noqa: E402

from _common import blas_info, settle, write_json  # noqa: E402
from minibnn.kernels import bf16, reference  # noqa: E402

BATCH = 100
PIXELS = 784


def operands(H, rng):
    x = np.where(rng.random((BATCH, H)) < 0.5, -1.0, 1.0).astype(np.float32)
    dout = (rng.standard_normal((BATCH, H)) * 1e-3).astype(np.float32)
    w_b = np.where(rng.random((H, H)) < 0.5, -1.0, 1.0).astype(np.float32)
    x0 = rng.random((BATCH, PIXELS)).astype(np.float32)
    return [("dW", x.T, dout), ("dX", dout, w_b.T), ("first", x0.T, dout)]


def check(a, b, got):
    """bf16 result against the float64 twin on a slice of rows, within the bound."""
    rows = slice(0, min(64, a.shape[0]))
    want = reference.matmul_bf16(a[rows], b)
    ra = np.abs(bf16.round_bf16(np.ascontiguousarray(a[rows])).astype(np.float64))
    rb = np.abs(bf16.round_bf16(np.ascontiguousarray(b)).astype(np.float64))
    bound = a.shape[1] * 2.0 ** -23 * (ra @ rb) + 1e-30
    assert (np.abs(got[rows] - want) <= bound).all(), "bf16.matmul outside its bound"


def bench(name, H, a, b, rounds):
    M, K = a.shape
    N = b.shape[1]
    out = np.empty((M, N), np.float32)
    check(a, b, bf16.matmul(a, b, out=out))
    np.matmul(a, b)                                   # warm-up both
    t_f, t_b = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        np.matmul(a, b)
        t1 = time.perf_counter()
        bf16.matmul(a, b, out=out)
        t2 = time.perf_counter()
        t_f.append(t1 - t0)
        t_b.append(t2 - t1)
    f, g = float(np.median(t_f)), float(np.median(t_b))
    flop = 2.0 * M * N * K
    return dict(name=name, H=H, shape=[M, K, N], float32_ms=f * 1e3, bf16_ms=g * 1e3,
                float32_min_ms=min(t_f) * 1e3, bf16_min_ms=min(t_b) * 1e3,
                float32_gflops=flop / f / 1e9, bf16_gflops=flop / g / 1e9, ratio=f / g)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--repeats", type=int, default=21, help="alternating rounds per shape")
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results"))
    args = ap.parse_args(argv)

    import numba
    env = dict(python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
               numba_threads=numba.get_num_threads(), cpu=platform.processor() or platform.machine(),
               bf16_kernel=bf16.available(), blas=blas_info(), load_before=os.getloadavg())
    print("environment:", json.dumps(env))
    if not env["bf16_kernel"]:
        print("note: no AVX512-BF16 here: bf16.matmul is the NumPy fallback")

    rng = np.random.default_rng(0)
    rows = []
    for H in args.hidden:
        for name, a, b in operands(H, rng):
            settle()
            rows.append(bench(name, H, a, b, args.repeats))
    env["load_after"] = os.getloadavg()

    print()
    print(f"{'shape':>6} {'H':>5} | {'M x K x N':>16} | {'f32 ms':>7} | {'bf16 ms':>7} | "
          f"{'f32 GF/s':>8} | {'bf16 GF/s':>9} | {'ratio':>6}")
    for r in rows:
        M, K, N = r["shape"]
        print(f"{r['name']:>6} {r['H']:5d} | {f'{M}x{K}x{N}':>16} | {r['float32_ms']:7.2f} | "
              f"{r['bf16_ms']:7.2f} | {r['float32_gflops']:8.0f} | {r['bf16_gflops']:9.0f} | "
              f"{r['ratio']:5.2f}x")
    print(f"load average before {env['load_before']}, after {env['load_after']}")
    path = write_json("bf16", dict(env=env, rows=rows, repeats=args.repeats), args.out_dir)
    print("wrote", path)


if __name__ == "__main__":
    main()
