"""Hostile downloads: symbolic links that lead out of the data root, and decompression bombs.

Links are real symbolic links (to files and to folders) made in ``tmp_path``. Bombs are small files built with
zlib and pydicom whose content inflates to gigabytes; each is read by ``read_image`` in a child process that reports
how far its resident memory rose above what it held before the read (Linux ``/proc/self/status``: VmRSS before,
VmHWM after), so the test asserts the memory bound itself, not only the error message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke
from click.testing import Result
from PIL import Image

from wsseg.data.fixtures import MANIFEST_HEADER, phantom, save_dicom, save_mask, save_png16, write_csv, write_mias

REPO = Path(__file__).resolve().parents[1]
linux = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="measures memory through /proc")


def assert_error(result: Result, *fragments: str) -> str:
    """Exit code 2 and one ``error:`` line holding every fragment; return the line."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    for text in fragments:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# Symbolic links out of the data root


def _outside_link(root: Path, kind: str, elsewhere: Path) -> Path:
    """Move part of a Mini-MIAS download out of ``root`` and leave a symbolic link to it; return the link."""
    elsewhere.mkdir()
    target = {"file": root / "pgm" / "mdb001.pgm", "folder": root / "pgm", "index": root / "Info.txt"}[kind]
    moved = elsewhere / target.name
    shutil.move(target, moved)
    target.symlink_to(moved, target_is_directory=moved.is_dir())
    return target


@pytest.mark.parametrize("kind", ["file", "folder", "index"])
def test_links_out_of_a_download_folder_are_refused_unless_allowed(kind: str, tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "mias"
    write_mias(root)
    link = _outside_link(root, kind, tmp_path / "elsewhere")
    check = ["data", "check", "mini-mias", "--root", str(root), "--workers", "1"]
    assert_error(invoke(check), str(link), str(tmp_path / "elsewhere"), "--allow-outside-root")
    prepare = ["data", "prepare", "mini-mias", "--root", str(root), "--profile", "tiny", "--workers", "1"]
    assert_error(invoke([*prepare, "--cache-dir", str(tmp_path / "cache")]), str(link), "--allow-outside-root")
    assert not list((tmp_path / "cache").rglob("*.npz"))  # nothing was read and cached
    run = ["run", "-m", "uniform", "--dataset", "mini-mias", "--data-root", str(root), "--profile", "tiny"]
    run += ["--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "-q"]
    assert_error(invoke(run), str(link), "--allow-outside-root")
    # The opt-in lets the check through; linked files are read as usual (the Mini-MIAS reader's search for *.pgm,
    # pathlib's rglob, does not enter a linked folder, so that case finds no images, as before the check existed).
    allowed = invoke([*check, "--allow-outside-root"])
    assert allowed.exit_code == 0 and "outside the data root" not in allowed.output, allowed.output
    if kind != "folder":
        assert "18 usable images" in allowed.output, allowed.output  # write_mias: 9 left/right pairs


def _manifest_with(dl: Path, image: str) -> None:
    """A two-image manifest: ``a`` at ``image`` (relative path), ``b`` an ordinary file."""
    rows = []
    for image_id, lat, path in (("a", "L", image), ("b", "R", "images/b.png")):
        ph = phantom(chest_wall_right=lat == "R")
        if not (dl / path).exists() and not (dl / path).is_symlink():
            save_png16(dl / path, ph.image)
        save_mask(dl / f"masks/{image_id}.png", ph.lesion)
        row = {"image": path, "image_id": image_id, "patient_id": f"P{image_id}", "laterality": lat, "view": "CC"}
        rows.append({**row, "benign": 1, "malignant": 0, "benign_mask": f"masks/{image_id}.png"})
    write_csv(dl / "manifest.csv", MANIFEST_HEADER, rows)


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_manifest_entry_through_a_link_out_of_its_folder_is_refused(kind: str, tmp_path: Path) -> None:
    dl, secret = tmp_path / "dl", tmp_path / "secret"
    save_png16(secret / "a.png", phantom(False).image)  # stands for /etc/passwd or another user's file
    (dl / "images").mkdir(parents=True)
    if kind == "file":
        (dl / "images" / "a.png").symlink_to(secret / "a.png")
        listed = "images/a.png"
    else:
        (dl / "linked").symlink_to(secret, target_is_directory=True)
        listed = "linked/a.png"
    _manifest_with(dl, listed)
    check = ["data", "check", "manifest", "--root", str(dl / "manifest.csv"), "--workers", "1"]
    line = assert_error(invoke(check), listed, str(secret / "a.png"), "--allow-outside-root")
    assert "outside the data root" in line
    assert invoke([*check, "--allow-outside-root"]).exit_code == 0


def test_links_that_stay_inside_the_root_are_followed(tmp_path: Path) -> None:
    dl = tmp_path / "dl"
    save_png16(dl / "store" / "a.png", phantom(False).image)
    (dl / "images").mkdir()
    (dl / "images" / "a.png").symlink_to(dl / "store" / "a.png")
    _manifest_with(dl, "images/a.png")
    result = invoke(["data", "check", "manifest", "--root", str(dl), "--workers", "1", "--strict"])
    assert result.exit_code == 0 and "2 usable images" in result.output, result.output


# ---------------------------------------------------------------------------------------------------------------
# Decompression bombs: refused before the memory is spent


def zeros_deflate(n: int, wrapper: str = "raw") -> bytes:
    """A deflate stream of ``n`` zero bytes, built in milliseconds: one compressed MiB repeated.

    Each MiB is compressed after a full flush, so its bytes do not depend on what came before and can be repeated.
    ``wrapper``: ``raw`` (DICOM's deflated transfer syntax) or ``zlib`` (PNG IDAT/zTXt, TIFF deflate: a header
    and the Adler-32 of the data).
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    mib = c.compress(bytes(2**20)) + c.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(n, 2**20)
    body = mib * count + c.compress(bytes(rest)) + c.flush()
    if wrapper == "raw":
        return body
    adler = 1
    for _ in range(count):
        adler = zlib.adler32(bytes(2**20), adler)
    adler = zlib.adler32(bytes(rest), adler)
    return b"\x78\xda" + body + adler.to_bytes(4, "big")


def deflated_dicom_bomb(path: Path, inflated: int) -> None:
    """A deflated DICOM (64x48 image) with a private OB element of ``inflated`` zero bytes: a tiny file that
    pydicom would inflate in one piece."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, generate_uid(), "MG"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 64, 48, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.add_new(0x00290010, "LO", "WSSEG TEST")  # the private creator of (0029,10xx)

    def explicit_le(d: Dataset) -> bytes:
        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, False
        write_dataset(buf, d)
        return buf.getvalue()

    tail = Dataset()
    tail.PixelData = bytes(64 * 48 * 2)
    tail["PixelData"].VR = "OW"
    # (0029,1010) OB, 2 reserved bytes, a 4-byte length, then the zeros; then the pixel data.
    element = b"\x29\x00\x10\x10OB\x00\x00" + inflated.to_bytes(4, "little")
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = c.compress(explicit_le(ds) + element) + c.flush(zlib.Z_FULL_FLUSH)
    mib = c.compress(bytes(2**20)) + c.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(inflated, 2**20)
    file_meta = DicomBytesIO()
    write_file_meta_info(file_meta, meta)
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM" + file_meta.getvalue() + head)
        for _ in range(count):
            f.write(mib)
        f.write(c.compress(bytes(rest)) + c.compress(explicit_le(tail)) + c.flush())


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def png_bomb(path: Path, rows: int, cols: int, text_bytes: int = 0) -> None:
    """A 16-bit greyscale PNG of zeros (rows x cols) whose IDAT is a few hundred kB, optionally with a zTXt chunk
    that inflates to ``text_bytes``."""
    ihdr = rows.to_bytes(4, "big")
    ihdr = cols.to_bytes(4, "big") + ihdr + bytes([16, 0, 0, 0, 0])
    chunks = [_png_chunk(b"IHDR", ihdr)]
    if text_bytes:
        chunks.append(_png_chunk(b"zTXt", b"Comment\x00\x00" + zeros_deflate(text_bytes, "zlib")))
    chunks.append(_png_chunk(b"IDAT", zeros_deflate(rows * (1 + 2 * cols), "zlib")))  # filter byte 0 per row
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + _png_chunk(b"IEND", b""))


def tiff_bomb(path: Path, rows: int, cols: int) -> None:
    """A little-endian 16-bit greyscale TIFF of zeros in one deflate-compressed strip."""
    strip = zeros_deflate(rows * cols * 2, "zlib")
    # (tag, type, value): SHORT = 3, LONG = 4; the strip follows the IFD.
    entries = [(256, 4, cols), (257, 4, rows), (258, 3, 16), (259, 3, 8), (262, 3, 1), (273, 4, 0)]
    entries += [(277, 3, 1), (278, 4, rows), (279, 4, len(strip))]
    data_offset = 8 + 2 + 12 * len(entries) + 4
    ifd = len(entries).to_bytes(2, "little")
    for tag, kind, value in entries:
        value = data_offset if tag == 273 else value
        ifd += tag.to_bytes(2, "little") + kind.to_bytes(2, "little") + (1).to_bytes(4, "little")
        ifd += value.to_bytes(2 if kind == 3 else 4, "little").ljust(4, b"\0")
    path.write_bytes(b"II*\x00" + (8).to_bytes(4, "little") + ifd + bytes(4) + strip)


def read_in_child(paths: list[Path]) -> dict[str, tuple[str, float]]:
    """``read_image`` of each path in one fresh process: per file name, its message and how far the memory rose
    during the read, in MiB (peak resident set after, minus resident set before; the peak is reset before each
    read through ``/proc/self/clear_refs``)."""
    code = textwrap.dedent(
        """
        import sys
        from wsseg.data.imageio import read_image
        from wsseg.data.sources import DataError

        def kib(field):
            for line in open("/proc/self/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1])

        for path in sys.argv[1:]:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident set
            before = kib("VmRSS")
            try:
                read_image(path)
                message = "read without error"
            except DataError as e:
                message = str(e)
            print(message.replace(chr(10), " "))
            print((kib("VmHWM") - before) / 1024)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    return {p.name: (lines[2 * i], float(lines[2 * i + 1])) for i, p in enumerate(paths)}


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, float]]:
    """Every bomb below, built once and read in one child process (one import of torch on a busy machine)."""
    folder = tmp_path_factory.mktemp("bombs")
    deflated_dicom_bomb(folder / "bomb.dcm", 1_500_000_000)  # 1.5 GB of element, about 1.5 MB of file
    assert (folder / "bomb.dcm").stat().st_size < 2_000_000
    save_dicom(folder / "huge.dcm", phantom(False).image)
    with open(folder / "huge.dcm", "r+b") as f:
        f.truncate(300 * 2**20)  # sparse: 300 MiB of pixel data on paper, nothing on disk
    # 12000 x 12000 16-bit zeros: 288 MB of pixels in a file of about 300 kB (144 Mpx, above the 100 Mpx bound).
    png_bomb(folder / "bomb.png", 12_000, 12_000)
    tiff_bomb(folder / "bomb.tiff", 12_000, 12_000)
    png_bomb(folder / "text.png", 64, 48, text_bytes=2**30)
    assert all(p.stat().st_blocks * 512 < 2_000_000 for p in folder.iterdir())
    return read_in_child(sorted(folder.iterdir()))


@linux
def test_a_deflated_dicom_that_inflates_to_gigabytes_is_refused_without_inflating_it(
    bombs: dict[str, tuple[str, float]], tmp_path: Path
) -> None:
    from wsseg.data.imageio import read_image

    message, rise = bombs["bomb.dcm"]
    assert "decompression bomb" in message and "bomb.dcm" in message and "WSSEG_MAX_PIXELS" in message, message
    assert rise < 64, f"reading a 1.5 MB file raised the memory by {rise:.0f} MiB"
    # The same construction, small, is an ordinary deflated DICOM: read as usual (no false alarm).
    deflated_dicom_bomb(tmp_path / "ok.dcm", 1000)
    assert read_image(tmp_path / "ok.dcm").shape == (64, 48)


@linux
def test_a_dicom_larger_than_one_image_may_take_is_refused_before_it_is_read(
    bombs: dict[str, tuple[str, float]],
) -> None:
    message, rise = bombs["huge.dcm"]
    assert "more than the" in message and "huge.dcm" in message, message
    assert rise < 64, f"{rise:.0f} MiB"


def test_a_dicom_whose_pixels_would_decode_to_too_many_bytes_is_refused(tmp_path: Path) -> None:
    import pydicom

    from wsseg.data.imageio import read_image
    from wsseg.data.sources import DataError

    path = tmp_path / "colour.dcm"
    save_dicom(path, phantom(False).image)
    ds = pydicom.dcmread(path)
    # 40 Mpx is under the pixel bound, but 3 samples of 2 bytes make 240 MB to decode: over the byte bound.
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 8000, 5000, 3, "RGB"
    ds.PlanarConfiguration = 0
    ds.save_as(path)
    with pytest.raises(DataError, match="claims a 8000x5000 image of 6 bytes a pixel"):
        read_image(path)


@linux
@pytest.mark.parametrize("name", ["bomb.png", "bomb.tiff"])
def test_an_image_whose_pixels_inflate_past_the_bound_is_refused_before_decoding(
    name: str, bombs: dict[str, tuple[str, float]]
) -> None:
    message, rise = bombs[name]
    assert "claims a 12000x12000 image" in message and "refused before decoding" in message, message
    assert rise < 64, f"{rise:.0f} MiB"


@linux
def test_a_png_text_chunk_that_inflates_to_a_gigabyte_is_refused(bombs: dict[str, tuple[str, float]]) -> None:
    message, rise = bombs["text.png"]
    assert "text.png" in message and "cannot decode" in message, message
    assert rise < 64, f"{rise:.0f} MiB"


def test_the_bombs_are_valid_files_when_small(tmp_path: Path) -> None:
    """The builders make real files (so the refusals above are the bounds, not parse errors)."""
    png_bomb(tmp_path / "a.png", 64, 48, text_bytes=100)
    tiff_bomb(tmp_path / "a.tiff", 64, 48)
    for name in ("a.png", "a.tiff"):
        with Image.open(tmp_path / name) as im:
            assert im.size == (48, 64) and not np.asarray(im).any()
