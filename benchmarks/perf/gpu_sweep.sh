#!/usr/bin/env bash
# GPU session script: CUDA tests, a sweep of CAM quick-profile settings (to pick the CPU default), and a short
# paper-profile (2944x1920) run; everything with bf16 autocast. Expects a wsseg wheel (and missing deps) in .whl/.
# Writes gpu.txt, pytest.txt, sweep.tsv, paper.txt and the logs to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/wsseg-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site WSSEG_CACHE_DIR=/tmp/wsseg-cache PYTHONUNBUFFERED=1
cd /tmp  # import wsseg from the installed wheel, not the checkout
W="python3 -m wsseg"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, timm, wsseg; print('torch', torch.__version__, 'timm', timm.__version__, wsseg.list_methods())"
} > "$OUT/gpu.txt" 2>&1
(cd "$OLDPWD" && WSSEG_TEST_DEVICE=cuda timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_cam.py) > "$OUT/pytest.txt" 2>&1
$W data prepare phantom --profile quick > "$OUT/prepare.txt" 2>&1
sweep() {  # name, flags...
  local name=$1; shift
  timeout 150 $W run --method cam --device cuda -q --out /tmp/runs --run-id "$name" "$@" > "/tmp/runs-$name.log" 2>&1
}
mkdir -p /tmp/runs
sweep default
sweep lr3e-3 --set train.lr=3e-3
sweep os8 --set method.output_stride=8
sweep ep20 --epochs 20
sweep ds2 --set method.input_downsample=2
sweep w32 --set method.backbone=resnet18-w32
sweep ds2-ep20 --set method.input_downsample=2 --epochs 20
python3 - > "$OUT/sweep.tsv" <<'PY'
import json, pathlib
print("run\ttotal_s\ttrain_s\tbest_epoch\tval_auroc\tdice_b\tdice_m\tuniform_b\tuniform_m\tauroc_b\tauroc_m\ttrain_img_s")
for p in sorted(pathlib.Path("/tmp/runs").glob("*/record.json")):
    r = json.loads(p.read_text()); m = r["metrics"]; u = r["references"]["uniform_breast"]
    print("\t".join(str(x) for x in [p.parent.name, round(r["timings"]["total"]), round(r["timings"]["train"]),
        r["training"]["best_epoch"], round(r["training"]["best_val_auroc"], 3), round(m["benign"]["dice"], 4),
        round(m["malignant"]["dice"], 4), round(u["benign"]["dice"], 4), round(u["malignant"]["dice"], 4),
        round(m["benign"]["auroc"], 3), round(m["malignant"]["auroc"], 3), round(r["throughput"]["train_images_per_s"], 1)]))
PY
cat /tmp/runs-*.log | grep -E "error|Error" | head -20 >> "$OUT/sweep.tsv"
timeout 200 $W run --method cam --profile paper --device cuda -q --out /tmp/runs --run-id paper --epochs 2 \
  --set data.n_train=160 --set data.n_val=40 --set data.n_test=40 > "$OUT/paper.txt" 2>&1
python3 -c "import json; r=json.load(open('/tmp/runs/paper/record.json')); print(json.dumps({k: r[k] for k in ('device','precision','timings','throughput','peak_memory_mb','metrics')}, indent=1))" >> "$OUT/paper.txt" 2>&1
