"""``mini-mias``: the MIAS MiniMammographic Database (PGM images and the Info table; circles).

Layout: ``mdb001.pgm`` ... ``mdb322.pgm`` anywhere under ``--root`` and the Info table (``Info.txt``, or any
``.txt`` whose lines start with ``mdb``). Info lines are ``REF BG CLASS [SEVERITY [x y radius]]``; an image may
have several lines (union). The shapes found in the table:

- 3 tokens: ``mdb003 D NORM``, a normal image;
- 7 tokens: ``mdb001 G CIRC B 535 425 197``, a finding with a centre and radius;
- a finding **without a location**: 4 tokens (``mdb059 F CIRC B``), or the severity followed by a reference to
  the README's note on calcifications spread over the breast instead of coordinates (``mdb233 G CALC M *NOTE 3*``,
  6 tokens). Such a line labels the image (it trains and counts for AUROC) but locates nothing: the image is
  *label-only* for that class and enters no localisation metric of it (its empty mask is not "lesion-free").

Anything else (a partial or non-numeric ``x y radius``, extra fields) is a malformed line, reported with its line
number. The centre's origin is the **bottom-left** corner, so row = height - y. Even numbers are left breasts,
odd numbers right (README); a patient is a left/right pair. Labels: severity ``M`` malignant, ``B`` benign,
``NORM`` normal (docs/datasets.md).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wsseg.data.dataset import SPLITS
from wsseg.data.fixture_kit import Phantom, phantom
from wsseg.data.sources import (
    DataError,
    DataSource,
    Lesion,
    Problem,
    ScanResult,
    SourceRecord,
    not_regular,
    register_source,
    regular_files,
)

CLASSES_ABNORMAL = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM")
SEVERITY = {"B": "benign", "M": "malignant"}
PIXEL_SPACING_MM = 0.2
NATIVE_SIZE = 1024
_REF = re.compile(r"^mdb(\d{3})$")


def find_info(root: Path) -> Path:
    """The Info table: ``Info.txt`` if present, else the one ``.txt`` file with ``mdb`` lines.

    Raises:
        DataError: none found.
    """
    for p in sorted(root.rglob("*.txt"), key=lambda p: (p.name.lower() != "info.txt", str(p))):
        kind = not_regular(p)
        if kind is not None:  # never opened: reading a FIFO would block forever
            if p.name.lower() == "info.txt":
                raise DataError(p, f"the Info table is {kind}", "copy Info.txt from the download")
            continue
        with open(p, encoding="latin-1") as f:
            if any(line.strip().lower().startswith("mdb") for line in f):
                return p
    raise DataError(root, "no Info table (Info.txt with mdbNNN lines) found", "copy Info.txt from the download")


def _looks_like_record(tokens: list[str]) -> bool:
    """Whether a line that is not a valid ``mdbNNN`` record was meant to be one (a damaged or misspelt record)."""
    if not tokens:
        return False
    first = tokens[0].lower()
    known = {"NORM", *CLASSES_ABNORMAL}
    return first.startswith("mdb") or (len(tokens) >= 3 and tokens[2].upper() in known and first != "refnum")


def image_height(path: Path) -> int:
    """Rows of a PGM from its header (no decoding); 1024 when the header is unreadable (the decode reports it)."""
    try:
        with Image.open(path) as im:
            return int(im.size[1])
    except (OSError, SyntaxError, ValueError):
        return NATIVE_SIZE


def is_note_reference(tokens: list[str]) -> bool:
    """Whether the fields after the severity refer to a README note (``*NOTE 3*``) instead of giving coordinates."""
    return 0 < len(tokens) <= 4 and any("NOTE" in t.upper() for t in tokens)


@register_source("mini-mias")
class MiniMIAS(DataSource):
    """mini-MIAS: 322 8-bit PGM films (1024x1024, 200 um) with circle annotations; pathology B/M labels."""

    annotation = "circle"
    label_source = "pathology"
    licence = "research use only (MIAS licence); cite Suckling et al. 1994; do not redistribute"
    version = 2  # 2: *NOTE 3* lines are label-only findings (they were refused as malformed)

    def write_fixture(self, root: Path) -> dict[str, Any]:
        """A tiny mini-MIAS download with the real Info table's traps (:func:`write_fixture`)."""
        return write_fixture(root)

    def scan(self, root: Path) -> ScanResult:
        """Parse the Info table and pair each line with its PGM."""
        info = find_info(root)
        problems: list[Problem] = []
        images = {p.stem.lower(): p for p in regular_files(root, "*.pgm", problems)}
        lines: dict[str, list[list[str]]] = {}
        with open(info, encoding="latin-1") as f:
            for i, line in enumerate(f, start=1):
                tokens = line.split()
                if tokens and _REF.match(tokens[0].lower()):
                    lines.setdefault(tokens[0].lower(), []).append([*tokens, f"{info}:{i}"])
                elif _looks_like_record(tokens):  # a damaged line must not vanish with its lesion
                    problems.append(Problem(f"{info}:{i}", f"unreadable Info line {line.strip()!r}; fix the line"))
                # else: the header line (REFNUM BG CLASS ...) or free text of the README
        # A film without a line would vanish silently: the table may be cut short (a truncated copy), or the file is
        # not a mini-MIAS film.
        for ref, path in sorted(images.items()):
            if _REF.match(ref) and ref not in lines:
                reason = f"has no line in the Info table {info}; restore the full table from the download"
                problems.append(Problem(str(path), reason))
        records = []
        for ref, entries in sorted(lines.items()):
            try:
                records.append(self._record(ref, entries, images))
            except DataError as e:
                problems.append(Problem(e.file, e.reason + (f"; {e.fix}" if e.fix else "")))
        return ScanResult(records, problems)

    @staticmethod
    def _record(ref: str, entries: list[list[str]], images: dict[str, Path]) -> SourceRecord:
        if ref not in images:
            raise DataError(f"{ref}.pgm", "listed in the Info table but missing", "restore the file from the download")
        path = images[ref]
        height = image_height(path)
        labels = [0, 0]
        lesions = []
        for *tokens, where in entries:
            note = is_note_reference(tokens[4:])
            if len(tokens) not in (3, 4, 7) and not note:
                raise DataError(
                    where,
                    f"expected 3, 4 or 7 fields (or a *NOTE n* reference instead of x y radius), got {len(tokens)}",
                    "fix the Info line",
                )
            cls_name = tokens[2].upper()
            if cls_name == "NORM":
                continue
            if cls_name not in CLASSES_ABNORMAL or len(tokens) < 4 or tokens[3].upper() not in SEVERITY:
                raise DataError(where, f"unknown label {' '.join(tokens[2:4])!r}", "severity must be B or M")
            cls = SEVERITY[tokens[3].upper()]
            labels[("benign", "malignant").index(cls)] = 1
            if len(tokens) == 4 or note:
                # No centre and radius (README: calcifications spread over the breast): labelled, not located.
                lesions.append(Lesion(cls, "none", name=cls_name))
                continue
            try:
                x, y, r = float(tokens[4]), float(tokens[5]), float(tokens[6])
            except ValueError:
                raise DataError(where, f"non-numeric centre/radius {tokens[4:7]}", "fix the Info line") from None
            if (
                not all(math.isfinite(v) for v in (x, y, r))
                or r <= 0
                or not (0 <= x <= NATIVE_SIZE and 0 <= y <= height)
            ):
                raise DataError(where, f"centre/radius {tokens[4:7]} outside the image", "fix the Info line")
            # Bottom-left origin: row counted from the top is height - y.
            lesions.append(Lesion(cls, "circle", circle=(x, height - y, r), name=cls_name))
        number = int(ref.removeprefix("mdb"))  # scan() keeps only references that match _REF (mdb + 3 digits)
        lat = "L" if number % 2 == 0 else "R"
        patient = f"mias-p{(number + 1) // 2:03d}"
        return SourceRecord(
            image_id=ref,
            patient_id=patient,
            exam_id=patient,
            laterality=lat,
            view="MLO",
            labels=(labels[0], labels[1]),
            image_file=path,
            lesions=lesions,
            chest_wall="left" if lat == "L" else "right",
            pixel_spacing_mm=PIXEL_SPACING_MM,
        )


# The fixture: a tiny synthetic download in the native layout, for tests and `wsseg data fixture`.

MIAS = 96  # mini-MIAS fixture side (the real one is 1024)


MIAS_PAIRS = 161  # mdb001 ... mdb322
# Lines of the real Info table that the fixture reproduces for the same ids: findings without a location, written
# with 4 tokens or with a reference to the README's note on calcifications spread over the breast instead of
# ``x y radius`` (both label-only: labelled, not located).
MIAS_UNLOCATED_LINES = {
    59: "mdb059 F CIRC B ",
    216: "mdb216 D CALC M *NOTE 3* ",
    233: "mdb233 G CALC M *NOTE 3* ",
    245: "mdb245 F CALC M *NOTE 3* ",
}
# mdb212: a small benign calcification circle that lies outside the detected breast, as in the real table.
MIAS_OUTSIDE_BREAST = 212
MIAS_OUTSIDE_RC = (8, 84)  # (row, col) of its centre in the fixture: air beside a left breast
# Pairs every fixture holds, whatever its size: mdb059 (4-token line), mdb212 (outside the breast), mdb233 (*NOTE 3*).
MIAS_SPECIAL_PAIRS = (30, 106, 117)


def mias_pairs(n_pairs: int) -> list[int]:
    """Pair numbers (patient ``mias-pNNN`` = images ``mdb{2N-1}``, ``mdb{2N}``) for a fixture of ``n_pairs``.

    Pair 1 (with the doubled Info line) always; then, when the committed ``benchmarks/splits/mini-mias.csv``
    exists, the first pairs of its test and validation splits, the pairs of :data:`MIAS_SPECIAL_PAIRS` (the real
    table's label-only and outside-breast lines) and the first pairs of its training split, so a small fixture
    read with the published split still has every split and every trap.
    """
    from wsseg.data.prepare import default_split_file, read_split_file

    path = default_split_file("mini-mias")
    if path is None or n_pairs >= MIAS_PAIRS:
        return list(range(1, min(n_pairs, MIAS_PAIRS) + 1))
    split = read_split_file(path)
    order = {s: sorted(int(p.removeprefix("mias-p")) for p, v in split.items() if v == s) for s in SPLITS}
    pairs = [1]
    for s in ("test", "val"):
        pairs.append(next(p for p in order[s] if p not in pairs))
    pairs += [p for p in MIAS_SPECIAL_PAIRS if p not in pairs]
    rest = [p for s in ("train", "test", "val") for p in order[s] if p not in pairs]
    return sorted((pairs + rest)[: max(n_pairs, 1)])


def mias_line(n: int, ph: Phantom) -> list[str]:
    """The Info lines of image ``mdb{n}`` in the fixture (y counted from the bottom, as in the real table)."""
    ref = f"mdb{n:03d}"
    if n in MIAS_UNLOCATED_LINES:
        return [MIAS_UNLOCATED_LINES[n]]
    if n == MIAS_OUTSIDE_BREAST:
        r, c = MIAS_OUTSIDE_RC
        return [f"{ref} G CALC B {c} {MIAS - r} 3 "]
    if n % 3 == 0:
        return [f"{ref} F NORM "]
    sev = "M" if n % 2 else "B"
    r, c = ph.center
    lines = [f"{ref} G CIRC {sev} {c} {MIAS - r} {ph.radius} "]
    if n == 1:
        lines.append(f"{ref} G CALC B")  # a finding without a location on an image with a located one
    return lines


def write_fixture(root: Path, n_pairs: int = 9, kaggle_header: bool = True) -> dict[str, Phantom]:
    """``mdbNNN.pgm`` + ``Info.txt`` with the traps of the real table.

    NORM lines, a doubled image (mdb001, whose second line has no location), bottom-left y, the real ids' findings
    without a location (:data:`MIAS_UNLOCATED_LINES`: 4 tokens, ``*NOTE 3*``) and mdb212's circle outside the
    breast. The pairs are the real ids' (:func:`mias_pairs`), so the committed split applies to the fixture as to
    the data; with ``n_pairs=161`` the fixture has the release's 322 images.
    """
    lines, truth = [], {}
    if kaggle_header:
        lines.append("REFNUM BG CLASS SEVERITY X Y RADIUS ")
    for n in (n for pair in mias_pairs(n_pairs) for n in (2 * pair - 1, 2 * pair)):
        ref = f"mdb{n:03d}"
        right = n % 2 == 1  # odd numbers are right breasts
        ph = phantom(right, lesion_rc=(40, 20), radius=6, h=MIAS, w=MIAS)
        truth[ref] = ph
        img = np.round(ph.image * 200 + 8).astype(np.uint8)  # film: a non-zero background
        (root / "pgm").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "pgm" / f"{ref}.pgm")
        lines += mias_line(n, ph)
    (root / "Info.txt").write_text("\n".join(lines) + "\n", encoding="latin-1")
    return truth
