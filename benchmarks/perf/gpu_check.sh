#!/usr/bin/env bash
# One-shot GPU check of the foundation: the CUDA tests, then `wsseg run --method cam` on the quick profile
# and a short paper-profile (2944x1920) run, all with bf16 autocast. Writes records and logs to $OUT.
# Usage on a CUDA machine with torch installed: OUT=/some/dir bash benchmarks/perf/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/wsseg-gpu-check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
export WSSEG_CACHE_DIR=/tmp/wsseg-cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
WSSEG_TEST_DEVICE=cuda python3 -m pytest -q tests/test_gpu.py tests/test_cam.py tests/test_loop.py 2>&1 | tail -3 | tee "$OUT/pytest.txt"
/usr/bin/time -v wsseg run --method cam --device cuda -q --out "$OUT/runs" 2>&1 | grep -vE "^\s+(Page|Socket|Signals|Swaps|File|Average|Voluntary|Invol|Exit|Minor|Major|Percent|System|User)" | tee "$OUT/quick.txt"
wsseg run --method cam --profile paper --device cuda -q --out "$OUT/runs" --epochs 2 \
  --set data.n_train=160 --set data.n_val=40 --set data.n_test=40 2>&1 | tee "$OUT/paper.txt"
for f in "$OUT"/runs/*/record.json; do cp "$f" "$OUT/record-$(basename "$(dirname "$f")" | cut -d- -f3).json"; done
rm -rf "$OUT/runs"
