#!/usr/bin/env bash
# One call on a lent GPU machine (about 8 minutes on one H200): correctness on the real
# device, then the timings of issue 13, each result written into $OUT as its step ends.
#   OUT=/some/dir bash benchmarks/gpu_session.sh
#   OUT=/some/dir STEPS="tests mnist_epoch" bash benchmarks/gpu_session.sh    # a subset
#   OUT=/tmp/sim SIMULATE=1 bash benchmarks/gpu_session.sh    # smoke test, no GPU: every
#       Python piece under NUMBA_ENABLE_CUDASIM=1 with tiny shapes (times meaningless)
# Steps (STEPS, default all, in this order; each has its own timeout):
#   tests        the device suites (tests/test_functional_cuda.py, tests/test_train_cuda.py)
#                -> pytest_device.log
#   mnist_epoch  `minibnn train --backend cuda`, MNIST MLP 3x4096, batch 100, 50k images,
#                2 epochs (the first compiles); epoch 2's seconds (training + evaluation of
#                10k validation and 10k test images) -> mnist_epoch.json, run in mnist_epoch/
#   steps        device training steps of the same MLP (bench_gpu_train.py): XNOR products,
#                float products only (the paper's unoptimized comparison), and the
#                Sequential + Adam path of `train` -> train_steps.json
#   convnet      the paper's CIFAR-10 ConvNet, batch 50, device steps -> convnet.json
#   inference    the epoch's best.npz exported (float and bit-plane first layer), packed
#                inference at batch 10,000 and 100 on cuda (device-resident) and cpu
#                -> inference.jsonl
#   recipe       MNIST with the paper's recipe (3x4096, Adam 3e-3 -> 3e-7, dropout 0.2/0.5,
#                batch 100) for as many epochs as fit in $RECIPE_SECONDS (default 150) at
#                the measured epoch time; prints the test error -> recipe.json, run in recipe/
# Exit status 1 if a step failed (named on the last line of session.log).
# Data: MNIST under $DATA (default $MINIBNN_DATA, else ./shared/data); without it the
# MNIST steps say so and are skipped.  Uses $PY (default python3) with the checkout on
# PYTHONPATH; nothing is installed.
set -o pipefail
OUT=${OUT:?set OUT}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HYPOTHESIS_PROFILE=ci
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-/tmp/numba-cache}
DATA=${DATA:-${MINIBNN_DATA:-$PWD/shared/data}}
RECIPE_SECONDS=${RECIPE_SECONDS:-150}
STEPS=${STEPS:-"tests mnist_epoch steps convnet inference recipe"}
want() { case " $STEPS " in *" $1 "*) return 0;; *) return 1;; esac; }
note() { echo "== $(date +%T) $*" | tee -a "$OUT/session.log"; }
FAILED=
done_step() { note "$1 rc=$2"; [ "$2" = 0 ] || FAILED="$FAILED $1"; }

if [ -n "$SIMULATE" ]; then
  export NUMBA_ENABLE_CUDASIM=1
  # the simulator's barriers poll Python threads: a short GIL switch interval makes it
  # several times faster (every python process of this script imports sitecustomize)
  mkdir -p /tmp/simshim && printf 'import sys\nsys.setswitchinterval(1e-5)\n' > /tmp/simshim/sitecustomize.py
  export PYTHONPATH="/tmp/simshim:$PYTHONPATH"
  # a tiny dataset (the embedded sample, 4x4 pixels) as an npz file; tiny networks
  "$PY" - "$OUT/tiny.npz" <<'EOF'
import sys
import numpy as np
from minibnn.data import load_dataset
ds = load_dataset("sample")
def pool(x):
    p = np.rint((x.astype(np.float64) + 1) * 127.5).reshape(len(x), 4, 7, 4, 7)
    return np.rint(p.mean(axis=(2, 4))).astype(np.uint8)
np.savez(sys.argv[1], x_train=pool(ds.x_train[:24]), y_train=ds.y_train[:24],
         x_val=pool(ds.x_val[:8]), y_val=ds.y_val[:8],
         x_test=pool(ds.x_test[:8]), y_test=ds.y_test[:8])
EOF
  DATASET="npz:$OUT/tiny.npz"; NET="--hidden 16 --depth 1 --batch-size 8"
  RECIPE_NET="--hidden 16 --depth 1 --batch-size 8"; SIM="--simulate"; BIG=8; SMALL=4
  HAVE_DATA=1; RECIPE_SECONDS=${RECIPE_SECONDS_SIM:-20}
else
  DATASET="mnist"; NET="--hidden 4096 --depth 3 --batch-size 100"
  RECIPE_NET="--hidden 4096 --depth 3 --batch-size 100"; SIM=""; BIG=10000; SMALL=100
  if [ -d "$DATA/mnist" ]; then HAVE_DATA=1; else HAVE_DATA=; fi
  # numba-cuda 0.30.4 registers an overload for np.row_stack, which numpy 2.5 removed
  mkdir -p /tmp/shim && printf 'import numpy\nif not hasattr(numpy, "row_stack"):\n    numpy.row_stack = numpy.vstack\n' > /tmp/shim/sitecustomize.py
  export PYTHONPATH="/tmp/shim:$PYTHONPATH"
  { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; nproc; } \
    > "$OUT/env.txt" 2>&1
fi
"$PY" -c "import sys, numpy, numba; print(sys.version); print('numpy', numpy.__version__, 'numba', numba.__version__)" \
  >> "$OUT/env.txt" 2>&1
MB="$PY -m minibnn"     # word-split on purpose: timeout runs it (not a shell function)

# 1. the device suites (every device op against its CPU function; train/eval end to end)
if want tests; then
  note "tests"
  timeout 200 "$PY" -m pytest -q -p no:cacheprovider tests/test_functional_cuda.py \
      tests/test_train_cuda.py 2>&1 | tee "$OUT/pytest_device.log" | tail -4
  done_step tests $?
fi

# 2. an MNIST MLP epoch through `minibnn train --backend cuda` (device-resident loop)
EPOCH_S=
if want mnist_epoch || want inference || want recipe; then
  if [ -n "$HAVE_DATA" ]; then
    note "mnist_epoch"
    rm -rf "$OUT/mnist_epoch"
    timeout 150 $MB train --dataset "$DATASET" --data-dir "$DATA" $NET --epochs 2 --backend cuda \
        --no-progress --no-download --out "$OUT/mnist_epoch" 2>&1 | tee "$OUT/mnist_epoch.log" | tail -3
    done_step mnist_epoch $?
    [ -s "$OUT/mnist_epoch/metrics.jsonl" ] && EPOCH_S=$("$PY" - "$OUT/mnist_epoch" "$OUT/mnist_epoch.json" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl") if l.strip()]
res = {"what": "MNIST MLP epoch through `minibnn train --backend cuda` (training + "
               "evaluation of the validation and test splits)",
       "epochs": [{k: r[k] for k in ("epoch", "seconds", "train_error", "val_error", "test_error")}
                  for r in rows]}
res["epoch_seconds"] = rows[-1]["seconds"]
json.dump(res, open(sys.argv[2], "w"), indent=2)
print(rows[-1]["seconds"])
EOF
)
    note "mnist epoch (incl. evaluation): ${EPOCH_S} s"
  else
    note "mnist_epoch skipped: no MNIST under $DATA"
  fi
fi

# 3. device training steps: XNOR vs float products only vs the Sequential path
if want steps; then
  note "steps"
  timeout 100 "$PY" benchmarks/bench_gpu_train.py $SIM --budget 8 --modes xnor,float,layers \
      --data-dir "$DATA" --json "$OUT/train_steps.json" 2>&1 | tee "$OUT/train_steps.log" | tail -5
  done_step steps $?
fi

# 4. the paper's CIFAR-10 ConvNet, device steps (epoch = 900 steps of 50)
if want convnet; then
  note "convnet"
  timeout 90 "$PY" benchmarks/bench_gpu_train.py $SIM --budget 20 --modes convnet \
      --json "$OUT/convnet.json" 2>&1 | tee "$OUT/convnet.log" | tail -3
  done_step convnet $?
fi

# 5. packed inference of the epoch's model: device-resident on cuda, and the cpu for scale
if want inference && [ -f "$OUT/mnist_epoch/best.npz" ]; then
  note "inference"
  : > "$OUT/inference.jsonl"
  for first in float bitplane; do
    $MB export "$OUT/mnist_epoch/best.npz" --first-layer $first --out "$OUT/mnist_$first.bnn" \
        >> "$OUT/inference.log" 2>&1
    for spec in "cuda $BIG" "cuda $SMALL" "cpu $BIG"; do
      set -- $spec
      timeout 60 $MB eval "$OUT/mnist_$first.bnn" --dataset "$DATASET" --data-dir "$DATA" \
          --backend $1 --batch-size $2 2>> "$OUT/inference.log" | tee -a "$OUT/inference.jsonl"
      rc=$?; [ $rc = 0 ] || FAILED="$FAILED inference($first,$1,$2)"
    done
  done
  note "inference done"
fi

# 6. the paper's MNIST recipe for a fixed budget: as many epochs as fit at the epoch time
if want recipe && [ -n "$EPOCH_S" ]; then
  EPOCHS=$("$PY" -c "import math; print(max(1, int($RECIPE_SECONDS // max(1e-9, $EPOCH_S))))")
  note "recipe: $EPOCHS epochs (budget $RECIPE_SECONDS s at $EPOCH_S s/epoch)"
  rm -rf "$OUT/recipe"
  timeout $((RECIPE_SECONDS * 2 + 60)) $MB train --dataset "$DATASET" --data-dir "$DATA" \
      $RECIPE_NET --epochs "$EPOCHS" --optimizer adam --lr-start 3e-3 --lr-end 3e-7 \
      --dropout-in 0.2 --dropout-hidden 0.5 --backend cuda --no-progress --no-download \
      --out "$OUT/recipe" 2>&1 | tee "$OUT/recipe.log" | tail -3
  done_step recipe $?
  [ -f "$OUT/recipe/summary.json" ] && cp "$OUT/recipe/summary.json" "$OUT/recipe.json" && \
    "$PY" -c "import json; s = json.load(open('$OUT/recipe.json')); print('MNIST recipe: %d epochs in %.0f s, best epoch %s, test error at best %.2f%%' % (s['epochs_planned'], s['total_seconds'], s['best_epoch'], 100 * s['test_error_at_best']))" \
      | tee -a "$OUT/session.log"
fi
if [ -n "$FAILED" ]; then note "session done; failed:$FAILED"; exit 1; fi
note "session done"
