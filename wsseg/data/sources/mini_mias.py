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

from PIL import Image

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
