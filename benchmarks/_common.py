"""Shared pieces of the CPU benchmark scripts: BLAS report, settling, timing, output."""

import datetime
import json
import os
import time

from minibnn.fileio import atomic_write_text

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def blas_info():
    """What numpy's BLAS is (threadpoolctl) plus the OpenBLAS variables that change it."""
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                          "OPENBLAS_THREAD_TIMEOUT")}
    try:
        from threadpoolctl import threadpool_info
        pools = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                 for d in threadpool_info()]
    except ImportError:
        pools = "threadpoolctl not installed"
    return {"pools": pools, "env": env}


def settle():
    """Pause so that idle OpenBLAS threads stop spinning before Numba kernels are timed."""
    time.sleep(0.3)


def median_time(fn, repeats):
    """Median wall time of ``fn()`` over ``repeats`` calls, after one untimed warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def write_json(prefix, payload, directory=RESULTS_DIR):
    """Write ``payload`` to ``directory/<prefix>_<time>.json`` atomically; returns the path."""
    path = os.path.join(directory, f"{prefix}_{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path
