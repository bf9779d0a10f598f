import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage as ndi
from scipy import stats

from wsseg.config import EvalConfig
from wsseg.core import CLASSES
from wsseg.data.phantom import (
    ANATOMY_KINDS,
    PHANTOM_VERSION,
    PhantomConfig,
    PhantomImage,
    _draw_cluster,
    _draw_mass,
    generate_image,
)
from wsseg.data.preview import save_preview
from wsseg.evaluation.summary import summarize
from wsseg.pipelines.scored import make_evaluator
from wsseg.registry import create_method

ROOT = Path(__file__).resolve().parents[2]
TINY = PhantomConfig.tiny()
VIEWS = [("CC", "L"), ("MLO", "L"), ("CC", "R"), ("MLO", "R")]


def _digest(img: PhantomImage) -> str:
    h = hashlib.sha256()
    for a in (img.image, img.masks, img.breast_mask, img.labels):
        h.update(a.tobytes())
    h.update(json.dumps(img.meta, sort_keys=True).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny_set() -> list[PhantomImage]:
    return [generate_image(TINY, 11, "train", i, *VIEWS[i % 4]) for i in range(200)]


def test_profiles() -> None:
    assert (PhantomConfig.quick().height, PhantomConfig.quick().width, PhantomConfig.quick().pixel_spacing_mm) == (
        736,
        480,
        0.4,
    )
    assert (PhantomConfig.paper().height, PhantomConfig.paper().width, PhantomConfig.paper().pixel_spacing_mm) == (
        2944,
        1920,
        0.1,
    )
    assert (TINY.height, TINY.width, TINY.pixel_spacing_mm) == (184, 120, 1.6)
    assert CLASSES == ("benign", "malignant")


def test_same_inputs_same_bytes() -> None:
    a = generate_image(TINY, 3, "val", 5, "MLO", "L")
    b = generate_image(TINY, 3, "val", 5, "MLO", "L")
    assert _digest(a) == _digest(b)


def test_same_bytes_across_processes() -> None:
    code = (
        "import hashlib, json\n"
        "from wsseg.data.phantom import PhantomConfig, generate_image\n"
        "im = generate_image(PhantomConfig.tiny(), 3, 'val', 5, 'MLO', 'L')\n"
        "h = hashlib.sha256()\n"
        "[h.update(a.tobytes()) for a in (im.image, im.masks, im.breast_mask, im.labels)]\n"
        "h.update(json.dumps(im.meta, sort_keys=True).encode())\n"
        "print(h.hexdigest())\n"
    )
    # Different hash seeds would expose any use of Python's salted hash().
    outs = [
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(s), "PATH": "/usr/bin:/bin"},
        ).stdout.strip()
        for s in (1, 2)
    ]
    assert outs[0] == outs[1] == _digest(generate_image(TINY, 3, "val", 5, "MLO", "L"))


def test_different_inputs_differ() -> None:
    base = generate_image(TINY, 3, "val", 5, "CC", "L")
    for other in (
        generate_image(TINY, 3, "val", 6, "CC", "L"),
        generate_image(TINY, 4, "val", 5, "CC", "L"),
        generate_image(TINY, 3, "test", 5, "CC", "L"),
    ):
        assert not np.array_equal(base.image, other.image)


def test_types_and_ranges(tiny_set: list[PhantomImage]) -> None:
    for img in tiny_set[:40]:
        assert img.image.dtype == np.uint16 and img.image.shape == (184, 120)
        assert img.masks.dtype == bool and img.masks.shape == (2, 184, 120)
        assert img.breast_mask.dtype == bool and img.breast_mask.shape == (184, 120)
        assert img.labels.dtype == np.float32 and img.labels.shape == (2,)
        assert int(img.image.max()) <= 4095
        assert (img.image[~img.breast_mask] == 0).all() and (img.image[img.breast_mask] > 0).all()
        assert img.breast_mask[:, 0].any() and not img.breast_mask[:, -1].any()  # chest wall at column 0
        json.dumps(img.meta)
        assert img.meta["phantom_version"] == PHANTOM_VERSION and img.meta["density"] in "ABCD"


def test_labels_match_masks_and_masks_inside_breast(tiny_set: list[PhantomImage]) -> None:
    for img in tiny_set:
        for k in range(2):
            assert img.labels[k] == float(img.masks[k].any())
            assert not (img.masks[k] & ~img.breast_mask).any()
        for les in img.meta["lesions"]:
            k = CLASSES.index(les["class"])
            x0, y0, x1, y1 = (int(v) for v in les["box_xyxy"])
            assert x1 - x0 >= TINY.min_lesion_px and y1 - y0 >= TINY.min_lesion_px
            assert img.masks[k, y0:y1, x0:x1].any()
        # Every drawn lesion is rendered, so the meta agrees with the labels.
        assert {les["class"] for les in img.meta["lesions"]} == {c for k, c in enumerate(CLASSES) if img.labels[k]}


def test_label_mix(tiny_set: list[PhantomImage]) -> None:
    labels = np.stack([img.labels for img in tiny_set])
    normal = float((labels.sum(axis=1) == 0).mean())
    assert 0.35 <= normal <= 0.65
    assert labels[:, 0].sum() >= 20 and labels[:, 1].sum() >= 20
    kinds = {(les["class"], les["type"]) for img in tiny_set for les in img.meta["lesions"]}
    assert kinds == {(c, t) for c in CLASSES for t in ("mass", "calcification")}
    densities = [img.meta["density"] for img in tiny_set]
    assert set(densities) == set("ABCD")


def test_pectoral_in_mlo_not_cc(tiny_set: list[PhantomImage]) -> None:
    mlo = [img.meta["pectoral_frac"] for img in tiny_set if img.meta["view"] == "MLO"]
    cc = [img.meta["pectoral_frac"] for img in tiny_set if img.meta["view"] == "CC"]
    assert min(mlo) > 0.02
    assert np.mean([f > 0 for f in cc]) < 0.5 and np.median(cc) == 0.0
    # The muscle is bright: the top-left corner of an MLO is brighter than the breast's median.
    img = next(i for i in tiny_set if i.meta["view"] == "MLO")
    assert np.median(img.image[:5, :3]) > np.median(img.image[img.breast_mask])


def test_lesion_size_is_physical() -> None:
    half = dataclasses.replace(TINY, height=368, width=240, pixel_spacing_mm=0.8)
    checked = 0
    for i in range(200):
        a = generate_image(TINY, 5, "train", i, "CC", "L")
        big = [les for les in a.meta["lesions"] if les["type"] == "mass" and les["diameter_mm"] >= 12]
        if len(a.meta["lesions"]) != 1 or not big:
            continue
        b = generate_image(half, 5, "train", i, "CC", "L")
        assert [les["diameter_mm"] for les in b.meta["lesions"]] == [big[0]["diameter_mm"]]
        assert b.meta["lesions"][0]["center_xy_mm"] == big[0]["center_xy_mm"]
        assert b.meta["anatomy"] == a.meta["anatomy"]  # the normal structures are part of the mm scene too
        ratio = b.masks.sum() / a.masks.sum()
        assert 3.0 < ratio < 5.2, ratio  # (1.6 / 0.8) ** 2 = 4
        checked += 1
        if checked == 3:
            break
    assert checked == 3


def test_quick_image_lesion_is_visible() -> None:
    # A quick-profile mass must raise the image inside its mask above its surroundings.
    cfg = dataclasses.replace(PhantomConfig.quick(), p_normal=0.0, p_calcification=0.0, p_second_lesion=0.0)
    img = generate_image(cfg, 2, "train", 0, "CC", "L")
    assert img.image.shape == (736, 480)
    les = img.meta["lesions"][0]
    x0, y0, x1, y1 = (int(v) for v in les["box_xyxy"])
    pad = max(x1 - x0, y1 - y0)
    mask = img.masks[CLASSES.index(les["class"])]
    ring = np.zeros_like(mask)
    ring[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad] = True
    ring &= ~mask & img.breast_mask
    assert img.image[mask].mean() > img.image[ring].mean()
    assert 5 / 0.4 * 0.9 <= max(x1 - x0, y1 - y0) <= 30 / 0.4 * 1.6


def test_bad_view_rejected() -> None:
    with pytest.raises(ValueError):
        generate_image(TINY, 0, "train", 0, "ML", "L")


def test_preview_grid(tmp_path: Path, tiny_set: list[PhantomImage]) -> None:
    items = [(img.image, img.masks, f"#{i}") for i, img in enumerate(tiny_set[:6])]
    out = save_preview(items, tmp_path / "sub" / "p.png", ncols=4, tile_height=92)
    assert out == tmp_path / "sub" / "p.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.size == (4 * 60, 2 * 92)  # 184x120 tiles scaled to 92 tall are 60 wide; 6 items -> 2 rows
        rgb = np.asarray(im)
    assert list(tmp_path.joinpath("sub").iterdir()) == [out]  # no temp file left behind
    # Lesion outlines are drawn in their class colours.
    if any(img.labels[1] for img in tiny_set[:6]):
        assert ((rgb[..., 0] > 200) & (rgb[..., 1] < 80)).any()
    if any(img.labels[0] for img in tiny_set[:6]):
        assert ((rgb[..., 1] > 200) & (rgb[..., 0] < 80)).any()


def test_lesion_meta_describes_morphology(tiny_set: list[PhantomImage]) -> None:
    lesions = [les for img in tiny_set for les in img.meta["lesions"]]
    for les in lesions:
        assert {"class", "type", "diameter_mm", "shape"} <= set(les)
        if les["type"] == "mass":
            # Iso-attenuating for both classes (M-SYNTH: 1.0-1.1 x glandular): brightness does not give the class.
            assert 1.0 <= les["density_factor"] <= 1.1
            if les["class"] == "benign":
                assert les["margin"] == "circumscribed" and les["shape"] in ("round", "oval", "lobulated")
                assert not les["architectural_distortion"]
            else:
                assert les["margin"] in ("indistinct", "spiculated") and les["shape"] == "irregular"
                assert les["architectural_distortion"]
        else:
            assert les["n_calcifications"] >= 5  # BI-RADS: a group is at least 5 calcifications
            if les["class"] == "benign":
                assert les["shape"] in ("round", "punctate") and les["distribution"] == "grouped"
            else:
                assert les["shape"] in ("fine pleomorphic", "fine-linear", "fine-linear branching")
    margins = {les.get("margin") for les in lesions if les["class"] == "malignant"}
    assert margins == {"indistinct", "spiculated", None}
    assert {les.get("distribution") for les in lesions if les["class"] == "malignant"} >= {"grouped", "linear"}


def test_mass_mask_matches_its_diameter() -> None:
    cfg = dataclasses.replace(PhantomConfig.quick(), p_normal=0.0, p_calcification=0.0, p_second_lesion=0.0)
    for i in range(6):
        img = generate_image(cfg, 4, "train", i, *VIEWS[i % 4])
        (les,) = img.meta["lesions"]
        area_mm2 = img.masks[CLASSES.index(les["class"])].sum() * cfg.pixel_spacing_mm**2
        equivalent = 2.0 * np.sqrt(area_mm2 / np.pi)
        # Axis ratio 0.6-1 and boundary harmonics make the outline's area differ from the nominal circle's.
        assert 0.55 * les["diameter_mm"] <= equivalent <= 1.2 * les["diameter_mm"], (les, equivalent)


def _truncated_lognormal_cdf(law: tuple[float, float, float, float]) -> object:
    median, gsd, lo, hi = law
    dist = stats.lognorm(s=np.log(gsd), scale=median)
    a, b = dist.cdf(lo), dist.cdf(hi)
    return lambda x: (dist.cdf(np.clip(x, lo, hi)) - a) / (b - a)


@pytest.mark.parametrize("kind", ["mass", "calcification"])
@pytest.mark.parametrize("cls", [0, 1])
def test_lesion_sizes_follow_the_cited_laws(kind: str, cls: int) -> None:
    cfg = PhantomConfig()
    rng = np.random.default_rng(0)
    draw = _draw_mass if kind == "mass" else _draw_cluster
    sizes = np.array([draw(cfg, rng, cls).diameter_mm for _ in range(1500)])
    if kind == "mass":
        law = cfg.mass_size_malignant if cls else cfg.mass_size_benign
    else:
        law = cfg.cluster_size_malignant if cls else cfg.cluster_size_benign
    assert stats.kstest(sizes, _truncated_lognormal_cdf(law)).pvalue > 0.01
    assert law[2] <= sizes.min() and sizes.max() <= law[3]
    if kind == "mass" and cls == 1:
        # Wang et al. 2020 (median 14 mm, geometric sd 1.93): about 30 % of screen-detected cancers under 10 mm.
        assert 0.25 <= float(np.mean(sizes < 10.0)) <= 0.36
        assert 12.5 <= float(np.median(sizes)) <= 15.5


def test_every_normal_structure_is_drawn(tiny_set: list[PhantomImage]) -> None:
    totals = {kind: sum(img.meta["anatomy"][kind] for img in tiny_set) for kind in ANATOMY_KINDS}
    assert all(n > 0 for n in totals.values()), totals
    for img in tiny_set:
        counts = img.meta["anatomy"]
        # Every breast, with or without a lesion, holds dense islands and vessels.
        assert counts["island"] >= 1 and counts["vessel"] >= 2
        if img.meta["view"] == "CC":
            assert counts["axillary_node"] == 0  # the axilla is shown in MLO views only
    mlo = [img.meta["anatomy"]["axillary_node"] > 0 for img in tiny_set if img.meta["view"] == "MLO"]
    assert np.mean(mlo) > 0.6


def test_a_calcified_vessel_span_shorter_than_one_sample_is_skipped() -> None:
    # Quick-profile test image 568 (seed 0, CC, L) has a calcified vessel span that holds one wall sample: it used to
    # stop generation with numpy's "Shape of array too small to calculate a numerical gradient".
    img = generate_image(PhantomConfig.quick(), 0, "test", 568, "CC", "L")
    assert img.meta["anatomy"]["calcified_vessel"] >= 1
    assert img.image[img.breast_mask].min() >= 1


def test_lesion_free_breasts_hold_bright_structures() -> None:
    # The same lesion-free scene with and without its normal structures: they add bright spots to every breast.
    base = dataclasses.replace(PhantomConfig.quick(), p_normal=1.0)
    none = dataclasses.replace(
        base, island_count=(0, 0), p_intramammary_node=0.0, p_axillary_nodes=0.0, p_mole=0.0, p_marker=0.0
    )
    for i in range(4):
        with_structures = generate_image(base, 8, "train", i, *VIEWS[i])
        assert not with_structures.masks.any() and with_structures.meta["lesions"] == []
        without = generate_image(none, 8, "train", i, *VIEWS[i])
        breast = with_structures.breast_mask
        brighter = with_structures.image.astype(float) - without.image.astype(float)
        # Islands alone cover at least a few square millimetres with a visible brightening.
        assert (brighter[breast] > 100).sum() * 0.4**2 > 20.0


def test_brightness_alone_does_not_find_lesions(tiny_set: list[PhantomImage]) -> None:
    # The intensity prior scored through the evaluator with the threshold that is best on these very images (an
    # upper bound): with masses at 2x glandular attenuation (phantom 1) it reaches 20-30x the uniform floor here.
    # Phantom 2.1 reaches 7.7x (benign) and 6.1x (malignant): masses in fatty and scattered (BI-RADS A, B) breasts are
    # surrounded by fat and seen against it, as in mammograms (phantom 2.0, which masked them in gland in every
    # breast, stayed under 5x). The bound keeps phantom 1's shortcut out, not the issue's 2x (the issue 17 study).
    intensity = create_method("intensity", profile="tiny").eval()
    evaluators = {name: make_evaluator(EvalConfig(bootstrap_resamples=0)) for name in ("intensity", "uniform")}
    for i, img in enumerate(tiny_set[:120]):
        x = img.image.astype(np.float32)
        x = (x - x.mean()) / x.std()
        with torch.no_grad():
            out = intensity(torch.from_numpy(x)[None, None])
        masks, breast = torch.from_numpy(img.masks), torch.from_numpy(img.breast_mask)
        common = {"spacing_mm": TINY.pixel_spacing_mm, "image_labels": img.labels}
        evaluators["intensity"].add(str(i), out.saliency[0], masks, breast, image_scores=out.logits[0], **common)
        evaluators["uniform"].add(str(i), breast[None].float().expand(2, -1, -1), masks, breast, **common)
    metrics = {name: summarize(ev.stats(), ev.calibrated_thresholds()) for name, ev in evaluators.items()}
    for cls in CLASSES:
        assert metrics["intensity"][cls]["dice"] <= 10.0 * metrics["uniform"][cls]["dice"], metrics
        assert metrics["intensity"][cls]["pointing_game_10mm"] <= 0.25, metrics


def _mass_cnr(img: PhantomImage) -> float:
    """Smoothed contrast-to-noise of the image's one mass against the breast 1-2 equivalent radii around it."""
    mask = img.masks.any(axis=0)
    r = float(np.sqrt(mask.sum() / np.pi))
    dist = ndi.distance_transform_edt(~mask)
    ring = (dist > 2.5) & (dist <= 2.5 + r) & img.breast_mask
    x = ndi.gaussian_filter(img.image.astype(np.float64), max(r / 2.0, 0.5))
    # A plane fitted on the ring is removed first: the thickness ramp toward the skin line is not noise.
    ring_xy, mask_xy = (np.stack([np.ones(m.sum()), *np.nonzero(m)], axis=1) for m in (ring, mask))
    coef, *_ = np.linalg.lstsq(ring_xy, x[ring], rcond=None)
    inside, around = x[mask] - mask_xy @ coef, x[ring] - ring_xy @ coef
    return float((inside.mean() - around.mean()) / around.std())


def test_masses_are_more_conspicuous_in_fatty_than_in_extremely_dense_breasts() -> None:
    # Carney et al. 2003: screening finds 87 % of cancers in almost entirely fatty breasts, 63 % in extremely dense
    # ones. The same scenes (one mass each) drawn as BI-RADS A and as D: in A the mass displaces fat and is seen
    # against it, in D it displaces a 70 %-gland layer and overlapping gland masks it (phantom 2.0, which sat every
    # mass in that layer, gave medians 1.86 and 1.89 here, A above D in 9 of 24 scenes).
    base = dataclasses.replace(PhantomConfig.quick(), p_normal=0.0, p_calcification=0.0, p_second_lesion=0.0)
    fatty = dataclasses.replace(base, density_probs=(1.0, 0.0, 0.0, 0.0))
    dense = dataclasses.replace(base, density_probs=(0.0, 0.0, 0.0, 1.0))
    cnr_a, cnr_d = [], []
    for i in range(24):
        a, d = (generate_image(cfg, 5, "test", i, *VIEWS[i % 4]) for cfg in (fatty, dense))
        assert a.meta["density"] == "A" and d.meta["density"] == "D"
        assert a.meta["lesions"][0]["center_xy_mm"] == d.meta["lesions"][0]["center_xy_mm"]  # the same mass
        cnr_a.append(_mass_cnr(a))
        cnr_d.append(_mass_cnr(d))
    assert np.median(cnr_a) > 1.2 * np.median(cnr_d), (cnr_a, cnr_d)
    assert np.mean(np.asarray(cnr_a) > np.asarray(cnr_d)) >= 0.75, (cnr_a, cnr_d)
