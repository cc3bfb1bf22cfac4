#!/usr/bin/env bash
# One script for the lent GPU machine (torch + Triton + torch-geometric, no open3d/trimesh):
# runs the CUDA-marked tests and every GPU benchmark, writing everything under $OUT.
#   bash benchmarks/gpu_check.sh                 all steps, in priority order
#   bash benchmarks/gpu_check.sh bm_knn bm_sim   only these steps
# The sample data: GEODEPTH_DATA, else a carried copy in .gpudata/ (../shared does not travel to
# the device machine: `cp -r ../shared/data .gpudata` here, carry ".gpudata"), else ../shared/data.
# Each step runs under its own time limit; a step that runs out leaves its partial output and the
# next one starts.
# The device tool brings back at most 8 files, so the logs and JSON records are written to
# $OUT/raw and packed into $OUT/results.tgz after every step (a killed run keeps what it had).
set -uo pipefail
OUT=${OUT:-out/gpu}
RAW=$OUT/raw
mkdir -p "$RAW"
export PYTHONPATH=$PWD GEODEPTH_BENCH_OUT=$RAW PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}  # the device image: python3 is the one holding torch
if [ -z "${GEODEPTH_DATA:-}" ] && [ -d .gpudata ]; then export GEODEPTH_DATA=$PWD/.gpudata; fi
$PY - <<'PY' > "$RAW/device.txt" 2>&1
import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name(0))
PY
nvidia-smi > "$RAW/nvidia-smi.txt" 2>&1
declare -A CMD=(
  [cuda_tests]="$PY -m pytest -q -m cuda -p no:cacheprovider --durations=8 tests"
  [bm_knn]="$PY benchmarks/bm_knn.py --device cuda"
  [bm_aggregate]="$PY benchmarks/bm_aggregate.py --device cuda"
  [bm_knn_profile]="$PY benchmarks/bm_knn.py --device cuda --profile"
  [bm_knn_sweep]="$PY benchmarks/bm_knn.py --device cuda --sweep"
  [bm_classical]="$PY benchmarks/bm_classical.py --device cuda"
  [bm_sim]="$PY benchmarks/bm_sim.py --device cuda"
  [bm_bilateral]="$PY benchmarks/bm_bilateral.py --device cuda"
  # geodepth.ops.tune_knn through the CLI on the packaged KITTI scan, full and front half: every
  # setting's time (--table) and the winners, into $RAW/knn_tuning.json (not the machine's cache)
  [knn_tune]="$PY -m geodepth.cli tune-knn --repeats 10 --table --out $RAW/knn_tuning.json"
  [knn_tune_front]="$PY -m geodepth.cli tune-knn --front --repeats 10 --table --out $RAW/knn_tuning.json"
)
declare -A LIMIT=([cuda_tests]=150 [knn_tune]=150 [knn_tune_front]=60 [bm_knn]=100 [bm_aggregate]=60 [bm_knn_profile]=40 [bm_knn_sweep]=150 [bm_classical]=45 [bm_sim]=45 [bm_bilateral]=60)
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(cuda_tests bm_knn knn_tune knn_tune_front bm_knn_profile bm_aggregate bm_bilateral bm_knn_sweep bm_classical bm_sim)
for name in "${steps[@]}"; do
  [ -n "${CMD[$name]:-}" ] || { echo "unknown step $name" >&2; continue; }
  start=$(date +%s)
  timeout "${LIMIT[$name]}" ${CMD[$name]} > "$RAW/$name.txt" 2>&1
  echo "rc=$? ($(( $(date +%s) - start ))s of ${LIMIT[$name]}s)" >> "$RAW/$name.txt"
  tar czf "$OUT/results.tgz" -C "$RAW" .
done
cat "$RAW/device.txt"
for f in "$RAW"/*.txt; do echo "== $(basename "$f")"; tail -n 6 "$f"; done
rm -rf "$RAW"
