"""Throughput of the evaluator's whole metric suite at mammogram resolution (a benchmark, not a test).

Scores N synthetic images of 2944x1920 (two classes: benign, malignant) through ``SegmentationEvaluator``
with the default settings of a run (1,000-bin histograms, Dice/IoU/soft Dice/PxAP statistics, pointing
game, FROC detections with a 5 mm window at 0.1 mm per pixel), then reduces them (``summary``) and runs
the 1,000-resample patient bootstrap. Maps are full-resolution float32, as methods hand them to the
evaluator in ``wsseg run`` (``--low-res`` passes 184x120 maps instead, so the harness's bilinear
upsampling is timed too). Map and mask generation is not timed.

Prints images per second of ``add`` (the per-image work), the reduction and bootstrap times, the peak
resident memory, and the resident memory after every quarter of the images: it must not grow with the
number of images (each image keeps about 32 KB of statistics).

    python benchmarks/perf/score_throughput.py                # 200 images, about 2-3 minutes on 2 cores
    python benchmarks/perf/score_throughput.py --images 20    # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from wsseg.config import EvalConfig
from wsseg.evaluation.bootstrap import bootstrap_intervals
from wsseg.pipelines.scored import make_evaluator

H, W, SPACING = 2944, 1920, 0.1


def rss_mb() -> float:
    """Current resident memory of this process in MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def breast_region() -> torch.Tensor:
    """(H, W) bool: a half-ellipse against the left edge, like a canonical breast."""
    rows = torch.arange(H, dtype=torch.float32)[:, None]
    cols = torch.arange(W, dtype=torch.float32)[None, :]
    return ((rows - H / 2) / (0.45 * H)) ** 2 + (cols / (0.85 * W)) ** 2 <= 1.0


def synthetic_image(rng: np.random.Generator, low_res: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (2, h, w) in [0, 1] and masks (2, H, W): 0-2 lesions per class of 4-15 mm radius."""
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    low = torch.from_numpy(rng.random((1, 2, 184, 120)).astype(np.float32)) * 0.5  # (1, 2, 184, 120)
    for k in range(2):
        for _ in range(int(rng.integers(0, 3))):
            r = int(rng.integers(40, 150))  # pixels
            cy, cx = int(rng.integers(H // 4, 3 * H // 4)), int(rng.integers(r, W // 2))
            y0, y1, x0, x1 = cy - r, cy + r + 1, cx - r, cx + r + 1
            yy, xx = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
            masks[k, y0:y1, x0:x1] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            low[0, k, cy * 184 // H, cx * 120 // W] += 0.5  # a hot spot near the lesion
    low = low.clamp(0, 1)
    if low_res:
        return low[0], masks
    return F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)[0].clamp(0, 1), masks


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--low-res", action="store_true", help="pass 184x120 maps (the harness upsamples them)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    region = breast_region()
    cfg = EvalConfig()
    ev = make_evaluator(cfg)
    add_seconds = 0.0
    checkpoints = {max(1, args.images * q // 4) for q in (1, 2, 3, 4)}
    memory = []
    t_wall = time.perf_counter()
    for i in range(args.images):
        maps, masks = synthetic_image(rng, args.low_res)
        labels = masks.flatten(1).any(1).float()
        t0 = time.perf_counter()
        ev.add(
            f"img{i:04d}",
            maps,
            masks,
            region,
            patient_id=f"p{i // 4}",
            spacing_mm=SPACING,
            image_scores=torch.rand(2),
            image_labels=labels,
        )
        add_seconds += time.perf_counter() - t0
        del maps, masks
        if i + 1 in checkpoints:
            memory.append((i + 1, rss_mb()))
    peak_after_adds = peak_rss_mb()
    t0 = time.perf_counter()
    thresholds = {"benign": 0.5, "malignant": 0.5}
    stats = ev.stats()
    metrics = ev.summary(thresholds)
    summary_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    bootstrap_intervals(stats, thresholds, n_resamples=args.bootstrap)
    boot_seconds = time.perf_counter() - t0
    wall = time.perf_counter() - t_wall
    held = sum(a.nbytes for c in stats.classes.values() for a in vars(c).values() if isinstance(a, np.ndarray))

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, python {platform.python_version()}, torch {torch.__version__}"
    )
    kind = "184x120 (upsampled by the harness)" if args.low_res else "full resolution"
    print(f"{args.images} images of {H}x{W}, 2 classes, maps {kind}")
    print(
        f"per-image work (add): {add_seconds:.1f} s, {args.images / add_seconds:.2f} images/s, "
        f"{1000 * add_seconds / args.images:.0f} ms per image"
    )
    print(
        f"summary (all metrics, oracle curves): {summary_seconds:.2f} s; bootstrap ({args.bootstrap} resamples, "
        f"{len(set(stats.patient_ids))} patients): {boot_seconds:.2f} s"
    )
    print(f"whole run including synthetic data generation: {wall:.1f} s")
    print(f"per-image statistics held: {held / 2**20:.2f} MiB ({held / args.images / 1024:.1f} KiB per image)")
    print("resident memory after n images: " + ", ".join(f"{n}: {m:.0f} MiB" for n, m in memory))
    print(f"peak resident memory: {peak_after_adds:.0f} MiB while scoring, {peak_rss_mb():.0f} MiB overall")
    print(
        f"malignant: dice {metrics['malignant']['dice']:.3f}, pxap {metrics['malignant']['pxap']:.3f}, "
        f"froc {metrics['malignant']['froc']:.3f}"
    )


if __name__ == "__main__":
    main()
