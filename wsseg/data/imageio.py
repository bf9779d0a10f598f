"""Decoding of the image formats the public datasets ship: DICOM (pydicom), 16-bit PNG, PGM and other PIL formats.

Every reader returns a float32 (H, W) array with MONOCHROME2 semantics (more attenuation = brighter) and
raises :class:`~wsseg.data.sources.DataError` naming the file and the fix, never a library traceback.
"""

from __future__ import annotations

import os
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from wsseg.data.sources import DataError, not_regular

DICOM_SUFFIXES = (".dcm", ".dicom")
# PIL refuses images above ~179 Mpx by default; raised so that wsseg's own smaller bound below gives the message.
Image.MAX_IMAGE_PIXELS = 400_000_000
# Larger headers are refused before any pixel is decoded: a corrupt or hostile header must not allocate gigabytes.
# Full-field digital mammograms have 5-30 Mpx and digitised film (42-50 um, e.g. DDSM) a few tens of Mpx.
# 100 Mpx bounds one file's decoded pixels to 200 MB at 16 bits (the float pipeline then holds a few such copies).
MAX_PIXELS = int(os.environ.get("WSSEG_MAX_PIXELS", "100000000"))
# Bytes one image file may hold or inflate to: its pixels at 16 bits plus 64 MiB of header (overlays, private tags).
MAX_FILE_BYTES = 2 * MAX_PIXELS + 64 * 2**20
RAISE_LIMIT = "if the file is genuine, raise the bound: WSSEG_MAX_PIXELS=<pixels> (default 100000000)"
# Text chunks (tEXt/zTXt/iTXt) and ICC profiles are metadata wsseg never reads: a compressed one may inflate to 1 MB,
# all of them together to 4 MB (Pillow refuses more, so a PNG text bomb is an unreadable file, not gigabytes).
PngImagePlugin.MAX_TEXT_CHUNK = 2**20
PngImagePlugin.MAX_TEXT_MEMORY = 4 * 2**20
# Deflated Explicit VR Little Endian: everything after the file meta is one zlib stream.
DEFLATED = "1.2.840.10008.1.2.1.99"
# Bytes per pixel of PIL's image modes (anything else: 4).
_MODE_BYTES = {
    "1": 1,
    "L": 1,
    "P": 1,
    "LA": 2,
    "PA": 2,
    "I;16": 2,
    "I;16B": 2,
    "I;16L": 2,
    "RGB": 3,
    "YCbCr": 3,
}


def check_header_size(path: Path, rows: int, cols: int, frames: int = 1, bytes_per_pixel: int = 2) -> None:
    """Refuse an image whose header claims no pixels or more than :data:`MAX_PIXELS`, before decoding it.

    ``bytes_per_pixel`` (samples x bytes per sample) bounds the decoded bytes as well: at most ``2 x MAX_PIXELS``.

    Raises:
        DataError: naming the claimed size and how to raise the bound.
    """
    if rows <= 0 or cols <= 0:
        raise DataError(path, f"the header claims a {rows}x{cols} image", "the file is corrupt; download it again")
    pixels = rows * cols * max(frames, 1)
    if pixels > MAX_PIXELS or pixels * bytes_per_pixel > 2 * MAX_PIXELS:
        raise DataError(
            path,
            f"the header claims a {rows}x{cols} image{f' x {frames} frames' if frames > 1 else ''}"
            f"{f' of {bytes_per_pixel} bytes a pixel' if bytes_per_pixel > 2 else ''}, more than {MAX_PIXELS:,} "
            "pixels (or twice that in bytes); refused before decoding",
            f"the file is corrupt or not a mammogram; {RAISE_LIMIT}",
        )


def _inflated_size(data: bytes, offset: int, limit: int) -> int:
    """The size of the raw deflate stream ``data[offset:]`` once inflated, counted in 1 MiB pieces up to ``limit``.

    Memory stays at about 1 MiB however far the stream inflates; the count stops as soon as it passes ``limit``.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    view = memoryview(data)[offset:]
    for start in range(0, len(view), 2**16):
        piece: bytes = bytes(view[start : start + 2**16])
        while piece:
            total += len(inflater.decompress(piece, 2**20))
            if total > limit:
                return total
            piece = inflater.unconsumed_tail
    return total


def _meta_end(data: bytes) -> int:
    """Where the file meta group ends: where pydicom starts reading the dataset (for a deflated file, inflating).

    The group (0002,xxxx) follows the 128-byte preamble and ``DICM`` and is explicit VR little endian.
    """
    pos = 132
    while pos + 8 <= len(data) and data[pos : pos + 2] == b"\x02\x00":
        if data[pos + 4 : pos + 6] in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "little")  # 2 reserved bytes, a 4-byte length
        else:
            pos += 8 + int.from_bytes(data[pos + 6 : pos + 8], "little")
    return pos


def open_dicom(path: Path, stop_before_pixels: bool = False) -> Any:
    """``pydicom.dcmread`` with the memory of one file bounded, for headers and pixels alike.

    The file is read whole (at most :data:`MAX_FILE_BYTES`) and parsed from memory, so an element whose length
    field claims gigabytes reads only the bytes the file has. A deflated dataset (the transfer syntax that zips
    everything after the file meta) is first inflated in pieces and counted, and refused when it would exceed the
    same bound: pydicom itself inflates it in one piece.

    Raises:
        DataError: too large a file or inflated dataset, or not a readable DICOM file.
    """
    import pydicom
    from pydicom.filebase import DicomBytesIO

    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DataError(
                path,
                f"the file holds {size:,} bytes, more than the {MAX_FILE_BYTES:,} one image may take",
                f"the file is not a single mammogram; {RAISE_LIMIT}",
            )
        data = path.read_bytes()
        if data[128:132] == b"DICM":
            meta = pydicom.filereader.read_file_meta_info(path)  # group 0002 only
            if str(meta.get("TransferSyntaxUID", "")) == DEFLATED:
                inflated = _inflated_size(data, _meta_end(data), MAX_FILE_BYTES)
                if inflated > MAX_FILE_BYTES:
                    raise DataError(
                        path,
                        f"the deflated dataset inflates to more than {MAX_FILE_BYTES:,} bytes (a {size:,}-byte file: "
                        "a decompression bomb); refused before inflating it",
                        f"the file is corrupt or hostile; {RAISE_LIMIT}",
                    )
        return pydicom.dcmread(DicomBytesIO(data), stop_before_pixels=stop_before_pixels)
    except DataError:
        raise
    except MemoryError:
        raise DataError(path, "decoding the file needs more memory than is free", "the file is corrupt") from None
    except Exception as e:  # pydicom raises many types (InvalidDicomError, EOFError, struct.error...) for bad files
        raise DataError(path, f"not a readable DICOM file ({type(e).__name__}: {e})", "download it again") from None


def read_image(
    path: str | Path, voi_lut: bool = False, skip_for_processing: bool = False, binary_ok: bool = False
) -> np.ndarray:
    """Decode a greyscale image to float32 (H, W).

    DICOM (docs/datasets.md, "DICOM"): the modality LUT (rescale slope/intercept) is applied; by default the raw linear
    values are kept (the model input), and with ``voi_lut`` the header's VOI LUT or window is applied by pydicom
    (LINEAR, LINEAR_EXACT, SIGMOID; the first of multi-valued centres/widths; a no-op without one).
    MONOCHROME1 is inverted within the output range (``2**BitsStored - 1``, or the VOI output range), and Pixel
    Padding Value (Range Limit) pixels are set to the image minimum. With ``skip_for_processing`` an image whose
    Presentation Intent Type is ``FOR PROCESSING`` (raw detector data) is refused, as VinDr's tools skip it.
    PNG/PGM/TIFF/JPEG: the stored values, 16-bit kept intact; a 1-bit image only with ``binary_ok`` (masks).

    Raises:
        DataError: missing, truncated or undecodable file; a header claiming no pixels or more than
            :data:`MAX_PIXELS` (refused before decoding); a 1-bit image (unless ``binary_ok``); NaN or infinite
            values; a compressed DICOM without its decoder; a refused FOR PROCESSING image.
    """
    path = Path(path)
    kind = not_regular(path)
    if kind is not None:  # never opened: reading a FIFO would block forever
        raise DataError(path, f"the file is {kind}", "replace it with the file from the download")
    if not path.is_file():
        raise DataError(path, "file is missing", "check the --root folder is the dataset as downloaded")
    if path.suffix.lower() in DICOM_SUFFIXES:
        arr = _read_dicom(path, voi_lut, skip_for_processing)
    else:
        arr = _read_pil(path, binary_ok)
    if not np.isfinite(arr).all():
        raise DataError(path, "the image holds NaN or infinite values", "re-export it as an integer image")
    return arr


def read_mask(path: str | Path) -> np.ndarray:
    """A binary mask image (any format ``read_image`` reads, 1-bit included) as bool (H, W): nonzero is lesion."""
    return read_image(path, binary_ok=True) > 0


def _read_pil(path: Path, binary_ok: bool) -> np.ndarray:
    fix = "the file is truncated or corrupt; download it again"
    try:
        # Between MAX_IMAGE_PIXELS and twice that PIL only warns; check_header_size refuses those sizes itself.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                # Only the first frame is decoded, into a buffer of the header's size: this bounds its memory.
                check_header_size(path, im.height, im.width, 1, _MODE_BYTES.get(im.mode, 4))
                if im.mode == "1" and not binary_ok:
                    raise DataError(path, "a 1-bit (black and white) image", "a mammogram needs 8 to 16 bits a pixel")
                im.load()
                # Some mirrors ship greyscale as 3 identical channels.
                arr = np.asarray(im.convert("L") if im.mode in ("RGB", "RGBA", "P", "LA") else im)
    except Image.DecompressionBombError as e:  # above twice MAX_IMAGE_PIXELS: PIL refuses before reading pixels
        raise DataError(path, f"the header claims too many pixels, refused before decoding ({e})", fix) from None
    except (
        OSError,
        ValueError,
        SyntaxError,
    ) as e:  # PIL raises OSError for truncated files, SyntaxError for bad headers
        if isinstance(e, DataError):
            raise
        raise DataError(path, f"cannot decode the image ({e})", fix) from None
    if arr.ndim != 2:
        raise DataError(path, f"expected a greyscale image, got shape {arr.shape}", "convert it to one channel")
    return arr.astype(np.float32)


def _read_dicom(path: Path, voi_lut: bool = False, skip_for_processing: bool = False) -> np.ndarray:
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut  # pydicom.pixels re-exports them

    ds = open_dicom(path)
    if skip_for_processing and str(ds.get("PresentationIntentType", "")).strip().upper().endswith("PROCESSING"):
        raise DataError(
            path,
            "a FOR PROCESSING image (raw detector data, not the annotated presentation image); skipped",
            "nothing to fix: the dataset's tools skip these too",
        )
    if "PixelData" not in ds:
        raise DataError(path, "the DICOM file holds no pixel data", "point the dataset at the image series")
    try:
        rows, cols, frames = int(ds.get("Rows", 0)), int(ds.get("Columns", 0)), int(ds.get("NumberOfFrames", 1) or 1)
        # What the decoder will allocate: samples x bytes per sample for every pixel of every frame.
        per_pixel = max(int(ds.get("SamplesPerPixel", 1) or 1), 1) * max(-(-int(ds.get("BitsAllocated", 16)) // 8), 1)
    except (TypeError, ValueError) as e:
        raise DataError(path, f"unreadable image size in the header ({e})", "download it again") from None
    check_header_size(path, rows, cols, frames, per_pixel)
    try:
        arr = ds.pixel_array
    except (RuntimeError, NotImplementedError) as e:
        syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown"))
        detail = " ".join(str(e).split())  # pydicom's message spans lines; a report line must not
        raise DataError(path, f"no decoder for transfer syntax {syntax} ({detail})", decoder_hint(syntax)) from None
    except Exception as e:  # truncated pixel data raises ValueError or others depending on the syntax
        raise DataError(path, f"cannot decode the pixel data ({type(e).__name__}: {e})", "download it again") from None
    if arr.ndim != 2:
        raise DataError(path, f"expected one greyscale frame, got shape {arr.shape}", "use single-frame images")
    padding = _padding_mask(arr, ds)
    lo, hi = 0.0, float(2 ** int(ds.get("BitsStored", 16)) - 1)
    has_voi = "VOILUTSequence" in ds or "WindowCenter" in ds
    if voi_lut and has_voi:
        try:
            out = apply_voi_lut(apply_modality_lut(arr, ds), ds, index=0).astype(np.float32)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise DataError(
                path, f"unusable VOI LUT / window in the header ({type(e).__name__}: {e})", "prepare without --voi-lut"
            ) from None
        lo, hi = voi_output_range(ds)
    else:
        out = apply_modality_lut(arr, ds).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        out = np.float32(lo + hi) - out
    if padding is not None and padding.any() and not padding.all():
        # Padding marks pixels outside the detector's field; as background they must not join the breast region.
        out[padding] = out[~padding].min()
    return out


def voi_output_range(ds: object) -> tuple[float, float]:
    """The output range of pydicom's ``apply_voi_lut`` for this header (DICOM PS3.3 C.11.2), to invert within.

    A VOI LUT Sequence maps to ``[0, 2**n - 1]`` with ``n`` its descriptor's bit depth; a window maps to the
    stored range (signed or not) through the rescale, as pydicom's ``apply_windowing`` does.
    """
    seq = getattr(ds, "VOILUTSequence", None)
    if seq:
        return 0.0, float(2 ** int(seq[0].LUTDescriptor[2]) - 1)
    bits = int(getattr(ds, "BitsStored", 16))
    modality_seq = getattr(ds, "ModalityLUTSequence", None)
    if modality_seq:
        lo, hi = 0.0, float(2 ** int(modality_seq[0].LUTDescriptor[2]) - 1)
    elif int(getattr(ds, "PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = getattr(ds, "RescaleSlope", None), getattr(ds, "RescaleIntercept", None)
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return lo, hi


def _padding_mask(stored: np.ndarray, ds: object) -> np.ndarray | None:
    """Pixels flagged by Pixel Padding Value (and Range Limit), compared on stored values as the standard says."""
    value = getattr(ds, "PixelPaddingValue", None)
    if value is None:
        return None
    limit = getattr(ds, "PixelPaddingRangeLimit", None)
    if limit is None:
        return np.asarray(stored == int(value))
    lo, hi = sorted((int(value), int(limit)))
    return np.asarray((stored >= lo) & (stored <= hi))


# Transfer syntaxes whose decoders are not wsseg dependencies (docs/datasets.md): JPEG baseline/extended/lossless
# and JPEG-LS need pylibjpeg-libjpeg (GPLv3, so an opt-in) or python-gdcm.
_OPT_IN_SYNTAXES = (
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
)


def decoder_hint(syntax: str) -> str:
    """The install command that brings a decoder for ``syntax``."""
    if syntax in _OPT_IN_SYNTAXES:
        return "install a decoder: pip install python-gdcm (or pylibjpeg-libjpeg, GPLv3)"
    return "install the DICOM codecs: pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-rle"


def dicom_pixel_spacing(path: str | Path) -> float | None:
    """The row pixel spacing in mm from PixelSpacing or ImagerPixelSpacing, without decoding pixels."""
    try:
        ds = open_dicom(Path(path), stop_before_pixels=True)
    except DataError:  # spacing is optional metadata; the image read reports unreadable files
        return None
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        if key in ds:
            return float(ds[key].value[0])
    return None
