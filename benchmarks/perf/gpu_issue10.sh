#!/usr/bin/env bash
# Issue 10 in one go (about 7 minutes expected on an H100/H200): `wsseg bench` of GLAM and GMIC at the paper preset
# (2944x1920), bf16 and fp32, batches 1 and 16, wsseg vs reference mode (the official code's per-image crop and
# paste-back host loops, measured in the same process so the speedup is a ratio), the data loader at 16 workers,
# then torch.compile. (torchrun needs two GPUs; its CPU test is tests/test_distributed.py.)
#
# Usage on the device machine, from the repository root, with wheels of the dependencies in .whl/ (carry it):
#   OUT=/some/dir bash benchmarks/perf/gpu_issue10.sh
# Writes $OUT/gpu.txt, $OUT/bench-*.txt (logs with the printed speedups), $OUT/<card>-<precision>-<torch>.csv
# (the rows of benchmarks/perf/*.csv), $OUT/loader.csv and $OUT/kernels/*.txt. Every step has its own timeout so
# one slow step cannot eat the others' time; worst case: setup 0.5 min, eager 6.3 min, loader 3.5 min, kernels 2 min,
# compile 5.5 min; expected about 2.5 + 1.5 + 1 + 4 min. Run it with timeout_s 600 and read $OUT even when it stopped early.
set -uo pipefail
OUT=${OUT:-/tmp/wsseg-issue10}
mkdir -p "$OUT"
# Dependencies from .whl/ (not a wsseg wheel: an old one would shadow this checkout's methods).
if ls .whl/*.whl >/dev/null 2>&1; then
  deps=$(ls .whl/*.whl | grep -v '/wsseg-')
  [ -n "$deps" ] && python3 -m pip install -q --no-index --no-deps --target /tmp/site $deps
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# This checkout, methods included (they are the package wsseg_methods): an editable install registers them.
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/install.txt" 2>&1 || cat "$OUT/install.txt"
export WSSEG_CACHE_DIR=/tmp/wsseg-cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 - <<'PY' 2>&1 | tee -a "$OUT/gpu.txt"
import inspect, os, torch, timm
from wsseg.registry import get_method_spec
print("torch", torch.__version__, "timm", timm.__version__)
src = inspect.getfile(get_method_spec("glam").cls)
print("glam from", src)
assert os.path.realpath(src).startswith(os.getcwd()), "wsseg_methods does not come from this checkout"
PY
[ "${PIPESTATUS[0]}" = 0 ] || { echo "setup failed; see $OUT/gpu.txt"; exit 1; }
card=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower())")
tv=$(python3 -c "import torch; print(torch.__version__.split('+')[0])")

# 1. Eager, wsseg and reference mode in the same process (the speedup lines): bf16 at batches 1 and 16, fp32 at 16.
for m in glam gmic; do
  timeout 110 python3 -m wsseg bench -m $m --profile paper --precision bf16 --phase inference --phase train \
    --batch 1 --batch 16 --mode wsseg,reference --seconds 1 --out "$OUT/$card-bf16-$tv.csv" 2>&1 \
    | tee "$OUT/bench-$m-bf16.txt" | grep -E "images/s|speedup|memory|rror"
  timeout 80 python3 -m wsseg bench -m $m --profile paper --precision fp32 --phase inference --phase train \
    --batch 16 --mode wsseg,reference --seconds 1 --out "$OUT/$card-fp32-$tv.csv" 2>&1 \
    | tee "$OUT/bench-$m-fp32.txt" | grep -E "images/s|speedup|memory|rror"
done

# 2. The loader: 160 paper-size phantom images (generated first, about 30 s on 16 cores), batch 16, 16 workers
#    and 8 for comparison; uint16 batches standardised on the GPU as wsseg run reads on CUDA, pinned memory and the
#    copy included, then again with the window noise on the GPU (train.augment=window). Compare with GLAM's
#    train images/s.
timeout 150 python3 -m wsseg bench --loader --profile paper --images 160 --batch 16 --workers 16 --workers 8 \
  --augment --seconds 5 --out "$OUT/loader.csv" 2>&1 | tee "$OUT/loader.txt" | grep -E "images/s|rror"
#    The same at 16 workers with float32 images standardised in the workers (the CPU pipeline), for the ratio.
timeout 60 python3 -m wsseg bench --loader --profile paper --images 160 --batch 16 --workers 16 --no-raw \
  --seconds 5 --out "$OUT/loader.csv" 2>&1 | tee -a "$OUT/loader.txt" | grep -E "images/s|rror"

# 3. Where the time goes: torch.profiler tables (most expensive kernels) of both methods, bf16, batch 16, eager.
timeout 120 python3 -m wsseg bench -m glam -m gmic --profile paper --precision bf16 --phase inference --phase train \
  --batch 16 --seconds 0.5 --kernels "$OUT/kernels" 2>&1 | tail -n 3

# 4. torch.compile (torch's default mode; max-autotune compiles for many minutes), bf16, batch 16, wsseg mode;
#    last, so a slow compilation cannot cost the figures above. Compilation is in the untimed warm-up.
timeout 200 python3 -m wsseg bench -m glam --profile paper --precision bf16 --phase inference --phase train \
  --batch 16 --compile --seconds 2 --out "$OUT/$card-bf16-$tv.csv" 2>&1 \
  | tee "$OUT/bench-glam-compile.txt" | grep -E "images/s|memory|rror"
timeout 130 python3 -m wsseg bench -m gmic --profile paper --precision bf16 --phase inference --phase train \
  --batch 16 --compile --seconds 2 --out "$OUT/$card-bf16-$tv.csv" 2>&1 \
  | tee "$OUT/bench-gmic-compile.txt" | grep -E "images/s|memory|rror"
echo "done: $(ls "$OUT")"
