"""Decoding of the image formats the public datasets ship: DICOM (pydicom), 16-bit PNG, PGM and other PIL formats.

Every reader returns a float32 (H, W) array with MONOCHROME2 semantics (more attenuation = brighter) and
raises :class:`~wsseg.data.sources.DataError` naming the file and the fix, never a library traceback.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from wsseg.data.sources import DataError, not_regular

DICOM_SUFFIXES = (".dcm", ".dicom")
# PIL refuses images above ~179 Mpx by default; full-field mammograms are ~15-25 Mpx, so keep the guard.
Image.MAX_IMAGE_PIXELS = 400_000_000
# Larger headers are refused before any pixel is decoded: a corrupt or hostile header must not allocate gigabytes.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


def check_header_size(path: Path, rows: int, cols: int, frames: int = 1) -> None:
    """Refuse an image whose header claims no pixels or more than :data:`MAX_PIXELS`, before decoding it.

    Raises:
        DataError: naming the claimed size.
    """
    if rows <= 0 or cols <= 0:
        raise DataError(path, f"the header claims a {rows}x{cols} image", "the file is corrupt; download it again")
    if rows * cols * max(frames, 1) > MAX_PIXELS:
        raise DataError(
            path,
            f"the header claims a {rows}x{cols} image{f' x {frames} frames' if frames > 1 else ''}, more than "
            f"{MAX_PIXELS:,} pixels; refused before decoding",
            "the file is corrupt or not a mammogram",
        )


def read_image(
    path: str | Path, voi_lut: bool = False, skip_for_processing: bool = False, binary_ok: bool = False
) -> np.ndarray:
    """Decode a greyscale image to float32 (H, W).

    DICOM (datasets.md 11.1): the modality LUT (rescale slope/intercept) is applied; by default the raw linear
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
                check_header_size(path, im.height, im.width)  # only the first frame is decoded
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
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut  # type: ignore[attr-defined]

    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # pydicom raises many types (InvalidDicomError, EOFError, struct.error...) for bad files
        raise DataError(path, f"not a readable DICOM file ({type(e).__name__}: {e})", "download it again") from None
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
    except (TypeError, ValueError) as e:
        raise DataError(path, f"unreadable image size in the header ({e})", "download it again") from None
    check_header_size(path, rows, cols, frames)
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
    if getattr(ds, "ModalityLUTSequence", None):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)  # type: ignore[attr-defined]
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


# Transfer syntaxes whose decoders are not wsseg dependencies (datasets.md 14): JPEG baseline/extended/lossless
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
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # spacing is optional metadata; the image read reports unreadable files
        return None
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        if key in ds:
            return float(ds[key].value[0])
    return None
