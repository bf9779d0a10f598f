"""Data sources on native-layout fixtures: counts, labels, orientation, mask alignment and bad input."""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wsseg.cli import app
from wsseg.data.dataset import MammogramDataset
from wsseg.data.fixtures import Phantom, phantom, save_mask, write_manifest, write_mias, write_nyu
from wsseg.data.prepare import assign_splits, check_source, prepare_source
from wsseg.data.preprocess import Transform, breast_region, plan_transform
from wsseg.data.sources import DataError, get_source, list_sources

OUT_HW = (184, 120)  # the tiny profile's window
runner = CliRunner()


def samples(root: Path, dataset: str) -> dict[str, dict]:
    """Every cached sample of every split, by image id."""
    out = {}
    for split in ("train", "val", "test"):
        ds = MammogramDataset(root, split, with_masks=True, dataset=dataset)
        for i in range(len(ds)):
            s = ds[i]
            out[s["meta"]["image_id"]] = {**s, "split": split}
    return out


def assert_canonical(sample: dict) -> None:
    """Chest wall at column 0: the breast touches column 0 and lies mostly in the left half."""
    breast = sample["breast_mask"].numpy()
    assert breast[:, 0].any()
    assert np.nonzero(breast)[1].mean() < breast.shape[1] / 2


def assert_aligned(sample: dict, ph: Phantom) -> None:
    """The lesion drawn at a known native place lands where the recorded transform sends it, on the bright disc."""
    tf = Transform.from_dict(sample["meta"]["transform"])
    (r, c), rad = ph.center, ph.radius
    expected = tf.box_to_window((c - rad, r - rad, c + rad + 1, r + rad + 1))
    mask = sample["masks"].any(0).numpy()
    rows, cols = np.nonzero(mask)
    got = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    np.testing.assert_allclose(got, expected, atol=tf.scale + 1)
    img = sample["image"][0].numpy()
    rest = sample["breast_mask"].numpy() & ~mask
    assert img[mask].mean() > img[rest].mean() + 1.0
    native = ph.lesion.copy()
    if sample["meta"]["annotation"] == "box":  # the truth is the box around the disc
        native[r - rad : r + rad + 1, c - rad : c + rad + 1] = True
    back = tf.to_original(mask, is_mask=True)  # and maps back onto the native lesion
    iou = (back & native).sum() / (back | native).sum()
    assert iou > 0.7


def test_registry_lists_the_sources() -> None:
    assert {"manifest", "mini-mias", "nyu"} <= set(list_sources())
    src = get_source("mini-mias")
    assert src.annotation == "circle" and src.label_source == "pathology" and "research" in src.licence
    with pytest.raises(KeyError, match="unknown dataset 'nope'.*manifest"):
        get_source("nope")


def test_breast_region_drops_the_film_label_and_flips_right_breasts() -> None:
    for right in (False, True):
        ph = phantom(chest_wall_right=right)
        breast = breast_region(ph.image)
        assert not breast[-4:-1, :].any() or breast[-4:-1, 5:-5].sum() == 0  # the label corner is gone
        tf = plan_transform(ph.image, breast, OUT_HW)
        assert tf.flipped == right and tf.offset[1] == 0


def test_manifest_end_to_end(tmp_path: Path) -> None:
    truth = write_manifest(tmp_path / "dl", n_patients=6)
    root, report = prepare_source(
        "manifest", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "cache", workers=1, progress=False
    )
    assert report.problems == [] and sum(report.counts.values()) == 12
    got = samples(root, "manifest")
    assert set(got) == set(truth)
    for image_id, s in got.items():
        lat = image_id[-1]
        assert s["labels"].tolist() == ([1.0, 0.0] if lat == "L" else [0.0, 1.0])
        assert s["meta"]["transform"]["flipped"] == (lat == "R")
        assert s["image"].shape == (1, *OUT_HW) and s["masks"].shape == (2, *OUT_HW)
        assert_canonical(s)
        assert_aligned(s, truth[image_id])
    # Spacing: from the DICOM header (0.07 mm) or assumed (0.1 mm), scaled to the window.
    assert (
        got["p0-R"]["meta"]["pixel_spacing_source"] == "dicom"
        and got["p0-L"]["meta"]["pixel_spacing_source"] == "assumed"
    )
    tf = Transform.from_dict(got["p0-R"]["meta"]["transform"])
    assert got["p0-R"]["meta"]["pixel_spacing_mm"] == pytest.approx(0.07 / tf.scale)
    # The MONOCHROME1 DICOM was inverted (its lesion is bright) and its box annotation recorded as such.
    assert got["p0-R"]["meta"]["annotation"] == "box" and got["p0-L"]["meta"]["annotation"] == "mask"
    # Patient-level split: both views of a patient share a split.
    for p in range(6):
        assert got[f"p{p}-L"]["split"] == got[f"p{p}-R"]["split"]
    # A second prepare reuses the cache.
    again, _ = prepare_source("manifest", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "cache", progress=False)
    assert again == root


def test_published_split_file_is_written_and_honoured(tmp_path: Path) -> None:
    write_manifest(tmp_path / "dl", n_patients=6)
    root, _ = prepare_source("manifest", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False)
    with open(root / "split.csv", newline="") as f:
        split = {r["patient_id"]: r["split"] for r in csv.DictReader(f)}
    assert len(split) == 6 and set(split.values()) == {"train", "val", "test"}
    moved = next(p for p, s in split.items() if s == "train")
    (tmp_path / "split.csv").write_text(f"patient_id,split\n{moved},test\n")
    root2, _ = prepare_source(
        "manifest",
        tmp_path / "dl",
        OUT_HW,
        cache_dir=tmp_path / "c",
        workers=1,
        progress=False,
        split_file=tmp_path / "split.csv",
    )
    assert root2 != root  # the split file keys the cache
    got = samples(root2, "manifest")
    assert got[f"{moved.lower()}-L"]["split"] == "test" == got[f"{moved.lower()}-R"]["split"]
    (tmp_path / "split.csv").write_text(f"patient_id,split\n{moved},holdout\n")
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        prepare_source(
            "manifest",
            tmp_path / "dl",
            OUT_HW,
            cache_dir=tmp_path / "c",
            progress=False,
            split_file=tmp_path / "split.csv",
        )


def test_interrupted_prepare_resumes_and_odd_ids_are_safe(tmp_path: Path) -> None:
    write_manifest(tmp_path / "dl", n_patients=6)
    _edit_manifest(tmp_path / "dl" / "manifest.csv", "p3-L", image_id="../p3 L")
    root, _ = prepare_source("manifest", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert "../p3 L" in samples(root, "manifest")
    assert all(p.parent.parent == root for p in root.rglob("*.npz"))  # nothing escaped the cache folder
    (root / "manifest.csv").unlink()  # as if killed before the manifest: the images are reused
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.npz")}
    again, report = prepare_source("manifest", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", progress=False)
    assert again == root and sum(report.counts.values()) == 12
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.npz")} == before


def test_phantom_anatomy_round_trip(tmp_path: Path) -> None:
    """wsseg's textured phantom, written natively (right breasts mirrored): the content-based flip finds every
    chest wall, and each lesion mask maps back onto the native mask it came from."""
    from wsseg.data.fixtures import write_phantom_manifest

    truth = write_phantom_manifest(tmp_path / "dl", n_images=16)
    root, report = prepare_source(
        "manifest", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False
    )
    assert report.problems == [] and report.orientation_disagreements == []
    got = samples(root, "manifest")
    assert len(got) == 16
    for image_id, s in got.items():
        img = truth[image_id]
        assert s["meta"]["transform"]["flipped"] == (s["meta"]["laterality"] == "R")
        assert s["labels"].tolist() == img.labels.tolist()
        assert_canonical(s)
        tf = Transform.from_dict(s["meta"]["transform"])
        for k in range(2):
            if not img.masks[k].any():
                assert not s["masks"][k].any()
                continue
            native = img.masks[k][:, ::-1] if s["meta"]["laterality"] == "R" else img.masks[k]
            back = tf.to_original(s["masks"][k].numpy(), is_mask=True)
            assert (back & native).sum() / (back | native).sum() > 0.6, image_id


def _edit_manifest(path: Path, which: str, **changes: str) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if r["image_id"] == which:
            r.update(changes)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_bad_input_is_reported_skipped_or_fatal_in_strict(tmp_path: Path) -> None:
    dl = tmp_path / "dl"
    write_manifest(dl, n_patients=6, dicom_monochrome1=False)
    # Damage two training patients, so that the lenient prepare still has every split.
    splits = assign_splits(get_source("manifest").scan(dl).records, seed=0)
    a, b = sorted({i.split("-")[0] for i, s in splits.items() if s == "train"})[:2]
    png = dl / "images" / f"{a}-L.png"
    png.write_bytes(png.read_bytes()[:80])  # truncated image
    (dl / "masks" / f"{a}-R_malignant.png").unlink()  # missing mask
    _edit_manifest(dl / "manifest.csv", f"{b}-L", benign="2")  # unknown label
    save_mask(dl / "masks" / f"{b}-R_malignant.png", np.ones((32, 32), bool))  # wrong-size mask
    report = check_source("manifest", dl, OUT_HW, workers=1)
    assert sum(report.counts.values()) == 8 and len(report.problems) == 4
    text = "\n".join(str(p) for p in report.problems)
    assert f"{a}-L.png" in text and "truncated" in text
    assert f"{a}-R_malignant.png" in text and "missing" in text
    assert "manifest.csv:" in text and "unknown label '2'" in text and "write 0 or 1" in text
    assert f"{b}-R_malignant.png" in text and "32x32" in text
    with pytest.raises(DataError, match="4 problem"):
        check_source("manifest", dl, OUT_HW, workers=1, strict=True)
    root, rep = prepare_source("manifest", dl, OUT_HW, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert len(rep.problems) == 4 and len(samples(root, "manifest")) == 8
    saved = json.loads((root / "report.json").read_text())
    assert len(saved["skipped"]) == 4


def test_truncated_dicom_and_missing_decoder_are_clear(tmp_path: Path) -> None:
    from wsseg.data.fixtures import save_dicom
    from wsseg.data.imageio import read_image

    path = tmp_path / "a.dcm"
    save_dicom(path, phantom(False).image, monochrome1=True)
    assert read_image(path).max() > 0
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(DataError, match=r"a\.dcm: cannot decode the pixel data.*download it again"):
        read_image(path)
    with pytest.raises(DataError, match="missing"):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"])  # RLE, JPEG 2000 lossless
def test_compressed_dicom_decodes(tmp_path: Path, syntax: str) -> None:
    from wsseg.data.fixtures import save_dicom
    from wsseg.data.imageio import read_image

    pytest.importorskip("openjpeg") if syntax.endswith(".90") else None
    img = phantom(False).image
    save_dicom(tmp_path / "plain.dcm", img, monochrome1=True)
    save_dicom(tmp_path / "packed.dcm", img, monochrome1=True, syntax=syntax)
    np.testing.assert_array_equal(read_image(tmp_path / "packed.dcm"), read_image(tmp_path / "plain.dcm"))


def test_pixel_padding_becomes_background(tmp_path: Path) -> None:
    from wsseg.data.fixtures import save_dicom
    from wsseg.data.imageio import read_image

    ph = phantom(False)
    # MONOCHROME2 with a bright padding value: unhandled, the padding would be the largest bright component.
    save_dicom(tmp_path / "a.dcm", ph.image, padding=4095)
    img = read_image(tmp_path / "a.dcm")
    assert img[ph.image == 0].max() <= img[ph.image > 0].min()
    breast = breast_region(img)
    assert breast[:, 0].any() and not breast[0, :].all()


def test_missing_decoder_names_the_package(tmp_path: Path) -> None:
    import pydicom

    from wsseg.data.fixtures import save_dicom
    from wsseg.data.imageio import read_image

    save_dicom(tmp_path / "a.dcm", phantom(False).image, syntax="1.2.840.10008.1.2.5")
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.70"  # JPEG Lossless SV1: no MIT decoder installed
    ds.save_as(tmp_path / "a.dcm")
    try:
        import libjpeg  # noqa: F401

        pytest.skip("pylibjpeg-libjpeg is installed")
    except ImportError:
        pass
    with pytest.raises(
        DataError, match=r"no decoder for transfer syntax 1\.2\.840\.10008\.1\.2\.4\.70.*pip install python-gdcm"
    ):
        read_image(tmp_path / "a.dcm")


def test_mini_mias(tmp_path: Path) -> None:
    from wsseg.data.fixtures import MIAS_OUTSIDE_BREAST, MIAS_OUTSIDE_RC, MIAS_UNLOCATED_LINES

    truth = write_mias(tmp_path / "dl", n_pairs=6)
    root, report = prepare_source(
        "mini-mias", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False
    )
    assert report.problems == [] and report.orientation_disagreements == []
    got = samples(root, "mini-mias")
    assert len(got) == 12
    for ref, s in got.items():
        n = int(ref[3:])
        assert s["meta"]["laterality"] == ("R" if n % 2 else "L")
        assert s["meta"]["patient_id"] == f"mias-p{(n + 1) // 2:03d}"
        assert_canonical(s)
        if n in MIAS_UNLOCATED_LINES:  # labelled, no location (4 tokens or *NOTE 3*): label-only, empty mask
            sev = MIAS_UNLOCATED_LINES[n].split()[3]
            assert s["labels"].tolist() == ([0.0, 1.0] if sev == "M" else [1.0, 0.0]) and not s["masks"].any()
            assert s["meta"]["localized"] == ([True, False] if sev == "M" else [False, True])
            continue
        if n == MIAS_OUTSIDE_BREAST:  # a benign circle in the air beside the breast: kept, region grown around it
            assert s["labels"].tolist() == [1.0, 0.0] and s["meta"]["localized"] == [True, True]
            assert s["meta"]["region_grown"] and s["meta"]["lesions"][0]["outside_breast"] == 1.0
            mask = s["masks"][0].numpy()
            assert mask.any() and (mask <= s["breast_mask"].numpy()).all()  # inside the evaluated region
            tf = Transform.from_dict(s["meta"]["transform"])
            back = tf.to_original(mask, is_mask=True)
            rows, cols = np.nonzero(back)
            assert abs(rows.mean() - MIAS_OUTSIDE_RC[0]) < 3 and abs(cols.mean() - MIAS_OUTSIDE_RC[1]) < 3
            continue
        assert not s["meta"]["region_grown"]
        if n % 3 == 0:
            assert s["labels"].tolist() == [0.0, 0.0] and not s["masks"].any()
            assert s["meta"]["localized"] == [True, True]  # normal: lesion-free for both classes
            continue
        expected = [1.0, 1.0] if n == 1 else ([0.0, 1.0] if n % 2 else [1.0, 0.0])
        assert s["labels"].tolist() == expected
        # mdb001's second line (CALC B, 4 tokens) has no location: benign label-only, malignant located.
        assert s["meta"]["localized"] == ([False, True] if n == 1 else [True, True])
        assert_aligned(s, truth[ref])  # the bottom-left origin was turned into a row from the top
    kinds = [les["kind"] for les in got["mdb001"]["meta"]["lesions"]]
    assert sorted(kinds) == ["circle", "none"]  # the 4-token CALC line: labelled, not localised
    assert sorted(report.label_only) == ["mdb001 (benign)", "mdb059 (benign)", "mdb233 (malignant)"]
    assert report.outside_breast == ["mdb212 (benign circle, 100% outside)"] and report.region_grown == 1
    # Labelled images with a located lesion: mdb001 (its malignant circle), the CIRC images and mdb212.
    located = [
        i for i, s in got.items() if any(f and ok for f, ok in zip(s["labels"], s["meta"]["localized"], strict=True))
    ]
    assert report.n_located == len(located)
    for split in ("train", "val", "test"):
        in_split = [s for s in got.values() if s["split"] == split]
        assert report.labels[split] == {
            "benign": sum(int(s["labels"][0]) for s in in_split),
            "malignant": sum(int(s["labels"][1]) for s in in_split),
            "normal": sum(not s["labels"].any() for s in in_split),
        }


def test_mini_mias_full_table_keeps_all_322_images(tmp_path: Path) -> None:
    """The 322-image fixture has the real table's lines without a location; check reports and names them."""
    write_mias(tmp_path / "dl", n_pairs=161)
    result = runner.invoke(app, ["data", "check", "mini-mias", "--root", str(tmp_path / "dl"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("mini-mias: 322 usable images"), result.output
    assert "322 images," in lines[1] and "5 labelled without location" in lines[1], result.output
    label_only = next(line for line in lines if line.startswith("label-only"))
    # The real ids (mdb059's 4-token line, the three *NOTE 3* lines) and the fixture's own mdb001 trap.
    names = ("mdb001 (benign)", "mdb059 (benign)", "mdb216 (malignant)", "mdb233 (malignant)", "mdb245 (malignant)")
    assert all(name in label_only for name in names), label_only
    assert "mdb212 (benign circle, 100% outside)" in result.output and "skipped" not in result.output


def test_nyu_exam_list(tmp_path: Path) -> None:
    truth = write_nyu(tmp_path / "dl", n_exams=4)
    root, report = prepare_source("nyu", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert report.problems == [] and report.orientation_disagreements == []
    got = samples(root, "nyu")
    assert len(got) == 16
    for name, s in got.items():
        assert_canonical(s)
        if name.split("_")[1].startswith("L"):
            assert s["labels"].tolist() == [0.0, 1.0]
            assert_aligned(s, truth[name])
        else:
            assert s["labels"].tolist() == [0.0, 0.0] and not s["masks"].any()
    for i in range(4):  # an exam never straddles splits
        assert len({got[f"{i}_{v}"]["split"] for v in ("L-CC", "R-CC", "L-MLO", "R-MLO")}) == 1


def test_nyu_horizontal_flip_yes(tmp_path: Path) -> None:
    write_nyu(tmp_path / "dl", n_exams=3, horizontal_flip="YES")
    report = check_source("nyu", tmp_path / "dl", OUT_HW, workers=1)
    assert report.problems == [] and report.orientation_disagreements == []


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.target,))


def test_nyu_refuses_a_pickle_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "exam_list_before_cropping.pkl").write_bytes(pickle.dumps([{"x": _Evil(str(marker))}], protocol=3))
    with pytest.raises(DataError, match="refused to load the global posix.mkdir"):
        get_source("nyu").scan(tmp_path)
    assert not marker.exists()
    result = runner.invoke(app, ["data", "check", "nyu", "--root", str(tmp_path)])
    assert result.exit_code == 2 and "never runs code" in result.output and not marker.exists()


def test_official_split_gets_a_validation_carve_out() -> None:
    from wsseg.data.sources import SourceRecord

    recs = [
        SourceRecord(f"i{p}", f"P{p}", f"P{p}", "L", "CC", (0, 0), Path("x"), split="test" if p < 3 else "train")
        for p in range(12)
    ]
    splits = assign_splits(recs, seed=0)
    assert [splits[f"i{p}"] for p in range(3)] == ["test"] * 3
    assert sorted(set(splits.values())) == ["test", "train", "val"]
    assert assign_splits(recs, seed=0) == splits


def test_cli_list_check_prepare_and_run(tmp_path: Path) -> None:
    write_manifest(tmp_path / "dl", n_patients=6)
    result = runner.invoke(app, ["list", "datasets"])
    assert result.exit_code == 0
    for word in ("phantom", "manifest", "mini-mias", "nyu", "circle", "research use only"):
        assert word in result.output
    result = runner.invoke(app, ["data", "check", "manifest", "--root", str(tmp_path / "dl")])
    assert result.exit_code == 0 and "12 usable images" in result.output, result.output
    result = runner.invoke(app, ["data", "prepare", "manifest", "--profile", "tiny"])
    assert result.exit_code == 2 and "needs --root" in result.output
    result = runner.invoke(app, ["data", "prepare", "nope", "--root", str(tmp_path)])
    assert result.exit_code == 2 and "unknown dataset 'nope'" in result.output
    cache = tmp_path / "cache"
    args = [
        "data",
        "prepare",
        "manifest",
        "--root",
        str(tmp_path / "dl"),
        "--profile",
        "tiny",
        "--cache-dir",
        str(cache),
        "--workers",
        "2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "184x120" in result.output, result.output
    args = [
        "run",
        "--method",
        "cam",
        "--profile",
        "tiny",
        "--dataset",
        "manifest",
        "--data-root",
        str(tmp_path / "dl"),
        "--cache-dir",
        str(cache),
        "--out",
        str(tmp_path / "runs"),
        "-q",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (record_path,) = (tmp_path / "runs").glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["dataset"] == "manifest" and record["dataset_info"]["counts"] == {"train": 8, "val": 2, "test": 2}
    assert record["dataset_info"]["label_source"] == "user"


def test_cbis_ddsm(tmp_path: Path) -> None:
    from wsseg.data.fixtures import write_cbis

    truth = write_cbis(tmp_path / "dl")
    root, report = prepare_source(
        "cbis-ddsm", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False
    )
    # The one wrong-size ROI mask is reported with both sizes and skipped; nothing else is lost.
    (problem,) = report.problems
    assert "Mass-Training_P_00003_LEFT_CC_1" in problem.file and "66x48" in problem.reason
    got = samples(root, "cbis-ddsm")
    assert len(got) == 9 and "Mass-Training_P_00003_LEFT_CC" not in got
    # Two abnormalities on one image: both classes; calc crop/mask columns swapped: the mask is still found.
    assert got["Mass-Training_P_00001_LEFT_CC"]["labels"].tolist() == [1.0, 1.0]
    assert got["Calc-Training_P_00001_LEFT_CC"]["labels"].tolist() == [1.0, 0.0]
    # The patient in mass-train and calc-test goes to test whole; official test stays test.
    assert got["Mass-Training_P_00002_RIGHT_CC"]["split"] == "test" == got["Calc-Test_P_00002_RIGHT_CC"]["split"]
    assert got["Mass-Test_P_00006_LEFT_CC"]["split"] == "test"
    assert {s["split"] for s in got.values()} == {"train", "val", "test"}
    for subject, s in got.items():
        assert s["meta"]["transform"]["flipped"] == ("RIGHT" in subject)
        assert_canonical(s)
        assert_aligned(s, truth[subject])


def test_vindr_mammo(tmp_path: Path) -> None:
    from wsseg.data.fixtures import write_vindr

    truth = write_vindr(tmp_path / "dl", n_studies=5)
    scan = get_source("vindr-mammo").scan(tmp_path / "dl")
    clipped = [les.box for r in scan.records for les in r.lesions if r.image_id[8:12] == "RMLO"]
    assert clipped and all(b is not None and b[0] == 0.0 for b in clipped)  # xmin -6.25 clipped to the image
    root, report = prepare_source(
        "vindr-mammo", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False
    )
    assert report.problems == [] and report.orientation_disagreements == []
    got = samples(root, "vindr-mammo")
    assert len(got) == 20
    assert {got[i]["split"] for i in got if i.startswith("00000004")} == {"test"}  # the official test study
    for image_id, s in got.items():
        study, lat = int(image_id[:8], 16), image_id[8]
        assert_canonical(s)
        assert s["meta"]["annotation"] == "box" and s["meta"]["label_source"] == "birads"
        if lat == "L" and study % 2 == 0:  # BI-RADS 4 mass box (one is a MONOCHROME1 image); skin finding ignored
            assert s["labels"].tolist() == [0.0, 1.0]
            assert_aligned(s, truth[image_id])
            assert len(s["meta"]["lesions"]) == 1 and "Suspicious Calcification" in s["meta"]["lesions"][0]["type"]
        elif lat == "R" and image_id[9:12] == "0CC" and study % 2 == 0:  # an unmirrored box on a right breast
            assert s["labels"].tolist() == [0.0, 1.0] and s["meta"]["transform"]["flipped"]
            assert_aligned(s, truth[image_id])
        elif lat == "R" and image_id[9:12] == "MLO" and study % 2 == 1:
            assert s["labels"].tolist() == [1.0, 0.0]
        elif lat == "L" and image_id[9:12] == "MLO" and study == 1:  # a BI-RADS 4 finding without a box
            assert s["labels"].tolist() == [0.0, 1.0] and not s["masks"].any()
            assert s["meta"]["localized"] == [True, False] and s["meta"]["lesions"][0]["kind"] == "none"
        else:
            assert s["labels"].tolist() == [0.0, 0.0] and not s["masks"].any()


def test_vindr_size_mismatch_is_reported(tmp_path: Path) -> None:
    from wsseg.data.fixtures import write_vindr

    write_vindr(tmp_path, n_studies=5)
    text = (tmp_path / "breast-level_annotations.csv").read_text().splitlines()
    cells = text[1].split(",")
    cells[5] = "70"  # height of the first image in the table no longer matches its DICOM
    (tmp_path / "breast-level_annotations.csv").write_text("\n".join([text[0], ",".join(cells), *text[2:]]) + "\n")
    report = check_source("vindr-mammo", tmp_path, OUT_HW, workers=1)
    (problem,) = report.problems
    assert problem.file.endswith(f"{cells[2]}.dicom") and "64x48 but the annotation table says 70x48" in problem.reason


def test_inbreast(tmp_path: Path) -> None:
    from wsseg.data.fixtures import PECTORAL_IMAGE, write_inbreast

    truth = write_inbreast(tmp_path / "dl", n_patients=6)
    root, report = prepare_source(
        "inbreast", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False
    )
    assert report.problems == []
    got = samples(root, "inbreast")
    assert len(got) == 12
    expected = {"4a": [0.0, 1.0], "2": [1.0, 0.0], "1": [0.0, 0.0], "5": [0.0, 1.0], "3": [1.0, 0.0], "4c": [0.0, 1.0]}
    for name, s in got.items():
        meta = s["meta"]
        assert s["labels"].tolist() == expected[meta["birads"]]
        assert meta["view"] == ("MLO" if meta["laterality"] == "R" else "CC")  # ML in the file name
        assert meta["patient_id"] == f"{(int(name) - 20586900) // 2:016x}"
        assert_canonical(s)
        if meta["birads"] == "1" or name == PECTORAL_IMAGE:
            assert not s["masks"].any()  # contours on a BI-RADS 1 image carry no class; a pectoral XML is no lesion
            # BI-RADS 2 without a lesion contour: benign, but nowhere (label-only); BI-RADS 1: lesion-free.
            assert meta["localized"] == ([False, True] if name == PECTORAL_IMAGE else [True, True])
        else:
            assert_aligned(s, truth[name])  # 12-vertex polygon + the 1-point calcification disc inside it
            assert sorted(les["kind"] for les in meta["lesions"]) == ["circle", "polygon"]
    for p in range(6):  # a patient never straddles splits
        assert got[str(20586900 + 2 * p)]["split"] == got[str(20586901 + 2 * p)]["split"]


def test_unknown_birads_is_a_counted_skip(tmp_path: Path) -> None:
    from wsseg.data.fixtures import write_inbreast

    write_inbreast(tmp_path, n_patients=6)
    text = (tmp_path / "INbreast.csv").read_text().replace(";4c\n", ";7\n", 1)
    (tmp_path / "INbreast.csv").write_text(text)
    report = check_source("inbreast", tmp_path, OUT_HW, workers=1)
    assert len(report.problems) == 1 and "unknown label Bi-Rads='7'" in str(report.problems[0])
    assert "INbreast.csv:" in report.problems[0].file and sum(report.counts.values()) == 11


@pytest.mark.parametrize("dataset", ["mini-mias", "nyu", "cbis-ddsm", "vindr-mammo", "inbreast"])
def test_cli_check_and_run_every_source(tmp_path: Path, dataset: str) -> None:
    result = runner.invoke(app, ["data", "fixture", dataset, "--out", str(tmp_path / "dl")])
    assert result.exit_code == 0 and "wrote a" in result.output, result.output
    result = runner.invoke(app, ["data", "check", dataset, "--root", str(tmp_path / "dl"), "--workers", "1"])
    assert result.exit_code == 0 and "usable images" in result.output, result.output
    prepare = ["data", "prepare", dataset, "--root", str(tmp_path / "dl"), "--profile", "tiny", "--workers", "1"]
    result = runner.invoke(app, [*prepare, "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0 and "usable images" in result.output and "184x120" in result.output, result.output
    args = [
        "run",
        "--method",
        "cam",
        "--profile",
        "tiny",
        "--dataset",
        dataset,
        "--data-root",
        str(tmp_path / "dl"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "runs"),
        "-q",
        "--epochs",
        "1",
        "--save-maps",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (record_path,) = (tmp_path / "runs").glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["dataset"] == dataset
    # Box ground truth gets MaxBoxAccV2 for every class with a boxed lesion in test; masks never do.
    boxed = [c for c, m in record["metrics"].items() if "max_box_acc_v2" in m]
    if dataset == "vindr-mammo":
        assert boxed and all(0.0 <= record["metrics"][c]["max_box_acc_v2"] <= 1.0 for c in boxed)
    else:
        assert not boxed
    # Label-only test images (labelled, lesion not located) are counted apart and enter no localisation metric.
    (manifest,) = (tmp_path / "cache" / dataset).glob("*/manifest.csv")
    test = MammogramDataset(manifest.parent, "test", with_masks=True, dataset=dataset)
    unlocated = {
        c: {test[i]["meta"]["image_id"] for i in range(len(test)) if not test[i]["meta"]["localized"][k]}
        for k, c in enumerate(("benign", "malignant"))
    }
    with open(record_path.parent / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for c, ids in unlocated.items():
        assert record["metrics"][c]["n_label_only"] == len(ids)
        assert {r["image_id"] for r in rows if r["class"] == c and r["located"] == "0"} == ids
        assert all(
            r["dice"] == "nan" and r["region_pixels"] == "0" for r in rows if r["image_id"] in ids and r["class"] == c
        )
    if dataset == "mini-mias":  # mdb001 (benign) and mdb233 (malignant, *NOTE 3*) are test images of the fixture
        assert unlocated == {"benign": {"mdb001"}, "malignant": {"mdb233"}}
        # test_labels.csv (for `wsseg score` on the saved maps) carries the flags too.
        with open(record_path.parent / "test_labels.csv", newline="") as f:
            labels = {r["image_id"]: r for r in csv.DictReader(f)}
        assert labels["mdb001"]["benign_located"] == "0" and labels["mdb233"]["malignant_located"] == "0"
        assert labels["mdb001"]["malignant_located"] == "1"
    # The preview draws the same images through the same pipeline, label-only ones framed.
    out = tmp_path / "preview.png"
    preview = ["data", "preview", dataset, "--root", str(tmp_path / "dl"), "--profile", "tiny", "--out", str(out)]
    result = runner.invoke(app, [*preview, "--split", "test", "--n", "4"])
    assert result.exit_code == 0 and "wrote" in result.output, result.output
    from PIL import Image

    with Image.open(out) as im:
        assert im.mode == "RGB" and im.height == 368 and im.width >= 4 * 100


def test_preview_draws_what_the_evaluator_scores(tmp_path: Path) -> None:
    from PIL import Image

    from wsseg.data.prepare import preview_source
    from wsseg.data.preview import save_preview

    write_mias(tmp_path / "dl", n_pairs=6)
    items, problems = preview_source("mini-mias", tmp_path / "dl", OUT_HW, ids=["mdb059", "mdb212", "mdb002"])
    assert problems == [] and [i.caption.split()[0] for i in items] == ["mdb059", "mdb212", "mdb002"]
    label_only, outside, plain = items
    assert label_only.label_only == [0] and not label_only.masks.any()  # benign, no location: framed, no outline
    assert outside.label_only == [] and "outside the breast" in outside.caption and len(outside.circles) == 1
    # The tiles hold the masks and evaluated regions the cache (and so the evaluator) holds, byte for byte.
    root, _ = prepare_source("mini-mias", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False)
    got = samples(root, "mini-mias")
    for item in (outside, plain):
        cached = got[item.caption.split()[0]]
        assert np.array_equal(item.masks, cached["masks"].numpy())
        assert np.array_equal(item.region, cached["breast_mask"].numpy())
    path = save_preview(items, tmp_path / "p.png", ncols=3, tile_height=OUT_HW[0])
    rgb = np.asarray(Image.open(path))
    cell = rgb.shape[1] // 3
    green, red, blue = (40, 220, 60), (235, 40, 40), (70, 140, 255)
    edge = [rgb[OUT_HW[0] // 2, i * cell] for i in range(3)]  # each tile's left edge, half-way down
    assert tuple(edge[0]) == green and tuple(edge[2]) != green  # only the label-only tile is framed
    tile2 = rgb[:, 2 * cell : 3 * cell]
    assert (tile2 == green).all(axis=-1).any() and (tile2 == blue).all(axis=-1).any()  # mask and region outlines
    assert not (rgb == red).all(axis=-1).any()  # no malignant annotation in these three


def test_tiny_lesions_survive_the_resize_and_only_stray_lesions_grow_the_region(tmp_path: Path) -> None:
    """A sub-pixel lesion keeps a pixel; a box over the skin line is clipped; a box in the air grows the region."""
    from wsseg.data.fixtures import MANIFEST_HEADER, save_png16, scaled_phantom, write_csv

    ph = scaled_phantom(False, 8)  # 512 x 384 native: the tiny profile's window shrinks it about 2.8x
    h, w = ph.image.shape
    dot = np.zeros((h, w), dtype=bool)
    dot[ph.center] = True  # one native pixel: a third of a window pixel
    save_png16(tmp_path / "img.png", ph.image)
    save_mask(tmp_path / "dot.png", dot)
    breast = breast_region(ph.image)
    edge_col = int(np.flatnonzero(breast[h // 2])[-1])  # the skin line on the middle row
    spill = [edge_col - 30, h // 2 - 10, edge_col + 10, h // 2 + 10]  # 25% of it in the air
    air = [w - 40, 4, w - 20, 24]  # wholly outside the breast (as mdb212's circle)
    rows = []
    for i, (cls, mask, boxes) in enumerate(
        [("benign", "dot.png", []), ("malignant", "", [spill]), ("benign", "", [air]), ("benign", "", [])]
    ):
        row: dict[str, object] = {k: "" for k in MANIFEST_HEADER}
        row.update(image="img.png", image_id=f"i{i}", patient_id=f"P{i}", benign=int(cls == "benign"))
        row.update(malignant=int(cls == "malignant"), split="test" if i else "train", laterality="L", view="CC")
        row[f"{cls}_mask"] = mask
        row["boxes"] = json.dumps([{"class": cls, "box": b} for b in boxes]) if boxes else ""
        rows.append(row)
    rows[3]["split"] = "val"
    write_csv(tmp_path / "manifest.csv", MANIFEST_HEADER, rows)
    root, report = prepare_source("manifest", tmp_path, OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert report.problems == []
    got = samples(root, "manifest")
    tiny = got["i0"]
    assert tiny["masks"][0].sum() >= 1 and tiny["meta"]["localized"] == [True, True]  # not taken for lesion-free
    spilled = got["i1"]
    assert spilled["meta"]["lesions"][0]["outside_breast"] == pytest.approx(0.25, abs=0.05)
    normal = got["i3"]  # the same image without annotation: the breast alone decides its crop and region
    assert not spilled["meta"]["region_grown"]  # the air part of the box is not scored as lesion
    assert spilled["meta"]["transform"] == normal["meta"]["transform"]
    assert torch.equal(spilled["breast_mask"], normal["breast_mask"])
    assert (spilled["masks"][1] & spilled["breast_mask"]).any()
    stray = got["i2"]
    assert stray["meta"]["region_grown"] and stray["meta"]["localized"] == [True, True]
    assert stray["meta"]["transform"]["crop"] != normal["meta"]["transform"]["crop"]  # the crop keeps the lesion
    assert (stray["masks"][0].numpy() <= stray["breast_mask"].numpy()).all()  # kept whole inside the region
    assert report.outside_breast == ["i2 (benign box, 100% outside)"] and report.label_only == ["i3 (benign)"]


def test_cli_preview_of_a_source_needs_a_root_and_known_ids(tmp_path: Path) -> None:
    write_mias(tmp_path / "dl", n_pairs=6)
    out = str(tmp_path / "p.png")
    result = runner.invoke(app, ["data", "preview", "mini-mias", "--out", out])
    assert result.exit_code == 2 and "needs --root" in result.output, result.output
    base = ["data", "preview", "mini-mias", "--root", str(tmp_path / "dl"), "--out", out, "--profile", "tiny"]
    result = runner.invoke(app, [*base, "--ids", "mdb059,mdb999"])
    assert result.exit_code == 2 and "no image mdb999" in result.output, result.output
    result = runner.invoke(app, [*base, "--split", "everything"])
    assert result.exit_code == 2 and "choose train, val, test or all" in result.output, result.output
    result = runner.invoke(app, [*base, "--ids", "mdb059,mdb233"])
    assert result.exit_code == 0 and "(2 images, 2 label-only)" in result.output, result.output
