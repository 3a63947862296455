#!/usr/bin/env bash
# The user's path on a GPU, end to end, in about 3 minutes: `selfsup train` on a folder of
# ImageNet-sized JPEGs with planted bad files (split views, bf16, DataLoader workers), then
# `selfsup embed` and `selfsup export --format onnx` of the result, then the default job's
# steps/s (the CPU-sized Fashion-MNIST run) once more. Every part under its own `timeout`; what
# each printed, its exit status and time go to $OUT/end_to_end.log.
#
#   OUT=/tmp/e2e FMNIST_DIR=/path/to/fashion-mnist bash benchmarks/gpu_end_to_end.sh
#   SMOKE=1 OUT=/tmp/e2e bash benchmarks/gpu_end_to_end.sh     # the same commands on a CPU, tiny sizes
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder for the results}
PY=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT"
LOG=$OUT/end_to_end.log
: >"$LOG"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/selfsup-e2e.XXXXXX")
if [ "$SMOKE" = 1 ]; then
  IMAGES=48; SIZE=(--backbone resnet18-tiny --batch-size 8); WORKERS=2; PRECISION=32-true; SMALL=(--smoke)
else
  IMAGES=4000; SIZE=(--backbone resnet50 --batch-size 256); WORKERS=$(nproc); PRECISION=bf16-mixed; SMALL=()
fi

# step NAME LIMIT COMMAND...: run it under `timeout`, log its output, status and seconds; never fatal.
step() {
  local name=$1 limit=$2; shift 2
  echo "== $name (timeout ${limit}s): $*" >>"$LOG"
  local t0=$(date +%s)
  timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
  echo "== $name: exit $? after $(( $(date +%s) - t0 )) s" >>"$LOG"
}

step write-jpegs 60 "$PY" benchmarks/gpu_throughput.py write-jpegs --dir "$WORK/photos" --images "$IMAGES" "${SMALL[@]}"
# Three files no decoder can read: a truncated JPEG, an empty .png, text named .jpg.
first=$(find "$WORK/photos" -name '*.jpg' | sort | head -n 1)
head -c 2000 "$first" >"$WORK/photos/truncated.jpg"
: >"$WORK/photos/empty.png"
echo "not an image" >"$WORK/photos/notes.jpg"

step train 150 "$PY" -m selfsup.cli train --data "folder:$WORK/photos" "${SIZE[@]}" --epochs 1 --no-eval \
  --num-workers "$WORKERS" --output-dir "$WORK/run" --set trainer.precision="$PRECISION" \
  --set trainer.log_every_n_steps=5 --set monitor.knn_every=0
echo "== skipped.txt:" >>"$LOG"; cat "$WORK/run/skipped.txt" >>"$LOG" 2>&1
step embed 60 "$PY" -m selfsup.cli embed --checkpoint "$WORK/run/last.ckpt" --data "folder:$WORK/photos" \
  --output "$WORK/embeddings" --device auto
echo "== embeddings: $(ls "$WORK" | grep -c embeddings) outputs, $(wc -l <"$WORK/embeddings.csv" 2>/dev/null) csv lines" >>"$LOG"
step export-onnx 60 "$PY" -m selfsup.cli export --checkpoint "$WORK/run/last.ckpt" --format onnx \
  --output "$WORK/encoder.onnx"
if [ "$SMOKE" != 1 ]; then
  step default-job 60 "$PY" benchmarks/gpu_throughput.py default-job --warmup 20 --steps 200 --variants float32 \
    ${FMNIST_DIR:+--data-dir "$FMNIST_DIR"} --output "$OUT/default_job.json"
fi
rm -rf "$WORK"
grep '^==' "$LOG"
