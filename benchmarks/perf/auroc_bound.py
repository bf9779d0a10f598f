"""The image AUROC that a reader who sees only the visible lesions can reach: an upper bound from lesion conspicuity.

A detector that ranks every image holding a visible lesion of a class above every other image, and cannot tell an
image whose lesions are all invisible from a lesion-free one (ties count one half), has image AUROC ``p + (1 - p) / 2``
for that class, where ``p`` is the share of the class's positive images with at least one visible lesion. No method
trained on the images can do better than a reader who sees everything visible, so this bounds the leaderboard's
AUROC column from above.

"Visible" is read from the per-lesion rows of ``phantom_conspicuity.py --rows`` against Rose's criterion (a signal-to-
noise ratio of about 3-5): a mass by its matched-filter CNR (``cnr_smooth``), a calcification cluster by its brightest
pixel (``peak_cnr``); at the 4x-pooled network input, by ``cnr_pool`` and by a pooled peak that also beats the
ring's own brightest pooled pixel. A last row bounds a network that finds every mass, however faint, and no
calcification cluster: its bound is set by the share of positive images that hold a mass.

    python benchmarks/perf/phantom_conspicuity.py --profile quick --n 600 --versions 2.0 --rows rows.jsonl
    python benchmarks/perf/auroc_bound.py rows.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def visible_share(
    rows: list[Row], cls: str, visible: Callable[[Row, float], bool], threshold: float
) -> tuple[int, float]:
    """(positive images of ``cls``, share of them with at least one lesion of ``cls`` visible at ``threshold``)."""
    seen: dict[int, bool] = defaultdict(bool)
    for r in rows:
        if r["cls"] == cls:
            seen[r["image"]] |= visible(r, threshold)
    return len(seen), sum(seen.values()) / max(len(seen), 1)


def visible_fine(r: Row, threshold: float) -> bool:
    """At the 0.4 mm pixels: a mass's matched-filter CNR, a cluster's brightest pixel."""
    return bool((r["cnr_smooth"] if r["type"] == "mass" else r["peak_cnr"]) >= threshold)


def visible_pooled(r: Row, threshold: float) -> bool:
    """At the 4x-pooled input: a mass's pooled CNR, a cluster's pooled peak above the ring's own brightest pixel."""
    if r["type"] == "mass":
        return bool(r["cnr_pool"] >= threshold)
    return bool(r["peak_cnr_pool"] >= max(threshold, r["ring_peak_cnr_pool"]))


def main() -> None:
    """Print the bound per class, pixel size and threshold as a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=Path, help="phantom_conspicuity.py --rows output (one JSON line per lesion)")
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.rows.read_text(encoding="utf-8").splitlines()]
    print("| input | Rose threshold | class | positive images | share visible p | AUROC bound 0.5 + p / 2 |")
    print("|---|---|---|---|---|---|")
    readers: dict[str, Callable[[Row, float], bool]] = {"0.4 mm": visible_fine, "1.6 mm (4x pooled)": visible_pooled}
    for threshold in (3.0, 5.0):
        for name, visible in readers.items():
            for cls in ("benign", "malignant"):
                n, p = visible_share(rows, cls, visible, threshold)
                print(f"| {name} | {threshold:g} | {cls} | {n} | {p:.3f} | {0.5 + p / 2:.3f} |")
    # A network that finds every mass, however faint, but no calcification cluster (e.g. one whose input pooling
    # hides them): its bound depends only on the share of positive images holding a mass.
    for cls in ("benign", "malignant"):
        n, p = visible_share(rows, cls, lambda r, _: r["type"] == "mass", 0.0)
        print(f"| every mass, no calcification | - | {cls} | {n} | {p:.3f} | {0.5 + p / 2:.3f} |")


if __name__ == "__main__":
    main()
