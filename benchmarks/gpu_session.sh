#!/usr/bin/env bash
# One call on a lent GPU machine: correctness on the real device, then the timings.
#   OUT=/some/dir bash benchmarks/gpu_session.sh
# Writes into $OUT: env.txt, pytest_cuda.log, bench_gpu.log, gpu.json, inference_cuda.log.
# Uses the machine's own python3 (numba, numba-cuda, cupy, hypothesis preinstalled there);
# the package is imported from the checkout (PYTHONPATH), nothing is installed.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HYPOTHESIS_PROFILE=ci
export NUMBA_CACHE_DIR=/tmp/numba-cache
OUT=${OUT:?set OUT}
# numba-cuda 0.30.4 registers an overload for np.row_stack, which numpy 2.5 removed: give
# this process a shim (the machine's own numpy is 2.5.2; minibnn's CI pins nothing newer than 2.4)
mkdir -p /tmp/shim && printf 'import numpy\nif not hasattr(numpy, "row_stack"):\n    numpy.row_stack = numpy.vstack\n' > /tmp/shim/sitecustomize.py
export PYTHONPATH="/tmp/shim:$PYTHONPATH"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import sys, numpy, numba, importlib.metadata as m; print(sys.version); print('numpy', numpy.__version__, 'numba', numba.__version__, 'numba-cuda', m.version('numba-cuda'))"
  nproc; } 2>&1 | tee "$OUT/env.txt"
# 1. the CUDA suite and the kernel properties on the real GPU (GEMM_GPU tiles, not the simulator's)
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_kernels.py \
    -k cuda 2>&1 | tee "$OUT/pytest_cuda.log" | tail -25
echo "pytest rc=$?"
# 2. kernel timings (budget ~150 s inside the script)
timeout 240 python3 benchmarks/bench_gpu.py --json "$OUT/gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
echo "bench_gpu rc=$?"
# 3. packed MLP inference through the engine on the cuda backend (10k images)
timeout 90 python3 benchmarks/bench_inference.py --backend cuda --repeats 2 --out-dir "$OUT" \
    2>&1 | tee "$OUT/inference_cuda.log"
echo "inference rc=$?"
