"""The dataset traps of docs/datasets.md beyond the basics of test_sources.py, each a fixture switch or a small edit."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.data.test_sources import OUT_HW, assert_aligned, assert_canonical, samples
from wsseg.data.fixtures import write_nyu
from wsseg.data.prepare import check_source, prepare_source
from wsseg.data.sources import ModelFrame
from wsseg.data.sources.nyu import gmic_window_origin


@pytest.mark.parametrize("flip", ["NO", "YES"])
def test_nyu_segmentations_in_gmic_model_frame(tmp_path: Path, flip: str) -> None:
    """GMIC's sample masks are 2944x1920 model-input frames; with data.pkl's crop and centre they map back."""
    truth = write_nyu(tmp_path / "dl", n_exams=3, horizontal_flip=flip, model_frame_masks=True)
    root, report = prepare_source("nyu", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert report.problems == [] and report.orientation_disagreements == []
    got = samples(root, "nyu")
    assert len(got) == 12
    for name, s in got.items():
        assert_canonical(s)
        if name.split("_")[1].startswith("L"):  # flipped by GMIC with 'YES': the mask is un-flipped on reading
            assert s["labels"].tolist() == [0.0, 1.0]
            assert_aligned(s, truth[name])
        else:
            assert not s["masks"].any()


def test_nyu_model_frame_mask_without_crop_metadata_says_what_to_pass(tmp_path: Path) -> None:
    write_nyu(tmp_path / "dl", n_exams=3, model_frame_masks=True)
    report = check_source("nyu", tmp_path / "dl" / "exam_list_before_cropping.pkl", OUT_HW, workers=1)
    assert len(report.problems) == 6  # the L views of 3 exams: their masks cannot be placed
    assert all("2944x1920" in p.reason and "data.pkl" in p.reason for p in report.problems)


def test_gmic_window_when_the_crop_is_larger_than_the_window() -> None:
    # Centred on best_center, then shifted inside the crop (no padding on a large axis).
    assert gmic_window_origin((4000, 2500), (2000, 1200), "L-CC") == (2000 - 1472, 1200 - 960)
    assert gmic_window_origin((4000, 2500), (100, 2400), "L-MLO") == (0, 2500 - 1920)
    assert gmic_window_origin((2000, 800), (1000, -200), "R-CC") == (-(944 // 2), 0)
    assert gmic_window_origin((2000, 800), (1000, -200), "R-MLO") == (0, 0)
    frame = ModelFrame((10, 20, 5, 13), True, (-2, 1), (6, 4))  # an 10x8 crop, flipped, window at (-2, 1)
    mask = np.zeros((6, 4), bool)
    mask[2, 0] = True  # crop row 0, flipped col 1 -> crop col 8 - 1 - 1 = 6 -> original (10, 11)
    back = frame.to_original(mask, (30, 30))
    assert np.argwhere(back).tolist() == [[10, 11]]


def test_cbis_crop_without_mask_and_strict_wrong_size(tmp_path: Path) -> None:
    """The crop is never taken for the mask; a wrong-size mask is listed, skipped, and fatal in strict mode."""
    from wsseg.data.fixtures import write_cbis
    from wsseg.data.sources import DataError, get_source

    write_cbis(tmp_path / "dl", crop_without_mask=True)
    assert (tmp_path / "dl" / "metadata.csv").is_file()  # the retriever's index is there and not needed
    scan = get_source("cbis-ddsm").scan(tmp_path / "dl")
    (problem,) = scan.problems
    assert "Mass-Training_P_00005_LEFT_CC_1" in problem.file and "no ROI mask" in problem.reason
    assert "12x10" in problem.reason and "Mass-Training_P_00005_LEFT_CC" not in {r.image_id for r in scan.records}
    report = check_source("cbis-ddsm", tmp_path / "dl", OUT_HW, workers=1)
    assert len(report.problems) == 2 and sum(report.counts.values()) == 8
    wrong = next(p for p in report.problems if "P_00003" in p.file)
    assert "mask is 66x48 but the image" in wrong.reason and "64x48" in wrong.reason
    with pytest.raises(DataError, match=r"2 problem\(s\) in strict mode(.|\n)*66x48"):
        check_source("cbis-ddsm", tmp_path / "dl", OUT_HW, workers=1, strict=True)


def test_cbis_two_abnormalities_keep_their_own_boxes(tmp_path: Path) -> None:
    from wsseg.data.fixtures import write_cbis

    write_cbis(tmp_path / "dl")
    root, _ = prepare_source("cbis-ddsm", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False)
    s = samples(root, "cbis-ddsm")["Mass-Training_P_00001_LEFT_CC"]
    lesions = s["meta"]["lesions"]
    assert [les["class"] for les in lesions] == ["malignant", "benign"]
    for les in lesions:  # each box is the lesion's footprint in the window, on its class mask
        x0, y0, x1, y1 = (round(v) for v in les["box"])
        k = 0 if les["class"] == "benign" else 1
        assert s["masks"][k, y0:y1, x0:x1].float().mean() > 0.5


def test_cbis_greyscale_file_listed_as_mask_is_reported(tmp_path: Path) -> None:
    """Content decides: a greyscale image where the binary mask should be is named a crop, not used."""
    from wsseg.data.fixtures import phantom, save_dicom, write_cbis

    write_cbis(tmp_path / "dl")
    (mask,) = [
        p
        for p in (tmp_path / "dl" / "CBIS-DDSM" / "Mass-Training_P_00005_LEFT_CC_1").rglob("*.dcm")
        if p.stat().st_size > 4000
    ]
    save_dicom(mask, phantom(False).image)  # same size as the image, but a full greyscale picture
    report = check_source("cbis-ddsm", tmp_path / "dl", OUT_HW, workers=1)
    bad = next(p for p in report.problems if "P_00005" in p.file)
    assert "not a binary mask" in bad.reason and "cropped lesion patch" in bad.reason


def test_dicom_voi_lut_is_an_option_and_monochrome1_inverts_within_its_range(tmp_path: Path) -> None:
    from wsseg.data.fixtures import VINDR_WINDOW, phantom, save_dicom
    from wsseg.data.imageio import read_image

    ph = phantom(False)
    save_dicom(tmp_path / "a.dcm", ph.image, monochrome1=True, tags=VINDR_WINDOW)
    raw = read_image(tmp_path / "a.dcm")  # default: raw linear values, MONOCHROME1 inverted
    np.testing.assert_allclose(raw, np.round(ph.image * 4095), atol=0.5)
    windowed = read_image(tmp_path / "a.dcm", voi_lut=True)
    # LINEAR window of the first centre/width (2000, 3000) on the stored values, then inverted in [0, 4095].
    stored = 4095 - np.round(ph.image * 4095)
    c, w = 2000 - 0.5, 3000 - 1
    expected = 4095 - np.clip(((stored - c) / w + 0.5) * 4095, 0, 4095)
    np.testing.assert_allclose(windowed, expected, atol=0.05)
    assert windowed[ph.lesion].min() == 4095 and windowed[ph.image == 0].max() == 0  # lesion bright, air black
    save_dicom(tmp_path / "b.dcm", ph.image)  # no window in the header: --voi-lut changes nothing
    np.testing.assert_array_equal(read_image(tmp_path / "b.dcm", voi_lut=True), read_image(tmp_path / "b.dcm"))


def test_vindr_for_processing_is_skipped_and_voi_lut_prepares(tmp_path: Path) -> None:
    from wsseg.data.fixtures import write_vindr

    truth = write_vindr(tmp_path / "dl", n_studies=5, for_processing=True)
    report = check_source("vindr-mammo", tmp_path / "dl", OUT_HW, workers=1)
    (problem,) = report.problems
    assert problem.file.endswith(".dicom") and "FOR PROCESSING" in problem.reason and sum(report.counts.values()) == 19
    root, report = prepare_source(
        "vindr-mammo", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False, voi_lut=True
    )
    assert len(report.problems) == 1 and report.orientation_disagreements == []
    got = samples(root, "vindr-mammo")
    first = next(i for i in got if i.startswith("00000000L0CC"))  # MONOCHROME1 with a two-valued window
    assert got[first]["meta"]["voi_lut"] is True
    assert_canonical(got[first])
    assert_aligned(got[first], truth[first])
    plain, _ = prepare_source(
        "vindr-mammo", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False
    )
    assert plain != root  # the option keys the cache


def test_inbreast_roi_names_pectoral_muscle_and_label_sheet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    from wsseg.data.fixtures import PECTORAL_IMAGE, write_inbreast
    from wsseg.data.sources import DataError, get_source

    write_inbreast(tmp_path / "dl", n_patients=6, espiculated=True)
    scan = get_source("inbreast").scan(tmp_path / "dl")
    assert scan.problems == [] and len(scan.records) == 12
    by_id = {r.image_id: r for r in scan.records}
    assert sorted(les.name for les in by_id["20586901"].lesions) == ["calcification", "mass", "mass"]
    # The pectoral XML named like the lesion XML of an image without one is never read as its lesions.
    assert by_id[PECTORAL_IMAGE].lesions == [] and by_id[PECTORAL_IMAGE].labels == (1, 0)
    # The label sheet as .xls (pandas + xlrd), with Excel's numbers for ids and BI-RADS.
    sheet = pd.read_csv(tmp_path / "dl" / "INbreast.csv", sep=";", dtype=str).fillna("")
    sheet["File Name"] = sheet["File Name"].astype(float).astype(str)  # 20586900.0
    (tmp_path / "dl" / "INbreast.csv").rename(tmp_path / "INbreast.csv.bak")
    (tmp_path / "dl" / "INbreast.xls").write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + bytes(504))  # OLE2 header
    # Without xlrd (None in sys.modules makes every import of it fail, installed or not): a clear message naming
    # the extra that installs it, not a traceback.
    with monkeypatch.context() as without_xlrd:
        without_xlrd.setitem(sys.modules, "xlrd", None)
        with pytest.raises(DataError, match=r"INbreast\.xls: reading \.xls needs the xlrd package.*wsseg\[xls\]"):
            get_source("inbreast").scan(tmp_path / "dl")
    monkeypatch.setattr(pd, "read_excel", lambda path, dtype=None: sheet)
    scan_xls = get_source("inbreast").scan(tmp_path / "dl")
    assert scan_xls.problems == [] and {r.image_id: r.labels for r in scan_xls.records} == {
        i: r.labels for i, r in by_id.items()
    }


def test_committed_mini_mias_split_is_reproduced_and_honoured(tmp_path: Path) -> None:
    """benchmarks/splits/mini-mias.csv is what `wsseg data split` gives for the real ids, and prepare uses it."""
    from typer.testing import CliRunner

    from wsseg.cli import app
    from wsseg.data.fixtures import write_mias
    from wsseg.data.prepare import default_split_file, read_split_file

    committed = default_split_file("mini-mias")
    assert committed is not None
    write_mias(tmp_path / "all", n_pairs=161)  # mdb001 ... mdb322, as released
    out = tmp_path / "mini-mias.csv"
    result = CliRunner().invoke(
        app, ["data", "split", "mini-mias", "--root", str(tmp_path / "all"), "--seed", "0", "--out", str(out)]
    )
    assert result.exit_code == 0 and "113 train, 24 val, 24 test" in result.output, result.output
    assert out.read_bytes() == committed.read_bytes()
    # A small fixture draws its pairs so that the published split leaves no split empty, and follows it.
    write_mias(tmp_path / "dl", n_pairs=6)
    root, report = prepare_source(
        "mini-mias", tmp_path / "dl", OUT_HW, cache_dir=tmp_path / "c", workers=1, progress=False
    )
    published = read_split_file(committed)
    got = samples(root, "mini-mias")
    assert len(got) == 12 and {s["split"] for s in got.values()} == {"train", "val", "test"}
    assert all(s["split"] == published[s["meta"]["patient_id"]] for s in got.values())
    result = CliRunner().invoke(
        app, ["data", "split", "mini-mias", "--root", str(tmp_path / "nope"), "--out", str(out)]
    )
    assert result.exit_code == 2 and "does not exist" in result.output


def test_voi_lut_reaches_a_run_config() -> None:
    from wsseg.config import make_run_config

    assert make_run_config("cam", "tiny").data.voi_lut is False
    assert make_run_config("cam", "tiny", overrides=["data.voi_lut=true"]).data.voi_lut is True
