"""How visible is each phantom lesion? A contrast-to-noise ratio per lesion, by type, class and size.

For every lesion of ``--n`` generated images (``wsseg.data.phantom.generate_image``, one image at a time, no split
prepared) this measures, on the displayed 12-bit image:

* ``cnr``: |mean inside the lesion mask - mean of a surrounding ring| / std of the ring. The ring is the breast tissue
  between ``--ring-gap-mm`` and that plus one equivalent radius from the mask (1-2 radii from the centre of a round
  lesion), outside every lesion mask; a plane fitted on the ring is subtracted first (the thickness ramp near the
  skin line is not noise);
* ``cnr_smooth``: the same on the image smoothed with a Gaussian of sigma = radius / 2 (normalised inside the
  breast), a matched-filter view: a network can average over the lesion, and the ring's std then measures the
  background's fluctuation at the lesion's scale (anatomical noise), not the pixel noise;
* for masses, ``texture``: std inside the mask / std of the ring (phantom 2 masses replace textured tissue by a
  homogeneous interior, a cue that a mean does not see);
* for calcification clusters, ``peak_cnr`` (brightest pixel inside the cluster region against the ring) and
  ``bright_px``: pixels of the region above ring mean + 3 ring std (to compare with ``n_calcifications``);
* ``cnr_pool`` and ``peak_cnr_pool``: the same on the image box-filtered by ``--pool`` pixels, what a network that
  average-pools its input sees (the quick presets pool 4x: 1.6 mm pixels), and ``ring_peak_cnr_pool``, the ring's
  own brightest pooled pixel, which a calcification's peak has to beat.

Groups report the median and quartiles, and the share of lesions with ``cnr_smooth >= 3`` (Rose's criterion: an
object needs a signal-to-noise ratio of about 3-5 to be seen). Phantom 1.0 is read from git (``--v1-commit``), so
the two versions are measured with the same code.

    python benchmarks/perf/phantom_conspicuity.py --profile quick --n 600
    python benchmarks/perf/phantom_conspicuity.py --profile paper --n 40 --versions 2.0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from scipy import ndimage as ndi

import wsseg.data.phantom as phantom2

SIZE_BINS: tuple[tuple[float, str], ...] = ((5.0, "<5 mm"), (10.0, "5-10 mm"), (20.0, "10-20 mm"), (np.inf, ">20 mm"))


def phantom_v1(commit: str) -> ModuleType:
    """Phantom 1.0's generator, read from ``commit`` of this repository into a temporary module."""
    source = subprocess.run(
        ["git", "show", f"{commit}:wsseg/data/phantom.py"], check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="phantom_v1_")) / "phantom_v1.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("phantom_v1", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["phantom_v1"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def size_bin(diameter_mm: float) -> str:
    """The size bin of an equivalent diameter."""
    return next(name for upper, name in SIZE_BINS if diameter_mm < upper)


def smoothed(img: np.ndarray, breast: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing normalised inside the breast (the black background does not leak in at the skin line)."""
    num = ndi.gaussian_filter(img * breast, sigma)
    den = ndi.gaussian_filter(breast.astype(np.float64), sigma)
    return np.where(breast, num / np.maximum(den, 1e-6), 0.0)


def detrended(img: np.ndarray, mask: np.ndarray, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values inside ``mask`` and on ``ring`` minus the plane ``a + b y + c x`` least-squares fitted on the ring."""
    ry, rx = np.nonzero(ring)
    design = np.stack([np.ones_like(ry), ry, rx], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, img[ry, rx], rcond=None)
    my, mx = np.nonzero(mask)
    plane_in = coef[0] + coef[1] * my + coef[2] * mx
    return img[my, mx] - plane_in, img[ry, rx] - design @ coef


def lesion_row(
    img: np.ndarray,
    breast: np.ndarray,
    mask: np.ndarray,
    others: np.ndarray,
    spacing: float,
    gap_mm: float,
    pool: int,
) -> dict[str, Any] | None:
    """Conspicuity figures of one lesion (``mask``) in a window of the image; None when no ring is left."""
    area = int(mask.sum())
    if area == 0:
        return None
    r = max(float(np.sqrt(area / np.pi)), 1.0)  # equivalent radius, px
    gap = gap_mm / spacing
    dist = ndi.distance_transform_edt(~mask)
    ring = (dist > gap) & (dist <= gap + max(r, 2.0)) & breast & ~others
    if ring.sum() < 10:
        return None
    # Both images are detrended by a plane fitted on the ring: the breast thins toward the skin line, and that
    # ramp is not noise a reader (or a network) has to overcome.
    inside, ring_v = detrended(img, mask, ring)
    sm_in, sm_ring = detrended(smoothed(img, breast, max(r / 2.0, 0.5)), mask, ring)
    # What a network that average-pools its input by ``pool`` sees (every pooling phase: a little optimistic).
    box = ndi.uniform_filter(img * breast, pool) / np.maximum(ndi.uniform_filter(breast.astype(np.float64), pool), 1e-6)
    pool_in, pool_ring = detrended(box, mask, ring)
    row = {
        "diameter_px": 2.0 * r,
        "diameter_eq_mm": 2.0 * r * spacing,
        "contrast": float(inside.mean() - ring_v.mean()),
        "cnr": float(abs(inside.mean() - ring_v.mean()) / max(ring_v.std(), 1e-6)),
        "cnr_smooth": float(abs(sm_in.mean() - sm_ring.mean()) / max(sm_ring.std(), 1e-6)),
        "texture": float(inside.std() / max(ring_v.std(), 1e-6)),
        "peak_cnr": float((inside.max() - ring_v.mean()) / max(ring_v.std(), 1e-6)),
        "bright_px": int((inside > ring_v.mean() + 3.0 * ring_v.std()).sum()),
        "cnr_pool": float(abs(pool_in.mean() - pool_ring.mean()) / max(pool_ring.std(), 1e-6)),
        "peak_cnr_pool": float((pool_in.max() - pool_ring.mean()) / max(pool_ring.std(), 1e-6)),
        # The ring's own brightest pooled pixel: the level a lesion's peak must beat to stand out of its surroundings.
        "ring_peak_cnr_pool": float((pool_ring.max() - pool_ring.mean()) / max(pool_ring.std(), 1e-6)),
    }
    return row


def image_rows(module: ModuleType, cfg: Any, index: int, gap_mm: float, pool: int) -> list[dict[str, Any]]:
    """One row per lesion of test image ``index`` (views alternate CC / MLO, lateralities L / R)."""
    view, lat = ("CC", "MLO")[index % 2], ("L", "R")[(index // 2) % 2]
    pim = module.generate_image(cfg, 0, "test", index, view, lat)
    img = pim.image.astype(np.float64)
    spacing = cfg.pixel_spacing_mm
    all_masks = pim.masks.any(axis=0)
    rows = []
    for les in pim.meta["lesions"]:
        x0, y0, x1, y1 = (int(v) for v in les["box_xyxy"])
        if x1 <= x0 or y1 <= y0:
            continue
        cls = module.CLASSES.index(les["class"])
        # A window around the lesion large enough for the ring and the smoothing (the lesion's radius is under half
        # its box's larger side).
        pad = int(max(x1 - x0, y1 - y0) * 1.5 + 4 * gap_mm / spacing + 8)
        ys = slice(max(0, y0 - pad), min(img.shape[0], y1 + pad))
        xs = slice(max(0, x0 - pad), min(img.shape[1], x1 + pad))
        box = np.zeros(img.shape, dtype=bool)
        box[y0:y1, x0:x1] = True
        mask = (pim.masks[cls] & box)[ys, xs]
        row = lesion_row(img[ys, xs], pim.breast_mask[ys, xs], mask, all_masks[ys, xs] & ~mask, spacing, gap_mm, pool)
        if row is None:
            continue
        row.update(
            image=index,
            density=pim.meta["density"],
            cls=les["class"],
            type=les["type"],
            shape=les.get("shape"),
            diameter_mm=les["diameter_mm"],
            n_calcifications=les.get("n_calcifications"),
            size_bin=size_bin(row["diameter_eq_mm"]),
        )
        rows.append(row)
    return rows


def quartiles(values: list[float]) -> str:
    """``median [q1, q3]``."""
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return f"{q2:.2f} [{q1:.2f}, {q3:.2f}]"


def table(rows: list[dict[str, Any]], keys: tuple[str, ...], title: str) -> str:
    """Markdown table of the figures grouped by ``keys`` (version and profile first)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in ("version", "profile", *keys))].append(r)
    head = " | ".join(("version", "profile", *keys))
    lines = [
        f"{title}\n",
        f"| {head} | n | CNR | CNR smoothed (r/2) | share CNR_s >= 3 | CNR pooled | texture (masses) "
        "| peak CNR (calc.) | peak CNR pooled (calc.) | ring's peak CNR pooled (calc.) |",
        "|" + "---|" * (len(keys) + 11),
    ]
    order = {name: i for i, (_, name) in enumerate(SIZE_BINS)}
    for key in sorted(groups, key=lambda k: tuple(order.get(v, v) if isinstance(v, str) else v for v in k)):
        g = groups[key]
        masses = [r["texture"] for r in g if r["type"] == "mass"]
        calcs = [r["peak_cnr"] for r in g if r["type"] != "mass"]
        calcs_pool = [r["peak_cnr_pool"] for r in g if r["type"] != "mass"]
        ring_pool = [r["ring_peak_cnr_pool"] for r in g if r["type"] != "mass"]
        lines.append(
            f"| {' | '.join(str(v) for v in key)} | {len(g)} | {quartiles([r['cnr'] for r in g])} "
            f"| {quartiles([r['cnr_smooth'] for r in g])} | {np.mean([r['cnr_smooth'] >= 3 for r in g]):.2f} "
            f"| {quartiles([r['cnr_pool'] for r in g])} | {quartiles(masses) if masses else '-'} "
            f"| {quartiles(calcs) if calcs else '-'} | {quartiles(calcs_pool) if calcs_pool else '-'} "
            f"| {quartiles(ring_pool) if ring_pool else '-'} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Measure every lesion of the requested versions and profiles; print the tables (and write the rows)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", action="append", choices=("tiny", "quick", "paper"), help="repeatable; quick")
    ap.add_argument("--n", type=int, default=200, help="images per version and profile")
    ap.add_argument("--versions", default="2.0,1.0", help="comma-separated: 2.0 (this checkout), 1.0 (--v1-commit)")
    ap.add_argument("--v1-commit", default="4ea18b1", help="the commit whose wsseg/data/phantom.py is phantom 1.0")
    ap.add_argument("--ring-gap-mm", type=float, default=1.0, help="gap between mask and ring (the blurred edge)")
    ap.add_argument("--pool", type=int, default=4, help="input pooling of the networks (quick preset: 4, 1.6 mm)")
    ap.add_argument("--rows", type=Path, default=None, help="write one JSON line per lesion here")
    args = ap.parse_args()
    modules = {"2.0": phantom2}
    if "1.0" in args.versions.split(","):
        modules["1.0"] = phantom_v1(args.v1_commit)
    rows: list[dict[str, Any]] = []
    for version in args.versions.split(","):
        module = modules[version]
        for profile in args.profile or ["quick"]:
            cfg = getattr(module.PhantomConfig, profile)()
            t0 = time.perf_counter()
            for i in range(args.n):
                for r in image_rows(module, cfg, i, args.ring_gap_mm, args.pool):
                    rows.append({"version": version, "profile": profile, **r})
            n_les = sum(r["version"] == version and r["profile"] == profile for r in rows)
            print(f"phantom {version} {profile}: {args.n} images, {n_les} lesions ({time.perf_counter() - t0:.0f} s)")
    if args.rows is not None:
        args.rows.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(table(rows, ("type", "cls"), "\nBy lesion type and class"))
    print(table(rows, ("type", "size_bin"), "\nBy lesion type and size (equivalent diameter of the mask)"))
    print(table(rows, ("type", "density"), "\nBy lesion type and BI-RADS density of the breast"))


if __name__ == "__main__":
    main()
