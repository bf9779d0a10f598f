"""Does brightness alone find the phantom's lesions? The reference maps on a freshly generated phantom.

Generates ``--n`` validation and ``--n`` test images of a profile (cached like ``wsseg run`` does), scores the
parameter-free reference maps (``intensity``, ``uniform``) through the run's own evaluator (threshold calibrated on
validation, frozen for test) and prints Dice, the 10 mm pointing game and AUROC per class, with lesion-type and
lesion-size breakdowns of the intensity map's Dice, and one by lesion type and the breast's BI-RADS density. Issue 17
asks for intensity Dice at most twice the uniform floor and a pointing game at 10 mm of at most 0.2.

    python benchmarks/perf/phantom_brightness.py --profile quick --n 200
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict

import numpy as np
import torch

# The study script beside this one (a script's own folder is on sys.path).
from train_study import phantom_changes

from wsseg.config import EvalConfig, phantom_config
from wsseg.core import CLASSES
from wsseg.data.dataset import MammogramDataset, prepare_phantom
from wsseg.evaluation.stats import SplitStats
from wsseg.evaluation.summary import per_image_rows, summarize
from wsseg.pipelines.run import evaluate_split
from wsseg.registry import create_method


def main() -> None:
    """Print the reference rows' metrics on a generated phantom."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick", choices=("tiny", "quick", "paper"))
    ap.add_argument("--n", type=int, default=200, help="images per split (a multiple of 4)")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--phantom", action="append", default=[], help="field=value or field=lo,hi: a PhantomConfig change")
    args = ap.parse_args()
    t0 = time.perf_counter()
    phantom = dataclasses.replace(phantom_config(args.profile), **phantom_changes(args.phantom))
    root = prepare_phantom(phantom, args.seed, {"val": args.n, "test": args.n}, args.cache_dir, progress=False)
    print(f"data: {root} ({time.perf_counter() - t0:.0f} s)")
    eval_cfg = EvalConfig(bootstrap_resamples=0)
    val = MammogramDataset(root, "val", with_masks=True)
    test = MammogramDataset(root, "test", with_masks=True)
    for name in ("uniform", "intensity"):
        method = create_method(name, profile=args.profile).eval()
        ev_val = evaluate_split(method, val, 8, torch.device("cpu"), False, eval_cfg, progress=False)
        ev_test = evaluate_split(method, test, 8, torch.device("cpu"), False, eval_cfg, progress=False)
        thresholds = ev_val.evaluator.calibrated_thresholds()
        stats = ev_test.evaluator.stats()
        metrics = summarize(stats, thresholds, eval_cfg.fixed_threshold)
        for cls in CLASSES:
            m = metrics[cls]
            print(
                f"{name:>9} {cls:>9}: Dice {m['dice']:.3f} (oracle {m['dice_oracle']:.3f})  "
                f"hit@10mm {m['pointing_game_10mm']:.3f}  AUROC {m['auroc']:.3f}  n={m['n_images']}"
            )
        if name == "intensity":
            breakdown(stats, thresholds, test)


def breakdown(stats: SplitStats, thresholds: dict[str, float], test: MammogramDataset) -> None:
    """Per-image Dice of the intensity map by lesion type, by diameter and by lesion type and BI-RADS density."""
    dice = {(r["image_id"], r["class"]): float(r["dice"]) for r in per_image_rows(stats, thresholds)}  # type: ignore[arg-type]
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for i in range(len(test)):
        meta = test[i]["meta"]
        for les in meta["lesions"]:
            d = les["diameter_mm"]
            size = "<5 mm" if d < 5 else "5-10 mm" if d < 10 else "10-20 mm" if d < 20 else ">20 mm"
            value = dice[(meta["image_id"], les["class"])]
            groups[(les["class"], les["type"])].append(value)
            groups[(les["class"], size)].append(value)
            groups[(les["class"], f"{les['type']}, {meta['density']}")].append(value)  # BI-RADS density of the breast
    for (cls, group), values in sorted(groups.items()):
        print(f"    intensity {cls:>9} {group:>16}: Dice {np.nanmean(values):.3f}  n={len(values)}")


if __name__ == "__main__":
    main()
