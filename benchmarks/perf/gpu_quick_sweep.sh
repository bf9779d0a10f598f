#!/usr/bin/env bash
# Quick-profile runs of CAM, GMIC and GLAM (and a few GMIC/GLAM settings) on one GPU, one seed: which settings
# localize on the phantom. Prints one summary line per run and copies the records to $OUT.
# Usage on a CUDA machine with torch installed: OUT=/some/dir bash benchmarks/perf/gpu_quick_sweep.sh
set -uo pipefail
OUT=${OUT:-/tmp/wsseg-gpu-sweep}
mkdir -p "$OUT/runs"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export WSSEG_CACHE_DIR=/tmp/wsseg-cache PYTHONUNBUFFERED=1
python3 -m wsseg data prepare phantom --profile quick --workers 16 2>&1 | tail -1
sweep() {  # run-id, method, extra args...
  local id=$1 m=$2; shift 2
  timeout 150 python3 -m wsseg run -m "$m" --device cuda -q --out "$OUT/runs" --run-id "$id" "$@" > "$OUT/$id.log" 2>&1
  python3 - "$OUT/runs/$id/record.json" "$id" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except OSError:
    print(f"{sys.argv[2]}: no record"); sys.exit()
m, u = r["metrics"], r["references"]["uniform_breast"]
print(f"{sys.argv[2]:24s} dice b/m {m['benign']['dice']:.4f} {m['malignant']['dice']:.4f}  uniform {u['benign']['dice']:.4f} "
      f"{u['malignant']['dice']:.4f}  auroc {m['benign']['auroc']:.3f} {m['malignant']['auroc']:.3f}  "
      f"best {r['training']['best_epoch']}  {r['timings']['total']:.0f} s")
PY
}
sweep cam cam
sweep gmic gmic
sweep gmic-t0.005 gmic --set method.percent_t=0.005
sweep gmic-beta1e-3 gmic --set method.beta=1e-3
sweep gmic-ds2 gmic --set method.global_input_downsample=2
sweep glam glam
sweep glam-k0.01 glam --set method.percent_k=0.01
for f in "$OUT"/runs/*/record.json; do cp "$f" "$OUT/record-$(basename "$(dirname "$f")").json"; done
rm -rf "$OUT/runs"
