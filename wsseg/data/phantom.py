"""The built-in phantom: seeded synthetic mammograms with exact lesion masks.

docs/datasets.md, "The phantom", says what it models. Everything physical is specified in millimetres and converted
with ``PhantomConfig.pixel_spacing_mm``, so the quick (0.4 mm), paper (0.1 mm) and tiny (1.6 mm) profiles show the
same anatomy at different resolutions. Image formation happens in the log-attenuation domain
(``P = sum(mu * path length)``), then a fixed display curve maps ``P`` to 12-bit MONOCHROME2 (denser = brighter).

Randomness is split into independent streams: one for everything described in millimetres (labels, geometry,
density, lesions, normal structures), one for the texture noise and one for the quantum noise. The millimetre
stream never draws a number whose count depends on the pixel grid, so the same seed gives the same scene at every
pixel spacing.

Version 2 (``PHANTOM_VERSION = "2.1"``; 2.1 changes only what a mass displaces in non-dense breasts) makes the
images closer to what a reader of mammograms sees, so that brightness alone no longer finds the lesions (version 1
drew masses at twice the glandular attenuation and nothing in a lesion-free breast was as bright):

* **Masses are iso-attenuating.** A mass has 1.0-1.1x the attenuation of fibroglandular tissue, as in M-SYNTH
  (Sizikova et al. 2023: density multipliers 1.0, 1.06, 1.1 on VICTRE's glandular material) and in measured
  attenuation (infiltrating ductal carcinoma 0.844 /cm against 0.802 /cm for fibroglandular tissue at 20 keV, Johns
  and Yaffe 1987). Its contrast is what it displaces: carcinomas, fibroadenomas and cysts arise in the terminal duct
  lobular units, so a mass is sited where gland is expected (retro-areolar, away from the subcutaneous fat). Where it
  sits along the beam, and so what it displaces, follows the breast's BI-RADS density (version 2.1, see
  ``_tissue_path``): in a dense breast (C, D) it grows inside the fibroglandular layer and displaces it first, then
  fat, so overlapping gland masks it and its homogeneous interior, outline and surroundings give it away; in a
  non-dense breast (A, B), whose gland is sparse and scattered in fat, it outgrows its lobule at once, is surrounded by
  fat and displaces fat, so it is seen against fat. The dense breasts' layer is taken to be 70 % gland
  (``gland_layer_fraction``; interspersed fat lobules): with a purely glandular layer a mass in dense tissue was
  invisible even to a U-Net trained on the masks, while readers still find most cancers in dense breasts (screening
  sensitivity 87 % in almost entirely fatty and 63 % in extremely dense breasts, Carney et al., Ann. Intern. Med.
  138:168, 2003). Version 2.0 used that layer in every breast, which made masses in fatty breasts no more
  conspicuous than in extremely dense ones (smoothed contrast-to-noise 2.4 and 2.45), against Carney et al. Readers
  find masses by shape, margin and their effect on the surrounding tissue (BI-RADS mammography lexicon, ACR 2013), so
  those carry the signal here: circumscribed round/oval and lobulated benign masses, some with the radiolucent "halo
  sign" (a thin rim of displaced fat); irregular malignant masses with an indistinct margin, or spiculated ones (de
  Sisternes et al. 2015), both with architectural distortion (the surrounding parenchyma pulled toward the mass and
  bunched into radiating strands).
* **Normal bright structures in every breast**, with or without a lesion, none of them masked: islands of dense
  fibroglandular tissue (oval-to-irregular, ill-defined, with interspersed fat: BI-RADS "focal asymmetry" is the
  reader's name for the ones that look like masses); vessels (tortuous soft-tissue tubes running from the chest
  wall toward the nipple) and, in some breasts, benign vascular calcifications along them, drawn as the parallel
  "tram-track" lines of calcified vessel walls (breast arterial calcification, prevalence 12.7 % in the
  meta-analysis of Hendriks et al., Atherosclerosis 2015, rising steeply with age; 20 % here for a screening-age
  population); intramammary lymph nodes (oval or reniform, under 1 cm, with a radiolucent fatty hilum; reported on
  up to 28 % of mammograms) and, in MLO views, axillary lymph nodes in the axillary tail over or in front of the
  pectoral muscle (visible on most MLO views; up to 2 cm when their hilum is fatty); skin moles projected over the
  breast (a raised soft-tissue bump) and radiopaque skin markers (a metal bead on a mole or the nipple, the
  brightest object of an image when present).
* **Benign and malignant differ by morphology, not brightness**, as the BI-RADS lexicon describes: masses as
  above; calcifications punctate (< 0.5 mm) or round (0.5-1 mm), smooth and uniform, in a grouped distribution when
  benign, against fine pleomorphic (varying size and shape, < 0.5 mm) or fine-linear branching calcifications in a
  grouped, linear or segmental (duct-tree) distribution when malignant. Calcifications of both classes have the same
  attenuation (mu_calc).
* **Lesion sizes follow published distributions**, so small lesions are common (the claim under test,
  that high-resolution maps help most for small lesions, lives there). Sizes are drawn from log-normal laws
  truncated to what the image can hold (``SizeLaw``: median, geometric sd, bounds):

  - malignant masses (core diameter): median 14 mm, geometric sd 1.93, the log-normal fitted to 22,915
    screen-detected cancers of the Dutch screening programme (Wang et al., "Mammographic sensitivity as a function
    of tumor size", The Breast 55:69, 2020); consistent with the median of 12-15 mm of incident screen-detected
    invasive cancers in BreastScreen Victoria (Breast Cancer Res. 6(Suppl 1):P14, 2004), whose smallest size
    quintile is under 8 mm. About 30 % are under 10 mm and 6 % under 5 mm;
  - benign masses (cysts, fibroadenomas): no screening registry publishes their sizes; the phantom assumes a
    log-normal with median 11 mm and geometric sd 1.6 (most benign masses recalled at screening are 5-25 mm);
  - calcification clusters (extent of the cluster): the BI-RADS "grouped" distribution is at least 5
    calcifications within 1 cm and at most 2 cm across, so benign (grouped) clusters have median 8 mm, geometric
    sd 1.5, within 3-20 mm; malignant linear and segmental distributions extend further (median 12 mm, geometric
    sd 1.7, 4-40 mm). These two laws are the phantom's assumption within the BI-RADS bounds, not a fit.

Every number is a ``PhantomConfig`` field; each comment says where it comes from.
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
from scipy.special import ndtr, ndtri

from wsseg.core import CLASSES, PROFILE_GEOMETRY, Geometry

PHANTOM_VERSION: str = "2.1"

_VIEWS = ("CC", "MLO")
_LATERALITIES = ("L", "R")
_DENSITIES = ("A", "B", "C", "D")
Range = tuple[float, float]
# A truncated log-normal size law: (median mm, geometric standard deviation, lower bound mm, upper bound mm).
SizeLaw = tuple[float, float, float, float]
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
    mu_marker: float = 200.0  # 1/cm, a steel skin marker at about 20 keV (iron: 25.7 cm2/g x 7.87 g/cm3)
    detector_blur_mm: Range = (0.05, 0.08)  # mm, Gaussian sigma of the detector MTF
    quantum_noise_sd: Range = (0.005, 0.02)  # log units per 0.1 mm pixel; scales as 1/spacing (pixel binning)
    display_gamma: float = 3.0  # 1, display curve exponent (like a film gamma): fat mid-dark, dense near white
    display_white: float = 1.3  # x the full-thickness dense-tissue attenuation, mapped to 4095
    # Masses (13.4). Sizes: see the module docstring for the sources of the size laws.
    # 1, glandular fraction of the tissue a mass displaces, per BI-RADS class A/B/C/D (see _tissue_path): a mass in a
    # fatty or scattered breast sits in fat and displaces fat (0); in a dense breast it grows inside a fibroglandular
    # layer of 70 % gland.
    gland_layer_fraction: tuple[float, float, float, float] = (0.0, 0.0, 0.7, 0.7)
    mass_density_factor: Range = (1.0, 1.1)  # 1, mass attenuation / glandular (M-SYNTH: 1.0, 1.06, 1.1)
    mass_size_benign: SizeLaw = (11.0, 1.6, 4.0, 35.0)  # benign mass diameter (assumed; see the docstring)
    mass_size_malignant: SizeLaw = (14.0, 1.93, 4.0, 40.0)  # malignant core diameter (Wang et al. 2020)
    mass_axis_ratio: Range = (0.6, 1.0)  # 1, minor/major axis ratio
    mass_depth_ratio: Range = (0.8, 1.2)  # 1, along-beam depth / diameter
    mass_edge_blur_mm: float = 0.5  # mm, Gaussian softening of the mass intensity edge (mask stays hard)
    p_lobulated: float = 0.4  # probability a benign mass is lobulated rather than round/oval
    p_halo_sign: float = 0.5  # probability a benign mass shows the radiolucent halo (a thin rim of displaced fat)
    halo_sign_width_mm: Range = (0.4, 1.0)  # mm, width of that lucent rim
    p_irregular: float = 0.3  # probability a malignant mass is irregular (no spicules) rather than spiculated
    spicule_spacing_mm: Range = (2.0, 4.0)  # mm of core perimeter per spicule
    spicule_count: tuple[int, int] = (8, 30)  # spicules per mass, clip
    spicule_length_radii: Range = (1.0, 3.0)  # core radii
    spicule_base_width_mm: Range = (0.5, 1.5)  # mm
    spicule_turn_deg_per_mm: float = 5.0  # degrees per mm, max heading random walk
    spicule_branch_prob: float = 0.25  # probability a spicule has one branch
    spicule_depth_ratio: Range = (1.0, 3.0)  # 1, along-beam thickness / base width of a spicule (a strand or sheet)
    indistinct_sd_mm: Range = (1.0, 2.5)  # mm, blur of a malignant mass's indistinct margin
    indistinct_amp: Range = (0.15, 0.3)  # fraction of the core thickness spread into that margin
    distortion_reach_mm: Range = (5.0, 20.0)  # mm beyond the core over which the parenchyma is pulled in
    distortion_pull: Range = (0.1, 0.3)  # 1, fraction of the reach by which tissue at the core edge is pulled in
    distortion_tethers: tuple[int, int] = (5, 12)  # radiating strands the tissue bunches into
    distortion_bunching: Range = (0.15, 0.35)  # rad, angular pull of the tissue toward each strand
    # Microcalcification clusters (13.5).
    calc_count: tuple[int, int] = (5, 30)  # calcifications per cluster (BI-RADS grouped: at least 5)
    cluster_size_benign: SizeLaw = (8.0, 1.5, 3.0, 20.0)  # benign cluster extent (BI-RADS grouped: <= 2 cm)
    cluster_size_malignant: SizeLaw = (12.0, 1.7, 4.0, 40.0)  # malignant extent (grouped, linear, segmental)
    calc_size_punctate_mm: Range = (0.2, 0.5)  # mm, BI-RADS punctate: under 0.5 mm
    calc_size_round_mm: Range = (0.5, 1.0)  # mm, BI-RADS round: 0.5-1 mm
    calc_size_malignant_mm: Range = (0.1, 0.4)  # mm, fine pleomorphic / fine-linear width (under 0.5 mm)
    calc_aspect_malignant: Range = (1.0, 4.0)  # 1, length/width of pleomorphic calcifications
    calc_aspect_linear: Range = (2.0, 6.0)  # 1, length/width of fine-linear calcifications
    calc_thickness_mm: Range = (0.15, 0.4)  # mm, along-beam thickness
    calc_min_gap_mm: float = 0.2  # mm, minimum distance between calcification centres
    p_linear: float = 0.35  # probability a malignant cluster is fine-linear in a linear distribution
    p_segmental: float = 0.2  # probability it is fine-linear branching in a segmental (duct-tree) distribution
    cluster_dilation_mm: float = 1.0  # mm, cluster region = convex hull dilated by this
    # Normal structures (present in lesion-free breasts too; see the module docstring).
    island_count: tuple[int, int] = (1, 4)  # islands of dense fibroglandular tissue per breast
    island_diameter_mm: Range = (8.0, 30.0)  # mm, log-uniform
    island_edge_mm: Range = (1.5, 3.0)  # mm, Gaussian blur of an island's ill-defined border
    island_fat: float = 0.6  # 1, depth of the interspersed-fat gaps inside an island (x the fine texture, in sd)
    vessel_count: tuple[int, int] = (2, 5)  # vessels per breast
    vessel_width_mm: Range = (0.8, 2.5)  # mm, vessel diameter at the chest wall end
    vessel_length_frac: Range = (0.4, 0.9)  # fraction of the nipple depth
    p_vascular_calcification: float = 0.2  # probability a breast has calcified vessels (Hendriks et al. 2015)
    bac_wall_width_mm: Range = (0.2, 0.5)  # mm, width of one calcified wall line
    bac_thickness_mm: Range = (0.1, 0.3)  # mm, along-beam calcium thickness of a wall line
    bac_coverage: Range = (0.3, 0.8)  # fraction of a calcified vessel's length whose walls are calcified
    p_intramammary_node: float = 0.28  # probability of an intramammary lymph node (seen on up to 28 % of views)
    node_length_mm: Range = (4.0, 10.0)  # mm, intramammary node long axis (normal: under 1 cm)
    p_axillary_nodes: float = 0.8  # probability an MLO view shows axillary nodes
    axillary_node_count: tuple[int, int] = (1, 3)  # axillary nodes when shown
    axillary_node_length_mm: Range = (8.0, 20.0)  # mm, axillary node long axis (fatty-hilum nodes reach 2 cm)
    node_axis_ratio: Range = (0.45, 0.75)  # 1, node minor/major axis ratio (oval, reniform)
    node_hilum_frac: Range = (0.3, 0.6)  # 1, fatty hilum size / node size
    p_mole: float = 0.3  # probability of a skin mole projected over the breast
    mole_diameter_mm: Range = (2.0, 8.0)  # mm
    mole_height_mm: Range = (1.0, 3.0)  # mm, how far it is raised above the skin (extra soft tissue in the beam)
    p_marker: float = 0.1  # probability of a radiopaque skin marker (on the mole if any, else on the nipple)
    marker_diameter_mm: Range = (1.5, 2.5)  # mm, metal bead
    # Placement and rasterisation.
    lesion_margin_mm: float = 5.0  # mm, clearance from skin line and pectoral muscle
    lesion_site_gland: float = 1.0  # 1, lesion sites drawn with probability ~ (expected glandular fraction) ** this
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
    centre: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Glandular fraction g in [0, 1] per pixel (13.2) and two standardised fields.

    Returns g, the raw field (for the pectoral texture) and the fine field (for the interspersed fat of dense islands).
    """
    s = cfg.pixel_spacing_mm
    shape = (cfg.height, cfg.width)
    beta, stretch = _u(rng_mm, cfg.texture_beta), _u(rng_mm, cfg.texture_stretch)
    field = _power_law_field(rng_tex, shape, s, beta, cfg, stretch)
    # A flatter (beta ~ 2) component adds the fine strands that survive inside dense tissue.
    fine = _power_law_field(rng_tex, shape, s, 2.0, cfg, stretch)
    sample = breast[::2, ::2]  # statistics on a subsample: same answer, a quarter of the cost
    field = (field - field[::2, ::2][sample].mean()) / (field[::2, ::2][sample].std() + 1e-6)
    fine = (fine - fine[::2, ::2][sample].mean()) / (fine[::2, ::2][sample].std() + 1e-6)
    rows, cols = _grid_mm(shape[0], s)[:, None], _grid_mm(shape[1], s)[None, :]
    z = field + _gland_prior(cfg, geom, centre, rows, cols, dist)
    tau = float(np.quantile(z[::2, ::2][sample], 1.0 - dense_frac))
    g = g_max / (1.0 + np.exp(-(z - tau) / cfg.gland_sigmoid_s))
    # Fine texture modulates dense tissue only: fat lobules do not show strands.
    g = np.clip(g * (1.0 + cfg.texture_fine_amp * fine), 0.0, 1.0)
    return g.astype(np.float32), field, fine


def _gland_prior(
    cfg: PhantomConfig, geom: _Geometry, centre: float, rows: np.ndarray, cols: np.ndarray, dist: np.ndarray
) -> np.ndarray:
    """The smooth prior (sd units) added to the texture field: gland sits retro-areolar and away from the skin.

    ``centre`` is the envelope's column (mm); ``rows``, ``cols`` are mm coordinates and ``dist`` the distance (mm) to
    the outline, on any grid (the pixel grid for the texture, the 1 mm grid for lesion placement).
    """
    sd = cfg.envelope_sd_frac * geom.depth_mm
    env = np.exp(-((cols - centre) ** 2 + (rows - geom.nipple_row_mm) ** 2) / (2.0 * sd * sd))
    subcutaneous = np.exp(-dist / cfg.subcutaneous_fat_mm)
    return cfg.envelope_weight * (2.0 * env - 1.0) - cfg.subcutaneous_weight * subcutaneous


# --------------------------------------------------------------------------------------------------------------------
# Lesions


def _size(rng: np.random.Generator, law: SizeLaw) -> float:
    """One draw (mm) from a truncated log-normal size law, by inverting the CDF at one uniform draw.

    One draw per call whatever the bounds, so the millimetre stream's length never depends on the outcome.
    """
    median, gsd, lo, hi = law
    mu, sigma = math.log(median), math.log(gsd)
    a, b = float(ndtr((math.log(lo) - mu) / sigma)), float(ndtr((math.log(hi) - mu) / sigma))
    return float(np.clip(math.exp(mu + sigma * float(ndtri(rng.uniform(a, b)))), lo, hi))


@dataclass
class _Lesion:
    """A lesion drawn in mm; rasterised later for a given pixel spacing."""

    cls: int  # 0 benign, 1 malignant
    kind: str  # "mass" | "calcification"
    shape: str  # BI-RADS shape (masses) or calcification morphology
    detail: str  # BI-RADS margin (masses) or distribution (calcifications)
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
    """Draw a mass (13.4) by its BI-RADS descriptors.

    Benign: round or oval with a circumscribed margin, sometimes gently lobulated, and in ``p_halo_sign`` of them a
    thin radiolucent rim (the "halo sign" of cysts and fibroadenomas). Malignant: an irregular shape with an
    indistinct margin, or spiculated; both distort the surrounding parenchyma (architectural distortion), drawn here
    as a pull of the tissue toward the mass with the tissue bunched into radiating strands.
    """
    if cls == 0:
        d = _size(rng, cfg.mass_size_benign)
        lobulated = rng.random() < cfg.p_lobulated
        harm = _harmonics(rng, 10, 0.10, 0.35) if lobulated else _harmonics(rng, 6, 0.04, 0.2)
        ratio = _u(rng, cfg.mass_axis_ratio)
        shape = "lobulated" if lobulated else ("round" if ratio > 0.85 else "oval")
        margin = "circumscribed"
    else:
        d = _size(rng, cfg.mass_size_malignant)
        margin = "indistinct" if rng.random() < cfg.p_irregular else "spiculated"
        harm = _harmonics(rng, 10, 0.20, 0.5) if margin == "indistinct" else _harmonics(rng, 8, 0.15, 0.45)
        ratio = _u(rng, cfg.mass_axis_ratio)
        shape = "irregular"
    r0 = d / 2.0
    params: dict[str, Any] = {
        "ratio": ratio,
        "rot": float(rng.uniform(0.0, np.pi)),
        "harm": harm,
        "depth": d * _u(rng, cfg.mass_depth_ratio),
        "density": _u(rng, cfg.mass_density_factor),
        "spicules": [],
        "indistinct": (0.0, 1.0),
        "halo_sign": 0.0,
        "distortion": None,
    }
    reach = r0 * (1.0 + sum(a for _, a, _ in harm))
    if cls == 0:
        if rng.random() < cfg.p_halo_sign:
            params["halo_sign"] = _u(rng, cfg.halo_sign_width_mm)
        return _Lesion(cls, "mass", shape, margin, d, reach + params["halo_sign"], params)
    params["indistinct"] = (_u(rng, cfg.indistinct_amp), _u(rng, cfg.indistinct_sd_mm))
    if margin == "spiculated":
        params["spicules"], params["spicule_depth"] = _draw_spicules(cfg, rng, r0), _u(rng, cfg.spicule_depth_ratio)
    n_tethers = int(rng.integers(cfg.distortion_tethers[0], cfg.distortion_tethers[1] + 1))
    params["distortion"] = {
        "reach": _u(rng, cfg.distortion_reach_mm),
        "pull": _u(rng, cfg.distortion_pull),
        "tethers": n_tethers,
        "phase": float(rng.uniform(0.0, 2.0 * np.pi)),
        "bunching": _u(rng, cfg.distortion_bunching),
    }
    # Spicules and the distortion may cross tissue boundaries, but the core and its margin must be clear of them.
    return _Lesion(cls, "mass", shape, margin, d, reach + 2.0 * params["indistinct"][1], params)


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
    """Draw a microcalcification cluster (13.5) by its BI-RADS morphology and distribution.

    Benign: punctate (< 0.5 mm) or round (0.5-1 mm), smooth and uniform, grouped. Malignant: fine pleomorphic
    (< 0.5 mm, varying in size and shape) grouped, or fine-linear casts of the duct lumen, oriented along the duct,
    in a linear distribution (one duct) or a segmental one (a duct and its branches fanning toward the chest wall).
    """
    count = int(rng.integers(cfg.calc_count[0], cfg.calc_count[1] + 1))
    angles: np.ndarray | None = None  # per-candidate orientation (along the duct) for fine-linear casts
    if cls == 0:
        extent = _size(rng, cfg.cluster_size_benign)
        shape, distribution = ("round" if rng.random() < 0.5 else "punctate"), "grouped"
        sizes = cfg.calc_size_round_mm if shape == "round" else cfg.calc_size_punctate_mm
        centres = _grouped_points(rng, extent, 4 * count)
    else:
        extent = _size(rng, cfg.cluster_size_malignant)
        sizes = cfg.calc_size_malignant_mm
        u = rng.random()
        if u < cfg.p_segmental:
            shape, distribution = "fine-linear branching", "segmental"
            count = min(2 * count, 60)  # a segment holds more calcifications than a group
            centres, angles = _duct_points(rng, extent, 4 * count, jitter=0.15, branches=int(rng.integers(3, 6)))
        elif u < cfg.p_segmental + cfg.p_linear:
            shape, distribution = "fine-linear", "linear"
            centres, angles = _duct_points(rng, extent, 4 * count, jitter=0.15, branches=1)
        else:
            shape, distribution = "fine pleomorphic", "grouped"
            centres = _grouped_points(rng, extent, 4 * count)
    if len(centres) == 0:
        centres = np.zeros((1, 2))
    calcs: list[tuple[float, float, float, float, float, float]] = []  # row, col, width, length, angle, thickness
    for i, p in enumerate(centres):
        if len(calcs) == count:
            break
        if any(math.hypot(p[0] - c[0], p[1] - c[1]) < cfg.calc_min_gap_mm + 0.5 * c[2] for c in calcs):
            continue
        w = _u(rng, sizes)
        if cls == 0:
            aspect = 1.0  # smooth and round
        elif angles is not None:
            aspect = _u(rng, cfg.calc_aspect_linear)
        else:
            aspect = _u(rng, cfg.calc_aspect_malignant)
        angle = float(angles[i]) if angles is not None else float(rng.uniform(0, np.pi))
        calcs.append((float(p[0]), float(p[1]), w, w * aspect, angle, _u(rng, cfg.calc_thickness_mm)))
    params = {"calcs": calcs}
    radius = extent / 2.0 + cfg.cluster_dilation_mm + 1.0
    return _Lesion(cls, "calcification", shape, distribution, extent, radius, params)


def _grouped_points(rng: np.random.Generator, extent: float, n: int) -> np.ndarray:
    """Candidate centres (mm) of a grouped distribution: a Gaussian scatter kept within ``extent`` across."""
    pts = rng.normal(0.0, extent / 4.0, (n, 2))
    return pts[np.hypot(pts[:, 0], pts[:, 1]) <= extent / 2.0]


def _duct_points(
    rng: np.random.Generator, extent: float, n: int, jitter: float, branches: int
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate centres along a duct (and ``branches - 1`` side branches) about ``extent`` mm long, centred at 0.

    Ducts run from the nipple toward the chest wall (from larger to smaller columns in the canonical frame), so the
    trunk heads that way within +-35 degrees and branches fan out from it, the triangle with its apex toward the
    nipple that BI-RADS calls segmental. Returns the points (n', 2) and the local duct direction of each (n',).
    """
    heading = float(np.pi + rng.uniform(-0.6, 0.6))
    start = -0.5 * extent * np.array([np.sin(heading), np.cos(heading)])
    trunk = _random_walk(rng, start, heading, extent, 15.0)
    paths = [trunk]
    for _ in range(branches - 1):
        at = trunk[int(rng.integers(len(trunk) // 5, max(len(trunk) // 5 + 1, 3 * len(trunk) // 5)))]
        side = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.8))
        paths.append(_random_walk(rng, at, heading + side, float(rng.uniform(0.4, 0.7)) * extent, 15.0))
    path = np.vstack(paths)
    tangent = np.vstack([np.gradient(p, axis=0) for p in paths])
    pick = rng.integers(0, len(path), n)
    pts = path[pick] + rng.normal(0.0, jitter, (n, 2))
    angles = np.arctan2(tangent[pick, 0], tangent[pick, 1])  # the calcification's long axis follows the duct
    # Keep the cluster inside its nominal extent.
    keep = np.hypot(pts[:, 0], pts[:, 1]) <= 0.5 * extent + jitter
    return pts[keep], angles[keep]


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
    site: np.ndarray,
) -> bool:
    """Choose a centre (mm) clear of skin, pectoral muscle and earlier lesions; False when no room is left.

    Among the free 1 mm cells, a cell is chosen with probability proportional to ``site`` (see :func:`_draw_lesions`).
    """
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
    cum = np.cumsum(site[rr, cc], dtype=np.float64)
    i = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), rr.size - 1)
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
    """Guarantee the mask is at least ``min_lesion_px`` across (at coarse spacings a 5 mm lesion is ~3 px).

    A disk of radius n/2 pixels can span only n - 1 rows when its centre falls between pixel centres; half a pixel
    more in the other axis (``sqrt((n/2)^2 + 1/4)``) always reaches a pixel centre in the outermost rows and columns.
    """
    rad = math.sqrt((0.5 * cfg.min_lesion_px) ** 2 + 0.25) * cfg.pixel_spacing_mm
    grown: np.ndarray = mask | (dr**2 + dc**2 <= rad * rad)
    return grown


@dataclass
class _Layers:
    """What the scene adds to the background breast, per pixel, before image formation.

    Attributes:
        mass_t: mm of tissue displaced by masses (with their spicules and margins).
        mass_mu: those mm x the masses' attenuation (mm/cm).
        soft_t: mm of background tissue displaced by the other inclusions (islands, nodes, vessels, halo rims).
        soft_mu: sum of displaced mm x the inclusions' attenuation (mm/cm); contrast is ``soft_mu - soft_t * mu_bg``.
        calc_t: mm of calcium (lesions and vessel walls), partial-volume averaged over the pixel.
        extra_mu: mm x attenuation (mm/cm) of matter outside the breast's volume (raised moles, skin markers).
    """

    mass_t: np.ndarray
    mass_mu: np.ndarray
    soft_t: np.ndarray
    soft_mu: np.ndarray
    calc_t: np.ndarray
    extra_mu: np.ndarray

    @classmethod
    def zeros(cls, shape: tuple[int, int]) -> _Layers:
        """Empty layers of ``shape``."""
        return cls(*(np.zeros(shape, dtype=np.float32) for _ in range(6)))


def _blob(
    center_mm: tuple[float, float],
    r0: float,
    params: dict[str, Any],
    half_mm: float,
    cfg: PhantomConfig,
) -> tuple[slice, slice, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An ellipsoid with a harmonic boundary: window, offsets, normalised radius ``rho`` and along-beam chord (mm).

    ``params`` holds ``ratio`` (minor/major), ``rot`` (rad), ``harm`` (boundary harmonics) and ``depth`` (mm).
    """
    rs, cs, dr, dc = _window(center_mm, half_mm, cfg)
    rho, chord = _ellipsoid_chord(dr, dc, r0, params)
    return rs, cs, dr, dc, rho, chord


def _render_mass(les: _Lesion, cfg: PhantomConfig, layers: _Layers) -> tuple[tuple[slice, slice], np.ndarray]:
    """Add the mass (and its halo sign) to the displaced-tissue layers; return its window and hard core mask."""
    p, s = les.params, cfg.pixel_spacing_mm
    r0 = les.diameter_mm / 2.0
    spic_reach = max((float(np.abs(path).max()) for path, _, _ in p["spicules"]), default=0.0)
    amp, sd = p["indistinct"]
    half = max(les.radius_mm, spic_reach) + 4.0 * sd + 2.0
    rs, cs, dr, dc, rho, lz = _blob(les.center_mm, r0, p, half, cfg)
    core = rho < 1.0
    if cfg.mass_edge_blur_mm / s >= 0.3:
        lz = ndi.gaussian_filter(lz, cfg.mass_edge_blur_mm / s)
    if amp > 0:
        # Indistinct margin: part of the mass's density spreads out, so no sharp edge is left to see.
        lz = (1.0 - amp) * lz + amp * ndi.gaussian_filter(lz, sd / s)
    if p["spicules"]:
        base = float(np.mean([b for _, b, _ in p["spicules"]]))
        lz = lz + _render_spicules(p["spicules"], p["spicule_depth"] * base, lz.shape, dr, dc, s)
    layers.mass_t[rs, cs] += lz
    layers.mass_mu[rs, cs] += lz * (p["density"] * cfg.mu_gland)
    if p["halo_sign"] > 0:
        # A thin shell of fat around the mass: its chord is largest just outside the edge, where the beam runs
        # tangentially through it, which is the lucent rim a reader calls the halo sign.
        rho_out = 1.0 + p["halo_sign"] / r0
        rim = p["depth"] * np.sqrt(np.clip(rho_out**2 - rho**2, 0.0, None)) * (rho >= 1.0)
        if 0.5 * p["halo_sign"] / s >= 0.3:
            rim = ndi.gaussian_filter(rim, 0.5 * p["halo_sign"] / s)
        layers.soft_t[rs, cs] += rim
        layers.soft_mu[rs, cs] += rim * cfg.mu_fat
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
    widths = []
    for path, base, tip in spicules:
        _deposit_line(layer, path, base, tip, float(dr[0, 0]), float(dc[0, 0]), s)
        widths.append(base)
    sigma = max(0.5, 0.4 * float(np.mean(widths)) / s)
    blurred: np.ndarray = ndi.gaussian_filter(layer, sigma)
    return blurred * (peak * math.sqrt(2.0 * math.pi) * sigma)


def _deposit_line(
    layer: np.ndarray, path: np.ndarray, base: float, tip: float, o_r: float, o_c: float, s: float
) -> None:
    """Deposit a tapered line: points every half pixel, weight width/base per pixel of length (blur it afterwards).

    ``o_r``, ``o_c`` are the mm offsets of pixel (0, 0) from the path's origin. A line of constant weight blurred by
    a Gaussian of sigma px has a peak of ``1 / (sqrt(2 pi) sigma)``, which the caller scales.
    """
    seg = np.hypot(*np.diff(path, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(arc[-1] / (0.5 * s)) + 1)
    at = np.linspace(0.0, arc[-1], n)
    pr, pc = np.interp(at, arc, path[:, 0]), np.interp(at, arc, path[:, 1])
    w = base + (tip - base) * at / max(arc[-1], 1e-6)
    ir, ic = np.rint((pr - o_r) / s).astype(int), np.rint((pc - o_c) / s).astype(int)
    ok = (ir >= 0) & (ir < layer.shape[0]) & (ic >= 0) & (ic < layer.shape[1])
    np.add.at(layer, (ir[ok], ic[ok]), (w[ok] / base) * (0.5 * s) / s)


def _distort(g: np.ndarray, les: _Lesion, cfg: PhantomConfig) -> None:
    """Architectural distortion around a malignant mass, in place on the glandular fraction ``g``.

    Tissue at radius r is taken from radius ``r + pull * reach * w(r)`` (``w`` falls from 1 at the core edge to 0 at
    ``reach`` beyond it), so the parenchyma is drawn in toward the mass; its angle is pulled toward ``tethers``
    radiating directions, so the strands bunch into the straight radiating lines readers look for. Both maps are
    monotonic (``pull < 0.5``, ``bunching < 1``), so the tissue is warped, never folded.
    """
    d = les.params["distortion"]
    s = cfg.pixel_spacing_mm
    r_in = les.diameter_mm / 2.0
    outer = r_in + d["reach"]
    rs, cs, dr, dc = _window(les.center_mm, outer, cfg)
    r = np.hypot(dr, dc)
    theta = np.arctan2(dr, dc)
    w = (1.0 - np.clip((r - r_in) / d["reach"], 0.0, 1.0)) ** 2  # 1 inside the core edge, 0 beyond the reach
    r_src = r + d["pull"] * d["reach"] * w
    n = d["tethers"]
    theta_src = theta + (d["bunching"] / n) * w * np.sin(n * (theta - d["phase"]))
    rows = (les.center_mm[0] + r_src * np.sin(theta_src)) / s - 0.5
    cols = (les.center_mm[1] + r_src * np.cos(theta_src)) / s - 0.5
    warped = ndi.map_coordinates(g, [rows.ravel(), cols.ravel()], order=1, mode="nearest")
    g[rs, cs] = np.where(r < outer, warped.reshape(r.shape), g[rs, cs])


def _render_cluster(les: _Lesion, cfg: PhantomConfig, layers: _Layers) -> tuple[tuple[slice, slice], np.ndarray]:
    """Add calcification thickness (mm, partial-volume averaged) to ``layers.calc_t``; return the region mask."""
    s = cfg.pixel_spacing_mm
    calcs = les.params["calcs"]
    half = les.diameter_mm / 2.0 + cfg.cluster_dilation_mm + 2.0 * s + 1.0
    rs, cs, dr, dc = _window(les.center_mm, half, cfg)
    local = np.zeros((dr.shape[0], dc.shape[1]), dtype=np.float32)
    for calc in calcs:
        _splat_calc(local, calc, float(dr[0, 0]), float(dc[0, 0]), s)
    layers.calc_t[rs, cs] += local
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
    cfg: PhantomConfig, rng: np.random.Generator, geom: _Geometry, centre: float
) -> tuple[list[_Lesion], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Label mix (13.6) and lesion parameters and positions, all from the mm stream.

    Carcinomas, fibroadenomas, cysts and the calcifications of DCIS all arise in the terminal duct lobular units,
    i.e. inside the fibroglandular tissue, so a lesion's site is drawn with probability proportional to the
    expected glandular fraction (the smooth prior of the texture, ``centre`` being the envelope's column in mm)
    raised to ``lesion_site_gland``: retro-areolar and away from the subcutaneous fat, as cancers are.
    """
    maps = _placement_maps(geom)
    rows_mm, cols_mm = _grid_mm(maps[0].shape[0], 1.0)[:, None], _grid_mm(maps[0].shape[1], 1.0)[None, :]
    prior = _gland_prior(cfg, geom, centre, rows_mm, cols_mm, maps[0])
    site = (1.0 / (1.0 + np.exp(-prior / cfg.gland_sigmoid_s))) ** cfg.lesion_site_gland
    u = rng.random()
    if u < cfg.p_normal:
        return [], maps
    classes = [0 if u < cfg.p_normal + cfg.p_benign else 1]
    if rng.random() < cfg.p_second_lesion:
        classes.append(int(rng.integers(0, 2)))
    out: list[_Lesion] = []
    for cls in classes:
        les = _draw_cluster(cfg, rng, cls) if rng.random() < cfg.p_calcification else _draw_mass(cfg, rng, cls)
        if _place(rng, les, maps, geom, cfg, out, site):
            out.append(les)
    return out, maps


# --------------------------------------------------------------------------------------------------------------------
# Normal structures: bright, unmasked, in breasts with and without lesions

ANATOMY_KINDS = ("island", "vessel", "calcified_vessel", "intramammary_node", "axillary_node", "mole", "marker")


@dataclass
class _Structure:
    """A normal structure drawn in mm (no mask): ``kind`` is one of :data:`ANATOMY_KINDS` but ``calcified_vessel``."""

    kind: str
    center_mm: tuple[float, float]  # (row, col)
    params: dict[str, Any]


def _spot(
    rng: np.random.Generator,
    maps: tuple[np.ndarray, np.ndarray, np.ndarray],
    geom: _Geometry,
    clearance: float,
    region: np.ndarray | None = None,
    over_pectoral: bool = False,
) -> tuple[float, float]:
    """A centre (mm) at least ``clearance`` inside the skin (and off the pectoral muscle), within ``region`` if given.

    Decided on the 1 mm placement grid and always drawing three numbers, so the mm stream is resolution-free.
    """
    d_out, d_pec, _ = maps
    rows_mm, cols_mm = np.arange(d_out.shape[0])[:, None] + 0.5, np.arange(d_out.shape[1])[None, :] + 0.5
    ok = (d_out >= clearance + geom.skin_mm) & (cols_mm >= clearance)
    ok &= (rows_mm >= clearance) & (rows_mm <= geom.height_mm - clearance)
    if not over_pectoral:
        ok &= d_pec >= clearance
    if region is not None:
        ok &= region
    rr, cc = np.nonzero(ok)
    pick, jr, jc = float(rng.random()), float(rng.random()), float(rng.random())
    if rr.size == 0:  # no room: the most interior spot of the region (or of the breast)
        score = np.where(region, d_out, -1.0) if region is not None and (region & (d_out > 0)).any() else d_out
        r, c = np.unravel_index(int(np.argmax(score)), score.shape)
        return float(r) + jr, float(c) + jc
    i = min(int(pick * rr.size), rr.size - 1)
    return float(rr[i]) + jr, float(cc[i]) + jc


def _draw_anatomy(
    cfg: PhantomConfig, rng: np.random.Generator, geom: _Geometry, maps: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> list[_Structure]:
    """Dense islands, vessels (some calcified), lymph nodes, moles and skin markers of one breast, in mm."""
    rows_mm, cols_mm = np.arange(maps[0].shape[0])[:, None] + 0.5, np.arange(maps[0].shape[1])[None, :] + 0.5
    out: list[_Structure] = []
    for _ in range(int(rng.integers(cfg.island_count[0], cfg.island_count[1] + 1))):
        d = _log_u(rng, cfg.island_diameter_mm)
        params: dict[str, Any] = {
            "r0": d / 2.0,
            "ratio": float(rng.uniform(0.5, 1.0)),
            "rot": float(rng.uniform(0.0, np.pi)),
            # Concave, irregular outlines: islands are not masses, and interspersed fat breaks them up.
            "harm": _harmonics(rng, 8, 0.2, 0.5),
            "depth": d * float(rng.uniform(0.5, 0.9)),
            "edge": _u(rng, cfg.island_edge_mm),
        }
        out.append(_Structure("island", _spot(rng, maps, geom, 0.5 * d), params))
    out += _draw_vessels(cfg, rng, geom, maps)
    # Intramammary nodes sit mostly in the upper outer quadrant, in the posterior two thirds of the breast.
    upper = rows_mm < (geom.nipple_row_mm if geom.view == "MLO" else geom.shape[0])
    if rng.random() < cfg.p_intramammary_node:
        params = _node_params(cfg, rng, _u(rng, cfg.node_length_mm), cfg.node_hilum_frac)
        region = upper & (cols_mm < 0.7 * geom.depth_mm)
        out.append(_Structure("intramammary_node", _spot(rng, maps, geom, params["r0"] + 2.0, region), params))
    if geom.view == "MLO" and rng.random() < cfg.p_axillary_nodes:
        # Axillary nodes: the axillary tail at the top of an MLO view, over or in front of the pectoral muscle.
        pect = geom.pectoral
        assert pect, "an MLO view always has its triangular pectoral muscle (_sample_geometry)"
        _, w_top, h_pec, _ = pect
        axilla = (rows_mm < 0.4 * h_pec) & (cols_mm > 0.3 * w_top)
        hilum = (cfg.node_hilum_frac[0] + 0.15, min(0.85, cfg.node_hilum_frac[1] + 0.15))  # often fatty-replaced
        for _ in range(int(rng.integers(cfg.axillary_node_count[0], cfg.axillary_node_count[1] + 1))):
            params = _node_params(cfg, rng, _u(rng, cfg.axillary_node_length_mm), hilum)
            centre = _spot(rng, maps, geom, params["r0"] + 1.0, axilla, over_pectoral=True)
            out.append(_Structure("axillary_node", centre, params))
    mole: _Structure | None = None
    if rng.random() < cfg.p_mole:
        d = _u(rng, cfg.mole_diameter_mm)
        params = {
            "r0": d / 2.0,
            "height": _u(rng, cfg.mole_height_mm),
            "lobes": int(rng.integers(5, 10)),
            "phase": float(rng.uniform(0.0, 2.0 * np.pi)),
            "cleft": float(rng.uniform(0.3, 0.6)),
        }
        mole = _Structure("mole", _spot(rng, maps, geom, d / 2.0 + 2.0), params)
        out.append(mole)
    if rng.random() < cfg.p_marker:
        d = _u(rng, cfg.marker_diameter_mm)
        if mole is not None and rng.random() < 0.5:
            centre = mole.center_mm
        else:  # a nipple marker, just inside the skin line at the nipple
            row = geom.nipple_row_mm
            centre = (row, float(geom.edge_col(np.array([row]))[0]) - 0.5 * d - 0.5)
        out.append(_Structure("marker", centre, {"diameter": d}))
    return out


def _node_params(cfg: PhantomConfig, rng: np.random.Generator, length: float, hilum: Range) -> dict[str, Any]:
    """An oval lymph node of long axis ``length`` mm with a fatty hilum notched into one side (a reniform node)."""
    ratio = _u(rng, cfg.node_axis_ratio)
    return {
        "r0": length / 2.0,
        "ratio": ratio,
        "rot": float(rng.uniform(0.0, np.pi)),
        "harm": _harmonics(rng, 4, 0.03, 0.08),
        "depth": length * ratio * float(rng.uniform(0.8, 1.0)),
        "hilum": _u(rng, hilum),
        "side": float(rng.choice([-1.0, 1.0])),
    }


def _draw_vessels(
    cfg: PhantomConfig, rng: np.random.Generator, geom: _Geometry, maps: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> list[_Structure]:
    """Vessels from the posterior breast toward the nipple; with ``p_vascular_calcification``, calcified walls."""
    cols_mm = np.arange(maps[0].shape[1])[None, :] + 0.5
    posterior = np.broadcast_to(cols_mm < 0.25 * geom.depth_mm, maps[0].shape)
    calcified = rng.random() < cfg.p_vascular_calcification
    out: list[_Structure] = []
    for i in range(int(rng.integers(cfg.vessel_count[0], cfg.vessel_count[1] + 1))):
        start = _spot(rng, maps, geom, 2.0, posterior)
        toward = math.atan2(geom.nipple_row_mm - start[0], geom.depth_mm - start[1])
        length = _u(rng, cfg.vessel_length_frac) * geom.depth_mm
        path = _random_walk(rng, np.array(start), toward + float(rng.uniform(-0.35, 0.35)), length, 10.0)
        params: dict[str, Any] = {"path": path, "width": _u(rng, cfg.vessel_width_mm), "bac": None}
        if calcified and (i == 0 or rng.random() < 0.5):
            # Calcified stretches alternate with clear ones along the vessel (3-15 mm each).
            coverage, at, spans = _u(rng, cfg.bac_coverage), 0.0, []
            while at < length:
                step = float(rng.uniform(3.0, 15.0))
                if rng.random() < coverage:
                    spans.append((at, at + step))
                at += step
            params["bac"] = {
                "spans": spans,
                "wall": _u(rng, cfg.bac_wall_width_mm),
                "thickness": _u(rng, cfg.bac_thickness_mm),
            }
        out.append(_Structure("vessel", start, params))
    return out


def _ellipsoid_chord(
    dr: np.ndarray, dc: np.ndarray, r0: float, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radius ``rho`` and along-beam chord (mm) of a harmonic-boundary ellipsoid at offsets (dr, dc) mm."""
    cos_r, sin_r = math.cos(params["rot"]), math.sin(params["rot"])
    u = dc * cos_r + dr * sin_r
    v = (-dc * sin_r + dr * cos_r) / params["ratio"]
    theta = np.arctan2(v, u)
    radius = np.full(theta.shape, r0, dtype=np.float32)
    for k, a, phi in params["harm"]:
        radius *= 1.0 + a * np.cos(k * theta + phi)
    rho = (np.hypot(u, v) / radius).astype(np.float32)
    return rho, (params["depth"] * np.sqrt(np.clip(1.0 - rho**2, 0.0, None))).astype(np.float32)


def _render_anatomy(
    structs: list[_Structure], cfg: PhantomConfig, layers: _Layers, fine: np.ndarray, breast: np.ndarray
) -> None:
    """Rasterise the normal structures into ``layers`` (in place)."""
    s = cfg.pixel_spacing_mm
    for st in structs:
        p = st.params
        if st.kind == "vessel":
            _render_vessel(st, cfg, layers, breast)
        elif st.kind == "island":
            reach = p["r0"] * (1.0 + sum(a for _, a, _ in p["harm"]))
            rs, cs, dr, dc = _window(st.center_mm, reach + 3.0 * p["edge"], cfg)
            _, t = _ellipsoid_chord(dr, dc, p["r0"], p)
            # Interspersed fat: the fine texture opens lucent gaps in the island; then an ill-defined border.
            t = t * np.clip(1.0 + cfg.island_fat * fine[rs, cs], 0.0, 1.0)
            t = ndi.gaussian_filter(t, p["edge"] / s)
            layers.soft_t[rs, cs] += t
            layers.soft_mu[rs, cs] += t * cfg.mu_gland
        elif st.kind in ("intramammary_node", "axillary_node"):
            rs, cs, dr, dc = _window(st.center_mm, p["r0"] * 1.2 + 2.0 * s + 1.0, cfg)
            _, node = _ellipsoid_chord(dr, dc, p["r0"], p)
            # The hilum: a smaller ellipsoid of fat centred on the edge of one side of the minor axis.
            off = p["side"] * 0.75 * p["r0"] * p["ratio"]
            hr, hc = off * math.cos(p["rot"]), -off * math.sin(p["rot"])
            hil_p = {**p, "depth": p["depth"] * p["hilum"], "harm": []}
            _, hil = _ellipsoid_chord(dr - hr, dc - hc, p["r0"] * p["hilum"], hil_p)
            hil = np.minimum(hil, node)
            if 0.15 / s >= 0.3:
                node, hil = ndi.gaussian_filter(node, 0.15 / s), ndi.gaussian_filter(hil, 0.15 / s)
            layers.soft_t[rs, cs] += node
            layers.soft_mu[rs, cs] += node * cfg.mu_gland - hil * (cfg.mu_gland - cfg.mu_fat)
        elif st.kind == "mole":
            rs, cs, dr, dc = _window(st.center_mm, p["r0"] + 2.0 * s + 0.5, cfg)
            rho, theta = np.hypot(dr, dc) / p["r0"], np.arctan2(dr, dc)
            # A raised, flat-topped bump whose crenulated surface traps air in clefts (the mottled look of a mole).
            dome = p["height"] * np.sqrt(np.clip(1.0 - rho**4, 0.0, None))
            clefts = 0.5 * (1.0 + np.cos(p["lobes"] * theta + p["phase"]) * np.cos(3.0 * np.pi * rho + p["phase"]))
            t = _soften(dome * (1.0 - p["cleft"] * clefts), s)
            layers.extra_mu[rs, cs] += t * cfg.mu_gland
        elif st.kind == "marker":
            d = p["diameter"]
            rs, cs, dr, dc = _window(st.center_mm, 0.5 * d + 2.0 * s, cfg)
            local = np.zeros((dr.shape[0], dc.shape[1]), dtype=np.float32)
            _splat_calc(local, (0.0, 0.0, d, d, 0.0, d), float(dr[0, 0]), float(dc[0, 0]), s)
            layers.extra_mu[rs, cs] += local * cfg.mu_marker


def _soften(t: np.ndarray, s: float) -> np.ndarray:
    """A pixel-scale blur of a rasterised profile (at 0.4 mm and coarser), so small sharp structures alias less."""
    return ndi.gaussian_filter(t, 0.3) if s >= 0.4 else t


def _render_vessel(st: _Structure, cfg: PhantomConfig, layers: _Layers, breast: np.ndarray) -> None:
    """A vessel as a blurred tapered line of soft tissue; calcified walls as two parallel calcium lines."""
    s, p = cfg.pixel_spacing_mm, st.params
    path, w = p["path"], p["width"]
    lo, hi = path.min(axis=0) - 3.0 * w - 1.0, path.max(axis=0) + 3.0 * w + 1.0
    r0, r1 = max(0, int(lo[0] / s)), min(cfg.height, int(math.ceil(hi[0] / s)) + 1)
    c0, c1 = max(0, int(lo[1] / s)), min(cfg.width, int(math.ceil(hi[1] / s)) + 1)
    if r1 <= r0 or c1 <= c0:
        return
    o_r, o_c = (r0 + 0.5) * s, (c0 + 0.5) * s  # mm position of the window's pixel (0, 0)
    layer = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
    _deposit_line(layer, path, w, 0.5 * w, o_r, o_c, s)
    sigma = max(0.5, 0.4 * w / s)
    layer = ndi.gaussian_filter(layer, sigma) * (w * math.sqrt(2.0 * math.pi) * sigma) * breast[r0:r1, c0:c1]
    layers.soft_t[r0:r1, c0:c1] += layer
    layers.soft_mu[r0:r1, c0:c1] += layer * cfg.mu_gland
    if p["bac"] is None:
        return
    bac = p["bac"]
    seg = np.hypot(*np.diff(path, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    at = np.arange(0.0, arc[-1], 0.5 * min(s, bac["wall"]))
    calcified = np.zeros(at.shape, dtype=bool)
    for a, b in bac["spans"]:
        calcified |= (at >= a) & (at < b)
    at = at[calcified]
    if at.size < 2:
        # A span shorter than one sample step leaves no wall line to draw (and np.gradient needs two samples).
        return
    pr, pc = np.interp(at, arc, path[:, 0]), np.interp(at, arc, path[:, 1])
    tr, tc = np.gradient(np.interp(at, arc, path[:, 0])), np.gradient(np.interp(at, arc, path[:, 1]))
    norm = np.maximum(np.hypot(tr, tc), 1e-9)
    half = 0.5 * w * (1.0 - 0.5 * at / max(arc[-1], 1e-6))  # the wall follows the taper
    calc = np.zeros_like(layer)
    # Each deposit stands for a wall segment of 0.5 * min(s, wall) mm: its calcium volume spread over one pixel.
    weight = bac["wall"] * bac["thickness"] * 0.5 * min(s, bac["wall"]) / (s * s)
    for side in (-1.0, 1.0):
        rr = np.rint((pr + side * half * tc / norm - o_r) / s).astype(int)
        cc = np.rint((pc - side * half * tr / norm - o_c) / s).astype(int)
        ok = (rr >= 0) & (rr < calc.shape[0]) & (cc >= 0) & (cc < calc.shape[1])
        np.add.at(calc, (rr[ok], cc[ok]), weight)
    calc = ndi.gaussian_filter(calc, max(0.5, 0.5 * bac["wall"] / s)) * breast[r0:r1, c0:c1]
    layers.calc_t[r0:r1, c0:c1] += calc


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
    env_centre = _u(rng, cfg.envelope_center_frac) * geom.depth_mm
    lesions, maps = _draw_lesions(cfg, rng, geom, env_centre)
    anatomy = _draw_anatomy(cfg, rng, geom, maps)
    pect_gland = _u(rng, cfg.pectoral_gland)
    blur_mm, noise_sd = _u(rng, cfg.detector_blur_mm), _u(rng, cfg.quantum_noise_sd)

    breast, dist = _fine_distance(geom, cfg, 0.5 * geom.thickness_mm + 5.0)
    g_max = _u(rng, cfg.gland_max)
    g, field, fine = _glandular_fraction(cfg, rng, rng_tex, geom, dist, breast, dense_frac, g_max, env_centre)
    for les in lesions:
        if les.params.get("distortion") is not None:
            _distort(g, les, cfg)  # before the pectoral blend: the muscle edge is not pulled in
    rows, cols = _grid_mm(cfg.height, s)[:, None], _grid_mm(cfg.width, s)[None, :]
    # Soft pectoral edge so the boundary is not aliased at coarse spacings; the CC sliver is a thin, tapering muscle
    # edge, so it fades in over a few mm instead of having the MLO's sharp fascia line.
    edge_mm = max(0.5, s) if view == "MLO" else max(4.0, s)
    pec_w = np.clip(geom.pectoral_depth(rows, cols) / edge_mm + 0.5, 0.0, 1.0) * breast
    g = g * (1.0 - pec_w) + pec_w * g_max * (pect_gland + 0.5 * cfg.pectoral_texture_amp * field)

    layers = _Layers.zeros((cfg.height, cfg.width))
    _render_anatomy(anatomy, cfg, layers, fine, breast)
    masks = np.zeros((2, cfg.height, cfg.width), dtype=bool)
    records = []
    for les in lesions:
        win, m = _render_mass(les, cfg, layers) if les.kind == "mass" else _render_cluster(les, cfg, layers)
        m = m & breast[win]
        masks[les.cls][win] |= m
        records.append(_lesion_record(les, m, win))

    total, skin_path = _skin_path(dist, geom.thickness_mm, geom.skin_mm)
    tissue = np.maximum(total - skin_path, 0.0)
    layer_f = cfg.gland_layer_fraction[_DENSITIES.index(density)]
    p = 0.1 * (skin_path * cfg.mu_gland + _tissue_path(cfg, g, tissue, layers, layer_f) + layers.extra_mu * breast)
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
    counts = {kind: sum(st.kind == kind for st in anatomy) for kind in ANATOMY_KINDS}
    counts["calcified_vessel"] = sum(st.kind == "vessel" and st.params["bac"] is not None for st in anatomy)
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
        "anatomy": counts,
    }
    return PhantomImage(image=img, masks=masks, breast_mask=breast, labels=labels, meta=meta)


def _tissue_path(cfg: PhantomConfig, g: np.ndarray, tissue: np.ndarray, layers: _Layers, layer_f: float) -> np.ndarray:
    """Attenuation path (mm/cm) through the breast's tissue and everything embedded in it (13.3, 13.4).

    Inclusions replace background tissue, so their contrast is what they displace, and together they displace at most
    90 % of a ray's tissue. What a mass displaces depends on where it sits along the beam, and that follows the
    breast's density as the BI-RADS atlas describes it (ACR BI-RADS Atlas, 5th ed., 2013, which also groups A and B as
    non-dense and C and D as dense breasts): ``layer_f`` is the glandular fraction of the tissue the mass displaces
    (``PhantomConfig.gland_layer_fraction`` of the breast's class).

    * Dense breasts (C "heterogeneously dense", D "extremely dense"): the fibroglandular tissue forms a layer between
      the subcutaneous and the retromammary fat; a mass arises in a terminal duct lobular unit inside that layer, so
      it displaces the layer (``layer_f`` = 0.7 gland: interspersed fat lobules) first and fat only beyond it.
      Iso-attenuating, it is nearly invisible by brightness and masked by the overlapping gland.
    * Non-dense breasts (A "almost entirely fatty", B "scattered areas of fibroglandular density"): the gland is
      sparse, scattered strands and lobules in fat, not a layer. A mass still arises in a lobule, but it outgrows that
      sparse tissue at once and is surrounded by fat (``layer_f`` = 0), so it is seen against fat, as readers see
      masses in fatty breasts: screening sensitivity is 87 % in almost entirely fatty breasts against 63 % in
      extremely dense ones (Carney et al., Ann. Intern. Med. 138:168, 2003), and before this rule (phantom 2.0, a
      70 %-gland layer in every breast) a mass in a fatty breast was no more conspicuous than one in an extremely
      dense breast.

    The displaced gland is ``layer_f`` x the mass's thickness, but never more than the ray's gland (``g`` x tissue)
    nor less than what the ray's fat cannot hold; for ``layer_f`` >= g this is the layer model of phantom 2.0 (a layer
    of ``g`` x tissue / ``layer_f`` mm). The mass stays iso-attenuating with gland (1.0-1.1x): only what it displaces
    changes. Its homogeneous interior also replaces textured tissue, so the texture inside its outline fades by the
    fraction of the ray it fills: in dense tissue a reader sees a mass by its smooth interior, outline, spicules and
    distortion.
    """
    mass_t = np.minimum(layers.mass_t, 0.9 * tissue)
    mass_mu = layers.mass_mu * (mass_t / np.maximum(layers.mass_t, 1e-6))
    if mass_t.any():
        filled = mass_t / np.maximum(tissue, 1e-6)  # in [0, 0.9]
        smooth = ndi.gaussian_filter(g, 2.0 / cfg.pixel_spacing_mm)
        g = smooth + (g - smooth) * (1.0 - filled)
    mu_bg = cfg.mu_fat + (cfg.mu_gland - cfg.mu_fat) * g
    gland_displaced = np.clip(layer_f * mass_t, np.maximum(mass_t - (1.0 - g) * tissue, 0.0), g * tissue)
    masses = mass_mu - gland_displaced * cfg.mu_gland - (mass_t - gland_displaced) * cfg.mu_fat
    soft_t = np.minimum(layers.soft_t, np.maximum(0.9 * tissue - mass_t, 0.0))
    soft = (layers.soft_mu * (soft_t / np.maximum(layers.soft_t, 1e-6))) - soft_t * mu_bg
    calc = layers.calc_t * (cfg.mu_calc - mu_bg)
    return tissue * mu_bg + masses + soft + calc  # type: ignore[no-any-return]


def _lesion_record(les: _Lesion, mask: np.ndarray, win: tuple[slice, slice]) -> dict[str, Any]:
    """The JSON description of a rendered lesion (``class``, ``type`` and ``diameter_mm`` are read by the reports)."""
    rec: dict[str, Any] = {
        "class": CLASSES[les.cls],
        "type": les.kind,
        "shape": les.shape,
        "diameter_mm": round(float(les.diameter_mm), 6),
        "center_xy_mm": [round(les.center_mm[1], 6), round(les.center_mm[0], 6)],
        "box_xyxy": _box(mask, win[1].start, win[0].start),
    }
    if les.kind == "mass":
        rec.update(
            margin=les.detail,
            density_factor=round(float(les.params["density"]), 6),
            halo_sign=bool(les.params["halo_sign"] > 0),
            architectural_distortion=les.params["distortion"] is not None,
        )
    else:
        rec.update(distribution=les.detail, n_calcifications=len(les.params["calcs"]))
    return rec
