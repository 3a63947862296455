#!/usr/bin/env bash
# Every GPU measurement of issue 18 in one run, each part under its own timeout, in < 8 minutes.
#
#   OUT=/tmp/gpu-out FMNIST_DIR=/path/to/fashion-mnist bash benchmarks/gpu_suite.sh
#   SMOKE=1 OUT=/tmp/smoke bash benchmarks/gpu_suite.sh        # the same code paths on a CPU, tiny sizes
#
# Writes three files to $OUT: gpu_results.json (every measurement), gpu_section.md (the BENCHMARKS.md
# section, rendered by benchmarks/gpu_section.py) and suite.log (each part's output and exit status).
# A part that fails or runs out of time leaves its finished rows and does not stop the others; the
# total budget (BUDGET seconds, default 450) shrinks the timeouts of the last parts if needed.
# Environment: PYTHON (default python3), FMNIST_DIR (Fashion-MNIST idx files for the default job),
# JPEGS (default 20000), BUDGET, SMOKE.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder for the results}
PY=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
BUDGET=${BUDGET:-450}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/selfsup-gpu-suite.XXXXXX")
PARTS=$WORK/parts
mkdir -p "$PARTS"
LOG=$OUT/suite.log
: >"$LOG"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
# The main process only launches kernels; DataLoader workers set their own threads to 1.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
START=$(date +%s)
CORES=$(nproc)

WRITE_FLAGS=()
if [ "$SMOKE" = 1 ]; then
  SIZE=(--smoke --warmup 1 --steps 2)
  WRITE_FLAGS=(--smoke)
  JPEGS=${JPEGS:-60}; WORKERS=2; WRITERS=2
  JOB=(--smoke --warmup 2 --steps 3)
else
  SIZE=(--warmup 4 --steps 10)
  JPEGS=${JPEGS:-20000}; WORKERS=$CORES; WRITERS=$(( CORES > 4 ? CORES - 4 : 1 ))
  JOB=(--warmup 20 --steps 200)
fi

elapsed() { echo $(( $(date +%s) - START )); }

# wait_for PID SECONDS: wait for a background job of this script until SECONDS into the run, then
# stop it and its children (the commands it runs under timeout).
wait_for() {
  while kill -0 "$1" 2>/dev/null && (( $(elapsed) < $2 )); do sleep 1; done
  pkill -TERM -P "$1" 2>/dev/null
  kill "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}

# part NAME LIMIT_SECONDS ARGS...: one gpu_throughput.py sub-command under `timeout`, never fatal.
part() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - $(elapsed) - 15 ))   # 15 s kept for merging and rendering
  (( limit > left )) && limit=$left
  if (( limit < 20 )); then
    echo "== $name: skipped, $(elapsed) s of the $BUDGET s budget used" >>"$LOG"
    return
  fi
  echo "== $name (timeout ${limit}s, at $(elapsed)s): $*" >>"$LOG"
  local t0=$(date +%s)
  timeout -k 10 "$limit" "$PY" benchmarks/gpu_throughput.py "$@" --output "$PARTS/$name.json" >>"$LOG" 2>&1
  echo "== $name: exit $? after $(( $(date +%s) - t0 )) s" >>"$LOG"
}

part machine 60 machine

# ImageNet-like JPEGs, written in the background at low priority while the model rows run (those are
# GPU-bound; the default job and the folder rows, which need the CPU, run after it has finished).
# (About 10 s on 16 cores; the folder part reports an error row if they are not there.)
nice -n 10 timeout 200 "$PY" benchmarks/gpu_throughput.py write-jpegs --dir "$WORK/jpegs" --images "$JPEGS" \
  --processes "$WRITERS" "${WRITE_FLAGS[@]}" >>"$LOG" 2>&1 &
WRITER=$!

# torch.compile is CPU work (minutes for ResNet-50): compile in the background now, into a shared
# Inductor cache, so that the timed compile parts at the end start from a warm cache (their
# compile-time row says how long that took; this log says how long the cold compile took).
export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor
COMPILE=0
if [ "$SMOKE" != 1 ] || [ "${SMOKE_COMPILE:-0}" = 1 ]; then
  COMPILE=1
  (
    nice -n 10 timeout -k 10 200 "$PY" benchmarks/gpu_throughput.py models --config simclr-resnet50 --compile \
      --only-compile "${SIZE[@]}" --output "$WORK/precompile-simclr.json"
    echo "== background compile, simclr-resnet50 (cold cache): exit $?"
    nice -n 10 timeout -k 10 150 "$PY" benchmarks/gpu_throughput.py default-job --warmup 2 --steps 2 \
      --variants compile-reduce-overhead ${FMNIST_DIR:+--data-dir "$FMNIST_DIR"} --output "$WORK/precompile-job.json"
    echo "== background compile, default job (cold cache): exit $?"
  ) >"$WORK/precompile.log" 2>&1 &
  PRECOMPILE=$!
fi

part simclr-resnet50 80 models --config simclr-resnet50 "${SIZE[@]}"
part byol-resnet50 60 models --config byol-resnet50 "${SIZE[@]}"
part dino-resnet50 75 models --config dino-resnet50 "${SIZE[@]}"
part dino-vit-small 60 models --config dino-vit-small "${SIZE[@]}"
part ibot-vit-small 60 models --config ibot-vit-small "${SIZE[@]}"

# The CPU-bound parts come next: the background jobs must be done (or stopped) first.
wait_for "$WRITER" $(( BUDGET - 200 )); echo "== write-jpegs finished at $(elapsed) s" >>"$LOG"
if [ "$COMPILE" = 1 ]; then
  wait_for "$PRECOMPILE" $(( BUDGET - 180 ))
  echo "== background compiles finished at $(elapsed) s:" >>"$LOG"
  grep -E '^==|compile-time|"row"' "$WORK/precompile.log" | cut -c1-400 >>"$LOG"
fi
part default-job 75 default-job "${JOB[@]}" ${FMNIST_DIR:+--data-dir "$FMNIST_DIR"}
part decode 30 decode --dir "$WORK/jpegs" --images 200
part folder 90 folder --dir "$WORK/jpegs" --workers "$WORKERS" "${SIZE[@]}"
# torch.compile last: compiling ResNet-50 takes minutes; whatever budget is left goes to it.
if [ "$COMPILE" = 1 ]; then
  part simclr-resnet50-compile 100 models --config simclr-resnet50 --compile "${SIZE[@]}"
  part default-job-compile 80 default-job "${JOB[@]}" --variants compile-reduce-overhead \
    ${FMNIST_DIR:+--data-dir "$FMNIST_DIR"}
fi

# The CUDA-only tests (side-stream views equal default-stream views; batched views on the GPU;
# disk-backed evaluation agrees with the in-memory one on the GPU), if pytest is there and time is left.
left=$(( BUDGET - $(elapsed) - 15 ))
if [ "$SMOKE" != 1 ] && (( left >= 30 )) && "$PY" -c "import pytest" 2>/dev/null; then
  echo "== CUDA tests (timeout ${left}s, at $(elapsed)s)" >>"$LOG"
  timeout -k 5 "$left" "$PY" -m pytest -q -p no:cacheprovider -m "not slow" tests/engine/test_gpu_path.py \
    tests/transforms/test_batched_views.py tests/evaluation/test_eval_memory.py -k "side_stream or cuda" >>"$LOG" 2>&1
  echo "== CUDA tests: exit $?" >>"$LOG"
fi

"$PY" benchmarks/gpu_section.py "$PARTS"/*.json --json "$OUT/gpu_results.json" --markdown "$OUT/gpu_section.md" \
  >>"$LOG" 2>&1
echo "== done in $(elapsed) s" >>"$LOG"
rm -rf "$WORK"
cat "$OUT/gpu_section.md" 2>/dev/null
