#!/usr/bin/env bash
# One-shot GPU check of GMIC and GLAM at the paper preset (2944x1920): fp32 GPU-vs-CPU agreement and `wsseg bench`
# (inference and training steps, fp32 and bf16, batch 1 and 16). Writes logs and CSV rows to $OUT.
# Usage on a CUDA machine with torch installed: OUT=/some/dir bash benchmarks/perf/gpu_gmic_glam.sh
set -uo pipefail
OUT=${OUT:-/tmp/wsseg-gpu-check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export WSSEG_CACHE_DIR=/tmp/wsseg-cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"

# fp32 on the GPU (TF32 off) equals fp32 on the CPU for the same weights and input.
timeout 120 python3 - <<'PY' 2>&1 | tee "$OUT/agreement.txt"
import torch
from wsseg import create_method
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
for name in ("gmic", "glam"):
    torch.manual_seed(0)
    m = create_method(name, profile="paper").eval()
    x = torch.randn(2, 1, 2944, 1920)
    with torch.no_grad():
        cpu = m(x)
        gpu = m.cuda()(x.cuda())
    for key in ("logits", "saliency"):
        d = (getattr(cpu, key) - getattr(gpu, key).cpu()).abs().max().item()
        print(f"{name} {key}: max |cpu - gpu| = {d:.2e}")
    same = torch.equal(cpu.extras["patch_locations"], gpu.extras["patch_locations"].cpu())
    print(f"{name} patch_locations equal: {same}")
PY

for m in gmic glam; do
  timeout 420 python3 -m wsseg bench -m $m --profile paper --precision fp32 --precision bf16 \
    --phase inference --phase train --batch 1 --batch 16 --seconds 1 --out "$OUT/bench.csv" 2>&1 | tee "$OUT/bench-$m.txt"
done

