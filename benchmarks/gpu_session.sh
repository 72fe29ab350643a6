#!/usr/bin/env bash
# One call on a lent GPU machine: correctness on the real device, then the timings.
#   OUT=/some/dir bash benchmarks/gpu_session.sh
#   OUT=/some/dir STEPS="device_tests train" bash benchmarks/gpu_session.sh   # a subset
# Writes into $OUT (each file as its step finishes): env.txt, pytest_cuda.log,
# pytest_device.log, train_gpu.log, train_gpu.json, bench_gpu.log, gpu.json,
# inference_cuda.log.  About 8 minutes on one H200 (each step has its own timeout).
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
STEPS=${STEPS:-"cuda_tests device_tests train kernels inference"}
want() { case " $STEPS " in *" $1 "*) return 0;; *) return 1;; esac; }
# 1. the CUDA suite and the kernel properties on the real GPU (GEMM_GPU tiles, not the simulator's)
if want cuda_tests; then
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_kernels.py \
    -k cuda 2>&1 | tee "$OUT/pytest_cuda.log" | tail -25
echo "pytest rc=$?"
fi
# 1b. the device twins of the training ops (functional_cuda, losses_cuda, optim_cuda, device)
#     against the CPU ops, on the GPU's own tile configurations
if want device_tests; then
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_functional_cuda.py \
    2>&1 | tee "$OUT/pytest_device.log" | tail -25
echo "pytest device rc=$?"
fi
# 1c. device-resident MNIST MLP 3x4096 training steps (batch 100, Adam, dataset uploaded
#     once): XNOR products, float products only (the paper's comparison), and the
#     Sequential + Adam path; JSON rewritten after each mode.  Then one xnor run on numba's
#     default allocator, for the effect of the caching one.
if want train; then
timeout 170 python3 benchmarks/bench_gpu_train.py --budget 25 --json "$OUT/train_gpu.json" \
    2>&1 | tee "$OUT/train_gpu.log"
echo "bench_gpu_train rc=$?"
timeout 60 python3 benchmarks/bench_gpu_train.py --budget 10 --modes xnor --allocator default \
    --json "$OUT/train_gpu_default_alloc.json" 2>&1 | tee "$OUT/train_gpu_default_alloc.log" | tail -4
echo "bench_gpu_train (default allocator) rc=$?"
fi
# 2. kernel timings (budget ~150 s inside the script)
if want kernels; then
timeout 240 python3 benchmarks/bench_gpu.py --json "$OUT/gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
echo "bench_gpu rc=$?"
fi
# 3. packed MLP inference through the engine on the cuda backend (10k images)
if want inference; then
timeout 90 python3 benchmarks/bench_inference.py --backend cuda --repeats 2 --out-dir "$OUT" \
    2>&1 | tee "$OUT/inference_cuda.log"
echo "inference rc=$?"
fi
