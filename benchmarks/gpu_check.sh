#!/usr/bin/env bash
# One script for the lent GPU machine (torch + Triton + torch-geometric, no open3d/trimesh):
# runs the CUDA-marked tests and every GPU benchmark, writing everything under $OUT.
#   run: bash benchmarks/gpu_check.sh        (on the device tool: OUT is set for you)
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD GEODEPTH_BENCH_OUT=$OUT
python - <<'PY' > "$OUT/device.txt" 2>&1
import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name(0))
PY
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
timeout 240 python -m pytest -q -m cuda -p no:cacheprovider tests > "$OUT/cuda_tests.txt" 2>&1; echo "cuda tests rc=$?" >> "$OUT/cuda_tests.txt"
for b in knn aggregate classical sim; do
  timeout 150 python benchmarks/bm_$b.py --device cuda > "$OUT/bm_$b.txt" 2>&1; echo "rc=$?" >> "$OUT/bm_$b.txt"
done
tail -n 3 "$OUT"/*.txt
