"""The built-in phantom: seeded synthetic mammograms with exact lesion masks.

docs/datasets.md, "The phantom", says what it models. Everything physical is specified in millimetres and converted
with ``PhantomConfig.pixel_spacing_mm``, so the quick (0.4 mm), paper (0.1 mm) and tiny (1.6 mm) profiles show the
same anatomy at different resolutions. Image formation happens in the log-attenuation domain
(``P = sum(mu * path length)``), then a fixed display curve maps ``P`` to 12-bit MONOCHROME2 (denser = brighter).

Randomness is split into independent streams: one for everything described in millimetres (labels, geometry,
density, lesions), one for the texture noise and one for the quantum noise. The millimetre stream never draws a
number whose count depends on the pixel grid, so the same seed gives the same scene at every pixel spacing.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from wsseg.core import CLASSES, PROFILE_GEOMETRY, Geometry

PHANTOM_VERSION: str = "1.0"

_VIEWS = ("CC", "MLO")
_LATERALITIES = ("L", "R")
_DENSITIES = ("A", "B", "C", "D")
Range = tuple[float, float]
# The pectoral muscle of a _Geometry: ("tri", w_top, h, bow) for MLO, ("ell", depth, half-height, centre row) for CC,
# () for none (all in mm).
Pectoral = tuple[Literal["tri", "ell"], float, float, float] | tuple[()]


@dataclass(frozen=True)
class PhantomConfig:
    """Every knob of the phantom. Ranges ``(lo, hi)`` are sampled uniformly per image unless noted."""

    height: int = 736  # pixels (rows)
    width: int = 480  # pixels (columns)
    pixel_spacing_mm: float = 0.4  # mm per pixel, isotropic
    # Label mix.
    p_normal: float = 0.5  # probability an image is lesion-free
    p_benign: float = 0.25  # probability the (first) lesion is benign
    p_malignant: float = 0.25  # probability the (first) lesion is malignant
    p_second_lesion: float = 0.1  # probability a lesion image gets a second lesion of either class
    p_calcification: float = 0.4  # probability a lesion is a calcification cluster rather than a mass
    # Breast geometry (13.1).
    thickness_mean_mm: float = 55.0  # mm, compressed thickness mean
    thickness_sd_mm: float = 15.0  # mm, compressed thickness sd
    thickness_clip_mm: Range = (30.0, 90.0)  # mm, compressed thickness clip
    cc_half_height_mm: Range = (55.0, 110.0)  # mm, CC half-height along the chest wall
    cc_half_scale: Range = (0.85, 1.15)  # 1, independent scale of the upper and lower CC halves
    cc_center_row_frac: Range = (0.45, 0.55)  # fraction of image height, CC outline centre row
    nipple_depth_mm: Range = (60.0, 150.0)  # mm, nipple distance from the chest wall
    nipple_depth_max_mm: float = 175.0  # mm, hard cap on the nipple depth
    cc_exponent: Range = (2.0, 2.6)  # 1, CC superellipse exponent
    cc_pectoral_prob: float = 0.3  # probability of a pectoral sliver in a CC view
    cc_pectoral_depth_mm: Range = (5.0, 20.0)  # mm, CC pectoral sliver depth
    cc_pectoral_height_mm: Range = (30.0, 80.0)  # mm, CC pectoral sliver height
    mlo_tail_frac: Range = (0.15, 0.35)  # fraction of nipple depth, axillary tail width at row 0
    mlo_nipple_row_frac: Range = (0.45, 0.65)  # fraction of image height, MLO nipple row
    mlo_fold_row_frac: Range = (0.75, 0.95)  # fraction of image height, MLO inframammary fold row
    mlo_upper_exponent: Range = (1.6, 2.4)  # 1, shape of the MLO upper contour (2 = parabola)
    mlo_lower_exponent: Range = (2.0, 2.6)  # 1, MLO lower superellipse exponent
    pectoral_top_width_mm: Range = (25.0, 70.0)  # mm, MLO pectoral width at row 0
    pectoral_height_mm: Range = (100.0, 220.0)  # mm, MLO pectoral height along the chest wall
    pectoral_bow_mm: Range = (0.0, 8.0)  # mm, outward bow of the pectoral free edge
    pectoral_gland: Range = (1.0, 1.1)  # gland units, pectoral attenuation
    pectoral_texture_amp: float = 0.3  # 1, pectoral texture amplitude relative to the breast texture
    skin_thickness_mm: Range = (0.9, 2.3)  # mm, skin band thickness
    # Texture (13.2).
    texture_beta: Range = (2.6, 3.4)  # 1, power-law exponent of the anatomical noise
    texture_f_lo: float = 0.02  # cycles/mm, spectrum flattened below this frequency
    texture_f_mtf: float = 2.5  # cycles/mm, Gaussian roll-off of the texture spectrum
    texture_stretch: Range = (1.5, 3.0)  # 1, texture elongation along the nipple-chest wall axis
    texture_fine_amp: float = 0.06  # 1, relative modulation of g by a fine (beta=2) texture: strands in dense tissue
    gland_sigmoid_s: float = 0.7  # sd units, softness of the field -> glandular fraction sigmoid
    gland_max: Range = (0.3, 0.55)  # 1, projected glandular fraction of dense tissue (never full-thickness)
    envelope_center_frac: Range = (0.4, 0.6)  # fraction of nipple depth, centre of the retro-areolar envelope
    envelope_sd_frac: float = 0.35  # fraction of nipple depth, sd of the retro-areolar envelope
    envelope_weight: float = 1.2  # sd units, strength of the retro-areolar prior
    subcutaneous_fat_mm: float = 8.0  # mm, e-folding depth of the subcutaneous fat layer
    subcutaneous_weight: float = 2.0  # sd units, how strongly the skin-side fat suppresses gland
    density_probs: tuple[float, float, float, float] = (0.1, 0.4, 0.4, 0.1)  # BI-RADS A/B/C/D frequencies
    density_dense_frac: tuple[Range, Range, Range, Range] = (
        (0.05, 0.25),
        (0.25, 0.50),
        (0.50, 0.75),
        (0.75, 0.95),
    )  # fraction of the breast area that is dense, per BI-RADS class
    # Image formation (13.3).
    mu_fat: float = 0.456  # 1/cm, adipose at about 20 keV
    mu_gland: float = 0.802  # 1/cm, fibroglandular at about 20 keV
    mu_calc: float = 20.0  # 1/cm, calcification (calcium oxalate/hydroxyapatite order of magnitude)
    detector_blur_mm: Range = (0.05, 0.08)  # mm, Gaussian sigma of the detector MTF
    quantum_noise_sd: Range = (0.005, 0.02)  # log units per 0.1 mm pixel; scales as 1/spacing (pixel binning)
    display_gamma: float = 3.0  # 1, display curve exponent (like a film gamma): fat mid-dark, dense near white
    display_white: float = 1.3  # x the full-thickness dense-tissue attenuation, mapped to 4095
    # Masses (13.4).
    mass_density_factor: float = 2.0  # 1, mass attenuation = factor x glandular (M-SYNTH: 1.0-1.1; raised, see below)
    mass_diameter_mm: Range = (5.0, 30.0)  # mm, circumscribed mass diameter, log-uniform
    spiculated_core_mm: Range = (5.0, 20.0)  # mm, malignant mass core diameter, log-uniform
    mass_axis_ratio: Range = (0.6, 1.0)  # 1, minor/major axis ratio
    mass_depth_ratio: Range = (0.8, 1.2)  # 1, along-beam depth / diameter
    mass_edge_blur_mm: float = 0.5  # mm, Gaussian softening of the mass intensity edge (mask stays hard)
    p_lobulated: float = 0.4  # probability a benign mass is lobulated rather than circumscribed
    p_irregular: float = 0.3  # probability a malignant mass is irregular (no spicules) rather than spiculated
    spicule_spacing_mm: Range = (2.0, 4.0)  # mm of core perimeter per spicule
    spicule_count: tuple[int, int] = (8, 30)  # spicules per mass, clip
    spicule_length_radii: Range = (1.0, 3.0)  # core radii
    spicule_base_width_mm: Range = (0.5, 1.5)  # mm
    spicule_turn_deg_per_mm: float = 5.0  # degrees per mm, max heading random walk
    spicule_branch_prob: float = 0.25  # probability a spicule has one branch
    spicule_contrast: Range = (0.2, 0.5)  # fraction of the core peak thickness
    halo_sd_mm: Range = (1.0, 2.0)  # mm, ill-defined halo around malignant masses
    halo_amp: Range = (0.1, 0.2)  # fraction of the core thickness
    # Microcalcification clusters (13.5).
    calc_count: tuple[int, int] = (5, 30)  # calcifications per cluster
    cluster_extent_mm: Range = (3.0, 15.0)  # mm, cluster extent
    calc_size_benign_mm: Range = (0.3, 1.0)  # mm, round/punctate diameter
    calc_size_malignant_mm: Range = (0.1, 0.4)  # mm, pleomorphic/fine-linear width
    calc_aspect_malignant: Range = (1.0, 4.0)  # 1, length/width of malignant calcifications
    calc_thickness_mm: Range = (0.15, 0.4)  # mm, along-beam thickness
    calc_min_gap_mm: float = 0.2  # mm, minimum distance between calcification centres
    cluster_dilation_mm: float = 1.0  # mm, cluster region = convex hull dilated by this
    # Placement and rasterisation.
    lesion_margin_mm: float = 5.0  # mm, clearance from skin line and pectoral muscle
    min_lesion_px: int = 3  # pixels, every lesion mask is at least this many pixels across

    @classmethod
    def for_geometry(cls, geometry: Geometry) -> PhantomConfig:
        """The default generator drawing at ``geometry``'s size and pixel spacing (a profile's grid)."""
        return cls(height=geometry.height, width=geometry.width, pixel_spacing_mm=geometry.pixel_spacing_mm)

    @classmethod
    def quick(cls) -> PhantomConfig:
        """736 x 480 at 0.4 mm: the CPU profile."""
        return cls.for_geometry(PROFILE_GEOMETRY["quick"])

    @classmethod
    def paper(cls) -> PhantomConfig:
        """2944 x 1920 at 0.1 mm: the published-architecture profile."""
        return cls.for_geometry(PROFILE_GEOMETRY["paper"])

    @classmethod
    def tiny(cls) -> PhantomConfig:
        """184 x 120 at 1.6 mm: unit-test fixtures (masks are kept >= ``min_lesion_px`` across)."""
        return cls.for_geometry(PROFILE_GEOMETRY["tiny"])


@dataclass
class PhantomImage:
    """One generated image in the canonical frame (chest wall at column 0)."""

    image: np.ndarray  # uint16 (H, W), 0..4095, MONOCHROME2, background 0
    masks: np.ndarray  # bool (2, H, W): [benign, malignant]
    breast_mask: np.ndarray  # bool (H, W), skin and pectoral muscle included
    labels: np.ndarray  # float32 (2,), labels[k] == masks[k].any()
    meta: dict[str, Any]  # JSON-serialisable description


# --------------------------------------------------------------------------------------------------------------------
# Random streams


def _streams(seed: int, split: str, index: int, view: str, laterality: str) -> tuple[np.random.Generator, ...]:
    """Three independent generators (scene in mm, texture noise, quantum noise) keyed by the image identity.

    ``zlib.crc32`` maps the split name to an int stably across processes (``hash()`` is salted per process).
    """
    key = [
        int(seed) & 0xFFFFFFFF,
        zlib.crc32(split.encode()),
        int(index),
        _VIEWS.index(view),
        _LATERALITIES.index(laterality),
    ]
    return tuple(np.random.default_rng(np.random.SeedSequence([*key, stream])) for stream in range(3))


def _u(rng: np.random.Generator, r: Range) -> float:
    """One uniform draw from a ``(lo, hi)`` range."""
    return float(rng.uniform(r[0], r[1]))


def _log_u(rng: np.random.Generator, r: Range) -> float:
    """One log-uniform draw from a ``(lo, hi)`` range (lesion sizes are spread over a decade)."""
    return float(math.exp(rng.uniform(math.log(r[0]), math.log(r[1]))))


# --------------------------------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class _Geometry:
    """Breast outline and pectoral muscle, all in mm in the canonical frame (rows down, columns from the chest wall)."""

    view: str
    height_mm: float
    width_mm: float
    thickness_mm: float
    skin_mm: float
    depth_mm: float  # nipple depth b
    nipple_row_mm: float
    # CC: centre row, upper/lower half-heights, exponent. MLO: tail width, fold row, upper/lower exponents.
    shape: tuple[float, ...]
    pectoral: Pectoral

    def edge_col(self, rows: np.ndarray) -> np.ndarray:
        """Column (mm) of the breast outline for each row (mm); 0 where the row has no breast."""
        if self.view == "CC":
            r0, a_up, a_lo, n = self.shape
            a = np.where(rows < r0, a_up, a_lo)
            x = np.clip(np.abs(rows - r0) / a, 0.0, 1.0)
            return self.depth_mm * (1.0 - x**n) ** (1.0 / n)
        tail, fold, p_up, n_lo = self.shape
        rn, b = self.nipple_row_mm, self.depth_mm
        # Upper contour: finite slope at the top edge (a diagonal axillary line), flat at the nipple row.
        u = np.clip(rows / rn, 0.0, 1.0)
        upper = tail + (b - tail) * (1.0 - (1.0 - u) ** p_up)
        x = np.clip((rows - rn) / (fold - rn), 0.0, 1.0)
        lower = b * (1.0 - x**n_lo) ** (1.0 / n_lo)
        return np.where(rows < rn, upper, lower)

    def pectoral_depth(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Signed distance-like depth (mm) into the pectoral muscle along the columns; > 0 inside."""
        if not self.pectoral:
            return np.full(np.broadcast(rows, cols).shape, -1e3, dtype=np.float32)
        if self.pectoral[0] == "tri":
            _, w_top, h, bow = self.pectoral
            x = np.clip(rows / h, 0.0, 1.0)
            edge = np.where(rows < h, w_top * (1.0 - x) + bow * np.sin(np.pi * x), -1e3)
            depth_mm: np.ndarray = edge - cols
            return depth_mm.astype(np.float32)
        _, depth, half, rc = self.pectoral
        x = np.clip(np.abs(rows - rc) / half, 0.0, 1.0)
        edge = np.where(np.abs(rows - rc) < half, depth * np.sqrt(1.0 - x**2), -1e3)
        depth_mm = edge - cols
        return depth_mm.astype(np.float32)


def _sample_geometry(cfg: PhantomConfig, rng: np.random.Generator, view: str) -> _Geometry:
    """Draw the outline, thickness, skin and pectoral parameters (13.1), all in mm."""
    h_mm, w_mm = cfg.height * cfg.pixel_spacing_mm, cfg.width * cfg.pixel_spacing_mm
    t = float(np.clip(rng.normal(cfg.thickness_mean_mm, cfg.thickness_sd_mm), *cfg.thickness_clip_mm))
    skin = _u(rng, cfg.skin_thickness_mm)
    # Keep the nipple clear of the far edge so the whole outline is in the image.
    b = min(_u(rng, cfg.nipple_depth_mm), cfg.nipple_depth_max_mm, 0.92 * w_mm)
    if view == "CC":
        r0 = _u(rng, cfg.cc_center_row_frac) * h_mm
        a = _u(rng, cfg.cc_half_height_mm)
        a_up = min(a * _u(rng, cfg.cc_half_scale), 0.97 * r0)
        a_lo = min(a * _u(rng, cfg.cc_half_scale), 0.97 * (h_mm - r0))
        n = _u(rng, cfg.cc_exponent)
        pect: Pectoral = ()
        if rng.random() < cfg.cc_pectoral_prob:
            depth, height = _u(rng, cfg.cc_pectoral_depth_mm), _u(rng, cfg.cc_pectoral_height_mm)
            pect = ("ell", depth, 0.5 * min(height, a_up + a_lo), r0 + rng.uniform(-0.2, 0.2) * a)
        return _Geometry(view, h_mm, w_mm, t, skin, b, r0, (r0, a_up, a_lo, n), pect)
    rn = _u(rng, cfg.mlo_nipple_row_frac) * h_mm
    fold = _u(rng, cfg.mlo_fold_row_frac) * h_mm
    bow = _u(rng, cfg.pectoral_bow_mm)
    # The pectoral must sit inside the axillary tail, and end above the fold.
    w_top = min(_u(rng, cfg.pectoral_top_width_mm), 0.4 * b)
    h_pec = min(_u(rng, cfg.pectoral_height_mm), fold - 20.0)
    tail = min(max(_u(rng, cfg.mlo_tail_frac) * b, w_top + bow + rng.uniform(5.0, 20.0)), 0.65 * b)
    shape = (tail, fold, _u(rng, cfg.mlo_upper_exponent), _u(rng, cfg.mlo_lower_exponent))
    return _Geometry(view, h_mm, w_mm, t, skin, b, rn, shape, ("tri", w_top, h_pec, bow))


def _grid_mm(n: int, spacing: float) -> np.ndarray:
    """Pixel-centre coordinates in mm."""
    return ((np.arange(n, dtype=np.float64) + 0.5) * spacing).astype(np.float32)


def _outline_distance(geom: _Geometry, shape: tuple[int, int], spacing: float, reach_mm: float) -> np.ndarray:
    """Distance (mm) from each pixel to the breast outline; 0 outside the breast.

    The chest wall (column 0) and, for MLO, the top edge are not outline: the breast continues beyond the image there,
    so the mask is padded by replication before the Euclidean distance transform.
    """
    rows, cols = _grid_mm(shape[0], spacing), _grid_mm(shape[1], spacing)
    mask = cols[None, :] < geom.edge_col(rows)[:, None]
    pad = int(math.ceil(reach_mm / spacing)) + 1
    pad_top = pad if geom.view == "MLO" else 0
    padded = np.pad(mask, ((pad_top, 0), (pad, 0)), mode="edge")
    d = ndi.distance_transform_edt(padded)[pad_top:, pad:].astype(np.float32)
    # The EDT measures to the nearest outside pixel centre; the outline lies half a pixel before it.
    return np.where(mask, np.maximum(d - 0.5, 0.05) * spacing, 0.0).astype(np.float32)


def _fine_distance(geom: _Geometry, cfg: PhantomConfig, reach_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Breast mask and outline distance at full resolution.

    The distance transform is the costliest step at 0.1 mm, and the distance is smooth, so below 0.2 mm it is computed
    on a coarser grid and linearly upsampled. The mask itself is evaluated analytically at full resolution.
    """
    h, w, s = cfg.height, cfg.width, cfg.pixel_spacing_mm
    rows, cols = _grid_mm(h, s), _grid_mm(w, s)
    mask = cols[None, :] < geom.edge_col(rows)[:, None]
    f = max(1, int(round(0.2 / s)))
    if f == 1:
        d = _outline_distance(geom, (h, w), s, reach_mm)
    else:
        coarse = _outline_distance(geom, (-(-h // f), -(-w // f)), s * f, reach_mm)
        d = ndi.zoom(coarse, f, order=1, grid_mode=True, mode="nearest")[:h, :w]
    d = np.where(mask, np.maximum(d, 0.05 * s), 0.0).astype(np.float32)
    return mask, d


# --------------------------------------------------------------------------------------------------------------------
# Texture and glandular fraction


def _power_law_field(
    rng: np.random.Generator, shape: tuple[int, int], spacing: float, beta: float, cfg: PhantomConfig, stretch: float
) -> np.ndarray:
    """Zero-mean 1/f^beta noise (power spectrum), elongated ``stretch``x along the rows' perpendicular (columns).

    Ducts and Cooper's ligaments run roughly from the nipple to the chest wall, i.e. along the columns of the
    canonical frame; compressing the spectrum along that axis elongates the texture there.
    """
    noise = rng.standard_normal(shape, dtype=np.float32)
    spec = sfft.rfft2(noise)
    fy = np.abs(sfft.fftfreq(shape[0], d=spacing)).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(shape[1], d=spacing).astype(np.float32)[None, :]
    f = np.sqrt((fx * stretch) ** 2 + fy**2)
    amp = np.maximum(f, cfg.texture_f_lo) ** (-beta / 2.0) * np.exp(-((f / cfg.texture_f_mtf) ** 2))
    spec *= amp.astype(np.float32)
    field: np.ndarray = sfft.irfft2(spec, s=shape)
    return field.astype(np.float32)


def _glandular_fraction(
    cfg: PhantomConfig,
    rng_mm: np.random.Generator,
    rng_tex: np.random.Generator,
    geom: _Geometry,
    dist: np.ndarray,
    breast: np.ndarray,
    dense_frac: float,
    g_max: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Glandular fraction g in [0, 1] per pixel (13.2) and the standardised raw field (for the pectoral texture)."""
    s = cfg.pixel_spacing_mm
    shape = (cfg.height, cfg.width)
    beta, stretch = _u(rng_mm, cfg.texture_beta), _u(rng_mm, cfg.texture_stretch)
    centre = _u(rng_mm, cfg.envelope_center_frac) * geom.depth_mm
    field = _power_law_field(rng_tex, shape, s, beta, cfg, stretch)
    # A flatter (beta ~ 2) component adds the fine strands that survive inside dense tissue.
    fine = _power_law_field(rng_tex, shape, s, 2.0, cfg, stretch)
    sample = breast[::2, ::2]  # statistics on a subsample: same answer, a quarter of the cost
    field = (field - field[::2, ::2][sample].mean()) / (field[::2, ::2][sample].std() + 1e-6)
    fine = (fine - fine[::2, ::2][sample].mean()) / (fine[::2, ::2][sample].std() + 1e-6)
    rows, cols = _grid_mm(shape[0], s)[:, None], _grid_mm(shape[1], s)[None, :]
    sd = cfg.envelope_sd_frac * geom.depth_mm
    env = np.exp(-((cols - centre) ** 2 + (rows - geom.nipple_row_mm) ** 2) / (2.0 * sd * sd))
    # Gland sits retro-areolar and away from the subcutaneous fat under the skin.
    prior = cfg.envelope_weight * (2.0 * env - 1.0) - cfg.subcutaneous_weight * np.exp(-dist / cfg.subcutaneous_fat_mm)
    z = field + prior
    tau = float(np.quantile(z[::2, ::2][sample], 1.0 - dense_frac))
    g = g_max / (1.0 + np.exp(-(z - tau) / cfg.gland_sigmoid_s))
    # Fine texture modulates dense tissue only: fat lobules do not show strands.
    g = np.clip(g * (1.0 + cfg.texture_fine_amp * fine), 0.0, 1.0)
    return g.astype(np.float32), field


# --------------------------------------------------------------------------------------------------------------------
# Lesions


@dataclass
class _Lesion:
    """A lesion drawn in mm; rasterised later for a given pixel spacing."""

    cls: int  # 0 benign, 1 malignant
    kind: str  # "mass" | "calcification"
    shape: str
    diameter_mm: float
    radius_mm: float  # clearance radius used for placement
    params: dict[str, Any]
    center_mm: tuple[float, float] = (0.0, 0.0)  # (row, col)


def _harmonics(rng: np.random.Generator, kmax: int, amax: float, total: float) -> list[tuple[int, float, float]]:
    """Random boundary harmonics ``(k, a_k, phi_k)``; the sum of a_k is capped so the radius stays positive."""
    ks = list(range(2, kmax + 1))
    amps = rng.uniform(0.0, amax, len(ks))
    if amps.sum() > total:
        amps *= total / amps.sum()
    phases = rng.uniform(0.0, 2.0 * np.pi, len(ks))
    return [(k, float(a), float(p)) for k, a, p in zip(ks, amps, phases, strict=True)]


def _draw_mass(cfg: PhantomConfig, rng: np.random.Generator, cls: int) -> _Lesion:
    """Draw a mass (13.4): circumscribed/lobulated when benign, spiculated/irregular when malignant."""
    if cls == 0:
        shape = "lobulated" if rng.random() < cfg.p_lobulated else "circumscribed"
        d = _log_u(rng, cfg.mass_diameter_mm)
        harm = _harmonics(rng, 10, 0.10, 0.35) if shape == "lobulated" else _harmonics(rng, 6, 0.04, 0.2)
    else:
        shape = "irregular" if rng.random() < cfg.p_irregular else "spiculated"
        d = _log_u(rng, cfg.spiculated_core_mm)
        harm = _harmonics(rng, 10, 0.20, 0.5) if shape == "irregular" else _harmonics(rng, 8, 0.15, 0.45)
    r0 = d / 2.0
    params: dict[str, Any] = {
        "ratio": _u(rng, cfg.mass_axis_ratio),
        "rot": float(rng.uniform(0.0, np.pi)),
        "harm": harm,
        "depth": d * _u(rng, cfg.mass_depth_ratio),
        "spicules": [],
        "halo": (0.0, 1.0),
    }
    reach = r0 * (1.0 + sum(a for _, a, _ in harm))
    if cls == 1:
        params["halo"] = (_u(rng, cfg.halo_amp), _u(rng, cfg.halo_sd_mm))
    if shape == "spiculated":
        params["spicules"], params["spicule_contrast"] = _draw_spicules(cfg, rng, r0), _u(rng, cfg.spicule_contrast)
    # Spicules may cross tissue boundaries, but the core and halo must be clear of skin and pectoral.
    return _Lesion(cls, "mass", shape, d, reach + (2.0 * params["halo"][1] if cls == 1 else 0.0), params)


def _random_walk(
    rng: np.random.Generator, start: np.ndarray, heading: float, length: float, max_turn_deg_per_mm: float
) -> np.ndarray:
    """A gently curving path of ``length`` mm from ``start``, as points every 0.25 mm (row, col)."""
    step = 0.25
    n = max(2, int(math.ceil(length / step)) + 1)
    turn = np.radians(max_turn_deg_per_mm) * step
    headings = heading + np.cumsum(rng.uniform(-turn, turn, n - 1))
    steps = np.stack([np.sin(headings), np.cos(headings)], axis=1) * step
    return np.vstack([start[None, :], start[None, :] + np.cumsum(steps, axis=0)])


def _draw_spicules(cfg: PhantomConfig, rng: np.random.Generator, r0: float) -> list[tuple[np.ndarray, float, float]]:
    """Spicule paths in mm relative to the mass centre, each with base and tip width (mm)."""
    n = int(np.clip(round(2.0 * np.pi * r0 / _u(rng, cfg.spicule_spacing_mm)), *cfg.spicule_count))
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False) + rng.uniform(0.0, 2.0 * np.pi)
    angles += rng.uniform(-0.4, 0.4, n) * (2.0 * np.pi / n)
    out: list[tuple[np.ndarray, float, float]] = []
    for theta in angles:
        start = 0.8 * r0 * np.array([np.sin(theta), np.cos(theta)])
        length = _u(rng, cfg.spicule_length_radii) * r0
        base, tip = _u(rng, cfg.spicule_base_width_mm), float(rng.uniform(0.1, 0.2))
        path = _random_walk(rng, start, float(theta + rng.uniform(-0.2, 0.2)), length, cfg.spicule_turn_deg_per_mm)
        out.append((path, base, tip))
        if rng.random() < cfg.spicule_branch_prob:
            # A branch leaves part-way along and carries the parent's local width down to the tip.
            at = int(rng.integers(len(path) // 4, max(len(path) // 4 + 1, 3 * len(path) // 4)))
            frac = at / (len(path) - 1)
            side = float(rng.choice([-1.0, 1.0])) * rng.uniform(0.3, 0.8)
            branch = _random_walk(rng, path[at], float(theta + side), 0.5 * (1 - frac) * length + 1.0, 5.0)
            out.append((branch, base + (tip - base) * frac, tip))
    return out


def _draw_cluster(cfg: PhantomConfig, rng: np.random.Generator, cls: int) -> _Lesion:
    """Draw a microcalcification cluster (13.5): round/punctate (benign) or pleomorphic/fine-linear (malignant)."""
    extent = _u(rng, cfg.cluster_extent_mm)
    count = int(rng.integers(cfg.calc_count[0], cfg.calc_count[1] + 1))
    if cls == 0:
        shape = "round" if rng.random() < 0.5 else "punctate"
        sizes = cfg.calc_size_benign_mm if shape == "round" else (cfg.calc_size_benign_mm[0], 0.6)
        sd = extent / 4.0
        # (row, col) points in mm: a list of (2,) arrays here, an (N, 2) array from _duct_points.
        centres: list[np.ndarray] | np.ndarray = [
            p for p in rng.normal(0.0, sd, (4 * count, 2)) if np.hypot(*p) <= extent / 2.0
        ]
    else:
        shape = "fine-linear" if rng.random() < 0.5 else "pleomorphic"
        sizes = cfg.calc_size_malignant_mm
        centres = _duct_points(rng, extent, 4 * count, jitter=0.2 if shape == "fine-linear" else 0.6)
    if len(centres) == 0:
        centres = [np.zeros(2)]
    calcs: list[tuple[float, float, float, float, float, float]] = []  # row, col, width, length, angle, thickness
    for p in centres:
        if len(calcs) == count:
            break
        if any(math.hypot(p[0] - c[0], p[1] - c[1]) < cfg.calc_min_gap_mm + 0.5 * c[2] for c in calcs):
            continue
        w = _u(rng, sizes)
        aspect = 1.0 if cls == 0 else _u(rng, cfg.calc_aspect_malignant)
        if shape == "fine-linear":
            aspect = max(aspect, 2.0)
        calcs.append(
            (float(p[0]), float(p[1]), w, w * aspect, float(rng.uniform(0, np.pi)), _u(rng, cfg.calc_thickness_mm))
        )
    params = {"calcs": calcs}
    return _Lesion(cls, "calcification", shape, extent, extent / 2.0 + cfg.cluster_dilation_mm + 1.0, params)


def _duct_points(rng: np.random.Generator, extent: float, n: int, jitter: float) -> np.ndarray:
    """Candidate calcification centres along a branching duct segment of about ``extent`` mm, centred at 0."""
    heading = float(rng.uniform(0.0, 2.0 * np.pi))
    start = -0.5 * extent * np.array([np.sin(heading), np.cos(heading)])
    trunk = _random_walk(rng, start, heading, extent, 15.0)
    at = trunk[len(trunk) // 3 + int(rng.integers(0, max(1, len(trunk) // 3)))]
    branch = _random_walk(rng, at, heading + float(rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 0.9)), 0.5 * extent, 15.0)
    path = np.vstack([trunk, branch])
    pts = path[rng.integers(0, len(path), n)] + rng.normal(0.0, jitter, (n, 2))
    # Keep the cluster inside its nominal extent.
    return pts[np.hypot(pts[:, 0], pts[:, 1]) <= 0.5 * extent + jitter]


def _placement_maps(geom: _Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance to the outline and to the pectoral muscle on a fixed 1 mm grid, independent of the pixel spacing.

    Placement decisions are made on this grid so that the same seed puts lesions at the same mm position at any
    resolution.
    """
    shape = (int(geom.height_mm), int(geom.width_mm))
    d_out = _outline_distance(geom, shape, 1.0, 40.0)
    rows, cols = _grid_mm(shape[0], 1.0), _grid_mm(shape[1], 1.0)
    pect = geom.pectoral_depth(rows[:, None], cols[None, :]) > 0
    d_pec = ndi.distance_transform_edt(~pect).astype(np.float32) if pect.any() else np.full(shape, 1e3, np.float32)
    return d_out, d_pec, pect


def _place(
    rng: np.random.Generator,
    lesion: _Lesion,
    maps: tuple[np.ndarray, np.ndarray, np.ndarray],
    geom: _Geometry,
    cfg: PhantomConfig,
    taken: list[_Lesion],
) -> bool:
    """Choose a centre (mm) clear of skin, pectoral muscle and earlier lesions; False when no room is left."""
    d_out, d_pec, _ = maps
    need = lesion.radius_mm + cfg.lesion_margin_mm
    ok = (d_out >= need + geom.skin_mm) & (d_pec >= need)
    # The chest wall and the MLO top edge are not outline, but a lesion must still lie wholly inside the image.
    rows_mm, cols_mm = np.arange(ok.shape[0]) + 0.5, np.arange(ok.shape[1]) + 0.5
    ok &= (cols_mm[None, :] >= need) & (rows_mm[:, None] >= need) & (rows_mm[:, None] <= geom.height_mm - need)
    rr, cc = np.nonzero(ok)
    keep = np.ones(rr.shape, dtype=bool)
    for other in taken:
        gap = np.hypot(rr + 0.5 - other.center_mm[0], cc + 0.5 - other.center_mm[1])
        keep &= gap >= need + other.radius_mm
    rr, cc = rr[keep], cc[keep]
    if rr.size == 0:
        if taken:
            return False
        # A lesion image must have its lesion: fall back to the most interior spot.
        score = np.minimum(d_out - geom.skin_mm, d_pec)
        r_best, c_best = np.unravel_index(np.argmax(score), score.shape)
        rr, cc = np.atleast_1d(r_best), np.atleast_1d(c_best)
    i = int(rng.integers(0, rr.size))
    lesion.center_mm = (float(rr[i] + rng.uniform(0.0, 1.0)), float(cc[i] + rng.uniform(0.0, 1.0)))
    return True


def _window(
    center_mm: tuple[float, float], half_mm: float, cfg: PhantomConfig
) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Pixel window around a lesion and its pixel-centre offsets (mm) from the lesion centre."""
    s = cfg.pixel_spacing_mm
    r0 = max(0, int(math.floor((center_mm[0] - half_mm) / s)))
    r1 = min(cfg.height, int(math.ceil((center_mm[0] + half_mm) / s)) + 1)
    c0 = max(0, int(math.floor((center_mm[1] - half_mm) / s)))
    c1 = min(cfg.width, int(math.ceil((center_mm[1] + half_mm) / s)) + 1)
    dr = ((np.arange(r0, r1) + 0.5) * s - center_mm[0]).astype(np.float32)[:, None]
    dc = ((np.arange(c0, c1) + 0.5) * s - center_mm[1]).astype(np.float32)[None, :]
    return slice(r0, r1), slice(c0, c1), dr, dc


def _min_disk(mask: np.ndarray, dr: np.ndarray, dc: np.ndarray, cfg: PhantomConfig) -> np.ndarray:
    """Guarantee the mask is at least ``min_lesion_px`` across (at coarse spacings a 5 mm lesion is ~3 px)."""
    rad = 0.5 * cfg.min_lesion_px * cfg.pixel_spacing_mm
    grown: np.ndarray = mask | (dr**2 + dc**2 <= rad * rad)
    return grown


def _render_mass(les: _Lesion, cfg: PhantomConfig, thick: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:
    """Add the mass's along-beam thickness (mm) into ``thick``; return its window and hard core mask."""
    p, s = les.params, cfg.pixel_spacing_mm
    r0 = les.diameter_mm / 2.0
    spic_reach = max((float(np.abs(path).max()) for path, _, _ in p["spicules"]), default=0.0)
    half = max(les.radius_mm, spic_reach) + 4.0 * p["halo"][1] + 2.0
    rs, cs, dr, dc = _window(les.center_mm, half, cfg)
    cos_r, sin_r = math.cos(p["rot"]), math.sin(p["rot"])
    u = dc * cos_r + dr * sin_r
    v = (-dc * sin_r + dr * cos_r) / p["ratio"]
    theta = np.arctan2(v, u)
    radius = np.full(theta.shape, r0, dtype=np.float32)
    for k, a, phi in p["harm"]:
        radius *= 1.0 + a * np.cos(k * theta + phi)
    rho = np.hypot(u, v) / radius
    core = rho < 1.0
    lz = p["depth"] * np.sqrt(np.clip(1.0 - rho**2, 0.0, None))
    sig = cfg.mass_edge_blur_mm / s
    if sig >= 0.3:
        lz = ndi.gaussian_filter(lz, sig)
    amp, halo_sd = p["halo"]
    if amp > 0:
        lz = lz + amp * ndi.gaussian_filter(lz, halo_sd / s)
    if p["spicules"]:
        lz = lz + _render_spicules(p["spicules"], p["spicule_contrast"] * p["depth"], lz.shape, dr, dc, s)
    thick[rs, cs] += lz.astype(np.float32)
    return (rs, cs), _min_disk(core, dr, dc, cfg)


def _render_spicules(
    spicules: list[tuple[np.ndarray, float, float]],
    peak: float,
    shape: tuple[int, ...],
    dr: np.ndarray,
    dc: np.ndarray,
    s: float,
) -> np.ndarray:
    """Spicules as tapered lines: deposit width-weighted points every half pixel, then blur to the base width."""
    layer = np.zeros(shape, dtype=np.float32)
    o_r, o_c = float(dr[0, 0]), float(dc[0, 0])  # mm offset of pixel (0, 0) from the lesion centre
    widths = []
    for path, base, tip in spicules:
        seg = np.hypot(*np.diff(path, axis=0).T)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        n = max(2, int(arc[-1] / (0.5 * s)) + 1)
        at = np.linspace(0.0, arc[-1], n)
        pr, pc = np.interp(at, arc, path[:, 0]), np.interp(at, arc, path[:, 1])
        w = base + (tip - base) * at / max(arc[-1], 1e-6)
        ir, ic = np.rint((pr - o_r) / s).astype(int), np.rint((pc - o_c) / s).astype(int)
        ok = (ir >= 0) & (ir < shape[0]) & (ic >= 0) & (ic < shape[1])
        # Weight per unit length ~ width / base: a line of constant weight blurs to a constant peak.
        np.add.at(layer, (ir[ok], ic[ok]), (w[ok] / base) * (0.5 * s) / s)
        widths.append(base)
    sigma = max(0.5, 0.4 * float(np.mean(widths)) / s)
    blurred: np.ndarray = ndi.gaussian_filter(layer, sigma)
    return blurred * (peak * math.sqrt(2.0 * math.pi) * sigma)


def _render_cluster(les: _Lesion, cfg: PhantomConfig, calc_thick: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:
    """Add calcification thickness (mm, partial-volume averaged) into ``calc_thick``; return the region mask."""
    s = cfg.pixel_spacing_mm
    calcs = les.params["calcs"]
    half = les.diameter_mm / 2.0 + cfg.cluster_dilation_mm + 2.0 * s + 1.0
    rs, cs, dr, dc = _window(les.center_mm, half, cfg)
    local = np.zeros((dr.shape[0], dc.shape[1]), dtype=np.float32)
    for calc in calcs:
        _splat_calc(local, calc, float(dr[0, 0]), float(dc[0, 0]), s)
    calc_thick[rs, cs] += local
    centres = np.array([(c[0], c[1]) for c in calcs], dtype=np.float64)
    reach = cfg.cluster_dilation_mm + 0.5 * float(np.mean([c[2] for c in calcs]))
    region = _hull_region(centres, dr, dc, max(reach, 0.5 * cfg.min_lesion_px * s))
    return (rs, cs), region


def _splat_calc(local: np.ndarray, calc: tuple[float, ...], o_r: float, o_c: float, s: float) -> None:
    """Supersample one ellipsoidal calcification over the pixels it touches (partial volume), adding mm of thickness.

    At 0.4 mm a 0.2 mm calcification covers a quarter of a pixel; averaging sub-pixel samples keeps its total
    attenuation right, so it still shows as a faint speck instead of vanishing or becoming a full bright pixel.
    """
    cr, cc, width, length, angle, tz = calc
    ss = int(np.clip(math.ceil(4.0 * s / width), 2, 16))
    half = 0.5 * max(width, length) + s
    r0, r1 = int(math.floor((cr - half - o_r) / s)), int(math.ceil((cr + half - o_r) / s)) + 1
    c0, c1 = int(math.floor((cc - half - o_c) / s)), int(math.ceil((cc + half - o_c) / s)) + 1
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, local.shape[0]), min(c1, local.shape[1])
    if r1 <= r0 or c1 <= c0:
        return
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    yr = o_r + (np.arange(r0, r1)[:, None] + sub[None, :]).reshape(-1) * s - cr
    xc = o_c + (np.arange(c0, c1)[:, None] + sub[None, :]).reshape(-1) * s - cc
    y, x = yr[:, None], xc[None, :]
    ca, sa = math.cos(angle), math.sin(angle)
    u = (x * ca + y * sa) / (0.5 * length)
    v = (-x * sa + y * ca) / (0.5 * width)
    prof = tz * np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, None))
    local[r0:r1, c0:c1] += prof.reshape(r1 - r0, ss, c1 - c0, ss).mean(axis=(1, 3)).astype(np.float32)


def _hull_region(points: np.ndarray, dr: np.ndarray, dc: np.ndarray, reach: float) -> np.ndarray:
    """Pixels within ``reach`` mm of the convex hull of ``points`` (row, col mm): the CBIS-style cluster outline."""
    try:
        hull = ConvexHull(points)
        verts = points[hull.vertices]
        inside = np.ones((dr.shape[0], dc.shape[1]), dtype=bool)
        for nr, nc, off in hull.equations:
            inside &= nr * dr + nc * dc + off <= 0
        loop = np.vstack([verts, verts[:1]])
    except (QhullError, ValueError):
        # Fewer than three non-collinear points: the hull is a segment (or point); its dilation is a capsule.
        order = np.argsort(points @ (points[-1] - points[0] + 1e-9))
        loop = points[order]
        inside = np.zeros((dr.shape[0], dc.shape[1]), dtype=bool)
    near = np.zeros_like(inside)
    for a, b in zip(loop[:-1], loop[1:], strict=True) if len(loop) > 1 else [(loop[0], loop[0])]:
        ab = b - a
        t = np.clip(((dr - a[0]) * ab[0] + (dc - a[1]) * ab[1]) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        near |= (dr - a[0] - t * ab[0]) ** 2 + (dc - a[1] - t * ab[1]) ** 2 <= reach * reach
    return inside | near


def _draw_lesions(
    cfg: PhantomConfig, rng: np.random.Generator, geom: _Geometry
) -> tuple[list[_Lesion], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Label mix (13.6) and lesion parameters and positions, all from the mm stream."""
    maps = _placement_maps(geom)
    u = rng.random()
    if u < cfg.p_normal:
        return [], maps
    classes = [0 if u < cfg.p_normal + cfg.p_benign else 1]
    if rng.random() < cfg.p_second_lesion:
        classes.append(int(rng.integers(0, 2)))
    out: list[_Lesion] = []
    for cls in classes:
        les = _draw_cluster(cfg, rng, cls) if rng.random() < cfg.p_calcification else _draw_mass(cfg, rng, cls)
        if _place(rng, les, maps, geom, cfg, out):
            out.append(les)
    return out, maps


# --------------------------------------------------------------------------------------------------------------------
# Image formation


def _skin_path(dist: np.ndarray, thickness: float, skin: float) -> tuple[np.ndarray, np.ndarray]:
    """Total and skin path lengths (mm) through a compressed breast with a semicircular edge of radius T/2.

    The skin is a shell of constant thickness; near the outline the beam runs tangentially through it, which is what
    makes the skin a thin bright line in projection.
    """
    rad = 0.5 * thickness
    x = np.minimum(dist, rad)
    total = 2.0 * np.sqrt(np.clip(rad * rad - (rad - x) ** 2, 0.0, None))
    inner_r = rad - skin
    inner = 2.0 * np.sqrt(np.clip(inner_r * inner_r - (rad - x) ** 2, 0.0, None)) * (x > skin)
    return total.astype(np.float32), (total - inner).astype(np.float32)


def _box(mask: np.ndarray, x_off: int, y_off: int) -> list[float]:
    """``[x0, y0, x1, y1]`` in image pixels of a window mask at offset (x_off, y_off), half-open on the max side."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0] + x_off), float(rows[0] + y_off), float(cols[-1] + 1 + x_off), float(rows[-1] + 1 + y_off)]


def generate_image(cfg: PhantomConfig, seed: int, split: str, index: int, view: str, laterality: str) -> PhantomImage:
    """Generate one phantom mammogram.

    Args:
        cfg: Phantom configuration (size, spacing and all physical parameters).
        seed: Global seed.
        split: Split name (any string; mapped to an int with CRC-32).
        index: Image index within the split.
        view: ``"CC"`` or ``"MLO"``.
        laterality: ``"L"`` or ``"R"``; only recorded in ``meta`` (the image is always in the canonical frame).

    Returns:
        The image, its lesion masks, breast mask, labels and metadata. Deterministic in all arguments: the same inputs
        give the same bytes in any process.
    """
    if view not in _VIEWS or laterality not in _LATERALITIES:
        raise ValueError(
            f"view must be one of {_VIEWS} and laterality one of {_LATERALITIES}, got {view!r}, {laterality!r}"
        )
    rng, rng_tex, rng_noise = _streams(seed, split, index, view, laterality)
    s = cfg.pixel_spacing_mm
    geom = _sample_geometry(cfg, rng, view)
    density = _DENSITIES[int(rng.choice(4, p=np.asarray(cfg.density_probs) / sum(cfg.density_probs)))]
    dense_frac = _u(rng, cfg.density_dense_frac[_DENSITIES.index(density)])
    lesions, _ = _draw_lesions(cfg, rng, geom)
    pect_gland = _u(rng, cfg.pectoral_gland)
    blur_mm, noise_sd = _u(rng, cfg.detector_blur_mm), _u(rng, cfg.quantum_noise_sd)

    breast, dist = _fine_distance(geom, cfg, 0.5 * geom.thickness_mm + 5.0)
    g_max = _u(rng, cfg.gland_max)
    g, field = _glandular_fraction(cfg, rng, rng_tex, geom, dist, breast, dense_frac, g_max)
    rows, cols = _grid_mm(cfg.height, s)[:, None], _grid_mm(cfg.width, s)[None, :]
    # Soft pectoral edge so the boundary is not aliased at coarse spacings; the CC sliver is a thin, tapering muscle
    # edge, so it fades in over a few mm instead of having the MLO's sharp fascia line.
    edge_mm = max(0.5, s) if view == "MLO" else max(4.0, s)
    pec_w = np.clip(geom.pectoral_depth(rows, cols) / edge_mm + 0.5, 0.0, 1.0) * breast
    g = g * (1.0 - pec_w) + pec_w * g_max * (pect_gland + 0.5 * cfg.pectoral_texture_amp * field)

    masks = np.zeros((2, cfg.height, cfg.width), dtype=bool)
    mass_t = np.zeros((cfg.height, cfg.width), dtype=np.float32)
    calc_t = np.zeros((cfg.height, cfg.width), dtype=np.float32)
    records = []
    for les in lesions:
        win, m = _render_mass(les, cfg, mass_t) if les.kind == "mass" else _render_cluster(les, cfg, calc_t)
        m = m & breast[win]
        masks[les.cls][win] |= m
        records.append(
            {
                "class": CLASSES[les.cls],
                "type": les.kind,
                "shape": les.shape,
                "diameter_mm": round(float(les.diameter_mm), 6),
                "center_xy_mm": [round(les.center_mm[1], 6), round(les.center_mm[0], 6)],
                "box_xyxy": _box(m, win[1].start, win[0].start),
            }
        )

    total, skin_path = _skin_path(dist, geom.thickness_mm, geom.skin_mm)
    tissue = np.maximum(total - skin_path, 0.0)
    mu_bg = cfg.mu_fat + (cfg.mu_gland - cfg.mu_fat) * g
    # Lesions replace background tissue (13.4): contrast is (mu_lesion - mu_bg) x path, so dense tissue masks them.
    mass_t = np.minimum(mass_t, 0.9 * tissue)
    mu_mass = cfg.mu_gland * cfg.mass_density_factor
    p = 0.1 * (skin_path * cfg.mu_gland + tissue * mu_bg + mass_t * (mu_mass - mu_bg) + calc_t * (cfg.mu_calc - mu_bg))
    sig = blur_mm / s
    if sig >= 0.3:
        p = ndi.gaussian_filter(p, sig)
    p = p + rng_noise.standard_normal(p.shape, dtype=np.float32) * (noise_sd * 0.1 / s)
    # Display: normalise to full-thickness gland, then a gamma curve darkens fat like a processed mammogram.
    white = 0.1 * geom.thickness_mm * (cfg.mu_fat + (cfg.mu_gland - cfg.mu_fat) * g_max) * cfg.display_white
    u = np.clip(p / white, 0.0, 1.0)
    img = np.where(breast, np.clip(np.rint(4095.0 * u**cfg.display_gamma), 1, 4095), 0).astype(np.uint16)

    masks &= breast[None]
    labels = np.asarray(masks.reshape(2, -1).any(axis=1), dtype=np.float32)  # (2,)
    meta: dict[str, Any] = {
        "view": view,
        "laterality": laterality,
        "density": density,
        "dense_area_frac": round(dense_frac, 6),
        "thickness_mm": round(geom.thickness_mm, 6),
        "pixel_spacing_mm": float(s),
        "phantom_version": PHANTOM_VERSION,
        "pectoral_frac": round(float((pec_w > 0.5).sum() / max(1, breast.sum())), 6),
        "lesions": records,
    }
    return PhantomImage(image=img, masks=masks, breast_mask=breast, labels=labels, meta=meta)
