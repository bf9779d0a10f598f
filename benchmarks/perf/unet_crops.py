"""Is the phantom's lesion learnable at its own pixel size? A fully supervised U-Net trained on crops, scored on images.

The quick presets pool the 0.4 mm phantom 4x before the network (1.6 mm pixels), and a U-Net trained that way
stops near Dice 0.18 on phantom 2 (benchmarks/cpu-2core-2026-12-07-issue17-training.md). This study asks whether the
lesions are findable when the network sees finer pixels, at the same cost per step: it trains the quick U-Net
(quarter-width ResNet-18, four stages) on ``--crop``-pixel crops of the training images, pooled by
``--input-downsample`` (1: 0.4 mm, 2: 0.8 mm), and then scores whole validation and test images with the run's
evaluator (thresholds calibrated on validation, frozen for test), as ``wsseg run`` does. Crops keep the field of
view: ``--crop 192 --input-downsample 1`` and ``--crop 384 --input-downsample 2`` both cover 77 mm and feed the
network 192x192 pixels (1.7x the pixels of a 4x-pooled 736x480 image).

Crop sampling (a fully supervised ceiling may use its masks, as patch-based mammography segmenters do): with
probability ``--lesion-frac`` a crop is centred on a lesion pixel drawn uniformly from the image's masks (jittered by
up to a quarter crop), otherwise on a uniformly drawn breast pixel; crops stay inside the image. The crop's image
labels are whether its masks hold any lesion pixel. Images are standardised per whole image before cropping, as
evaluated. One step is one batch of crops from distinct training images; AdamW with the loop's defaults (lr 1e-3,
weight decay 1e-4, 20 warm-up steps, cosine, gradient clip 5).

    python benchmarks/perf/unet_crops.py --name d1c192 --crop 192 --input-downsample 1 --steps 1600
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsseg.config import make_run_config
from wsseg.core import CLASSES
from wsseg.data.dataset import MammogramDataset
from wsseg.data.prepare import prepare_dataset
from wsseg.data.sources import PrepareOptions
from wsseg.evaluation.summary import summarize
from wsseg.pipelines.run import build_method, evaluate_split


def crop_batch(
    ds: MammogramDataset, ids: list[int], crop: int, lesion_frac: float, rng: np.random.Generator
) -> dict[str, Any]:
    """One batch of ``crop`` x ``crop`` crops, one from each image in ``ids`` (see the module docstring)."""
    images, masks = [], []
    for i in ids:
        s = ds[i]
        img, m, breast = s["image"], s["masks"], s["breast_mask"]  # (1, H, W), (K, H, W), (H, W)
        h, w = img.shape[-2:]
        lesion = m.amax(dim=0) > 0  # (H, W)
        pool = lesion if lesion.any() and rng.random() < lesion_frac else breast > 0
        ys, xs = torch.nonzero(pool, as_tuple=True)
        k = int(rng.integers(len(ys)))
        jitter = crop // 4 if pool is lesion else 0
        cy = int(ys[k]) + int(rng.integers(-jitter, jitter + 1))
        cx = int(xs[k]) + int(rng.integers(-jitter, jitter + 1))
        y0 = min(max(cy - crop // 2, 0), h - crop)
        x0 = min(max(cx - crop // 2, 0), w - crop)
        images.append(img[:, y0 : y0 + crop, x0 : x0 + crop])
        masks.append(m[:, y0 : y0 + crop, x0 : x0 + crop].float())
    mask_t = torch.stack(masks)  # (B, K, crop, crop)
    return {"images": torch.stack(images), "masks": mask_t, "labels": (mask_t.amax(dim=(-2, -1)) > 0).float()}


def main() -> None:
    """Train on crops, score whole images, append one JSON row to the log."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--input-downsample", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lesion-frac", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log", type=Path, default=Path("runs-study/unet_crops.jsonl"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    cfg = make_run_config("unet", "quick", args.seed, [f"method.input_downsample={args.input_downsample}"])
    root = prepare_dataset(cfg.data, cfg.profile, PrepareOptions(progress=False)).root
    train = MammogramDataset(root, "train", True, cfg.data.dataset)
    method = build_method(cfg)
    decay = [p for p in method.parameters() if p.ndim > 1]
    no_decay = [p for p in method.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    warm = 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, args.steps - warm)))
        ),
    )
    t0 = time.perf_counter()
    order = rng.permutation(len(train))
    pos = 0
    method.train()
    for step in range(args.steps):
        if pos + args.batch > len(order):
            order, pos = rng.permutation(len(train)), 0
        batch = crop_batch(train, [int(i) for i in order[pos : pos + args.batch]], args.crop, args.lesion_frac, rng)
        pos += args.batch
        out = method(batch["images"])
        losses = method.loss(out, batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        torch.nn.utils.clip_grad_norm_(method.parameters(), 5.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(
                f"step {step} loss {float(losses['loss']):.4f} dice {float(losses['dice']):.3f} "
                f"{time.perf_counter() - t0:.0f}s",
                flush=True,
            )
    train_s = time.perf_counter() - t0
    method.eval()
    ev_args = (cfg.eval.batch_size, torch.device("cpu"), False, cfg.eval, 0, False)
    val = evaluate_split(method, MammogramDataset(root, "val", True, cfg.data.dataset), *ev_args)
    thresholds = val.evaluator.calibrated_thresholds()
    test = evaluate_split(method, MammogramDataset(root, "test", True, cfg.data.dataset), *ev_args)
    metrics = summarize(test.evaluator.stats(), thresholds)
    row: dict[str, Any] = {"name": args.name, **{k: v for k, v in vars(args).items() if k not in ("log", "name")}}
    for c in CLASSES:
        for key in ("dice", "dice_oracle", "auroc", "pointing_game_10mm"):
            row[f"{key}_{c}"] = metrics[c][key]
    row.update(train_s=train_s, total_s=time.perf_counter() - t0, cache=root.name)
    print(json.dumps(row), flush=True)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
