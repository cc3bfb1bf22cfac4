#!/usr/bin/env bash
# One script for the lent GPU machine (torch + Triton + torch-geometric, no open3d/trimesh):
# runs the CUDA-marked tests and every GPU benchmark, writing everything under $OUT.
#   run: bash benchmarks/gpu_check.sh        (on the device tool: OUT is set for you)
# Steps run in priority order with their own time limits (540 s in all, inside the tool's 600 s
# per command); a step that runs out leaves its partial output and the next one starts.
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD GEODEPTH_BENCH_OUT=$OUT
python - <<'PY' > "$OUT/device.txt" 2>&1
import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name(0))
PY
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
step() {  # step NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  timeout "$secs" "$@" > "$OUT/$name.txt" 2>&1; echo "rc=$? (limit ${secs}s)" >> "$OUT/$name.txt"
}
step cuda_tests 150 python -m pytest -q -m cuda -p no:cacheprovider tests
step bm_knn 90 python benchmarks/bm_knn.py --device cuda
step bm_aggregate 120 python benchmarks/bm_aggregate.py --device cuda
step bm_knn_sweep 90 python benchmarks/bm_knn.py --device cuda --sweep
step bm_classical 45 python benchmarks/bm_classical.py --device cuda
step bm_sim 45 python benchmarks/bm_sim.py --device cuda
tail -n 3 "$OUT"/*.txt
