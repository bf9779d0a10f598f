"""Throughput of ``wsseg data prepare`` on full-size DICOM downloads (a benchmark, not a test).

Writes two native-layout downloads with wsseg's fixture writers at full-field sizes, then prepares each with
``prepare_source`` (the code behind ``wsseg data prepare``) into a fresh cache and times it:

* ``vindr-mammo``: 5 studies x 4 views = 20 DICOMs of 3520 x 2640, 12 bits stored, boxes; uncompressed, or
  JPEG 2000 lossless with ``--jpeg2000`` (decoded by pylibjpeg-openjpeg);
* ``cbis-ddsm``: 10 full mammograms of 4480 x 3360, 16 bits stored, with 11 full-size binary ROI mask DICOMs
  and their cropped patches (one mask of the wrong size is reported and its image skipped, as in the fixture).

Per image the prepare decodes the DICOM (and, for CBIS-DDSM, its masks), finds the breast, flips, crops,
resizes to the profile's window, rasterises the annotations and writes the compressed cache file. Writing the
downloads is not timed. Prints images per second (usable images / wall seconds) per dataset.

    python benchmarks/perf/prepare_throughput.py                     # quick profile (736 x 480), 2 workers
    python benchmarks/perf/prepare_throughput.py --profile paper --workers 1
    python benchmarks/perf/prepare_throughput.py --datasets vindr-mammo --jpeg2000
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from wsseg.core import PROFILE_GEOMETRY
from wsseg.data.fixtures import write_cbis, write_vindr
from wsseg.data.prepare import prepare_source

JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
SCALES = {"vindr-mammo": 55, "cbis-ddsm": 70}  # x the 64 x 48 fixture: 3520 x 2640 and 4480 x 3360


def main() -> None:
    """Write the downloads, prepare each, print the rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", help="quick (736x480), paper (2944x1920) or tiny")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--datasets", default="vindr-mammo,cbis-ddsm")
    parser.add_argument("--jpeg2000", action="store_true", help="VinDr DICOMs JPEG 2000 lossless compressed")
    args = parser.parse_args()
    geometry = PROFILE_GEOMETRY[args.profile]
    hw = (geometry.height, geometry.width)
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, window {hw[0]}x{hw[1]}, {args.workers} workers")
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets.split(","):
            root, cache = Path(tmp) / dataset, Path(tmp) / f"cache-{dataset}"
            t0 = time.perf_counter()
            if dataset == "vindr-mammo":
                syntax = JPEG2000_LOSSLESS if args.jpeg2000 else ""
                write_vindr(root, n_studies=5, scale=SCALES[dataset], syntax=syntax)
            else:
                write_cbis(root, scale=SCALES[dataset])
            written = time.perf_counter() - t0
            size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
            t0 = time.perf_counter()
            _, report = prepare_source(dataset, root, hw, cache_dir=cache, workers=args.workers, progress=False)
            seconds = time.perf_counter() - t0
            n = sum(report.counts.values())
            print(
                f"{dataset}: {n} images prepared ({len(report.problems)} skipped) in {seconds:.1f} s = "
                f"{n / seconds:.2f} images/s; download {size_mb:.0f} MiB written in {written:.1f} s (not timed)"
            )


if __name__ == "__main__":
    main()
