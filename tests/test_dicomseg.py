"""DICOM series in, DICOM SEG out: a series the test writes from a hippocampus case,
``segrefine predict --format dicom-seg`` on it, the SEG read back with highdicom and its
frames mapped onto the source geometry, against the NIfTI prediction of the same image."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

highdicom = pytest.importorskip("highdicom")

from conftest import run_cli

from segrefine import io
from segrefine.dicomseg import read_seg, series_files, write_seg, write_series
from segrefine.errors import InputError
from segrefine.metrics import dice


@pytest.fixture(scope="module")
def series(hippo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom") / "hippo4"
    write_series(io.load(hippo / "imagesTr" / "hippocampus_004.nii.gz"), folder)
    return folder


def test_series_reads_back_on_the_nifti_grid(hippo, series):
    nifti = io.load(hippo / "imagesTr" / "hippocampus_004.nii.gz")
    volume = io.load(series)
    assert volume.shape == nifti.shape
    assert np.allclose(volume.affine, nifti.affine, atol=1e-4)
    span = float(nifti.array.max() - nifti.array.min())
    assert np.abs(volume.array - nifti.array).max() <= span / 65000  # int16 with a rescale slope


def test_predict_dicom_seg_matches_the_nifti_prediction(hippo, series, tmp_path):
    run_cli("predict", "-i", series, "-o", tmp_path / "nifti", check=True)
    proc = run_cli("predict", "-i", series, "-o", tmp_path / "seg", "--format", "dicom-seg", check=True)
    seg_path = tmp_path / "seg" / "hippo4_seg.dcm"
    assert seg_path.name in (proc.stdout + proc.stderr).replace("\n", "")
    reference = io.load(tmp_path / "nifti" / "hippo4.nii.gz").array > 0
    assert reference.sum() > 100

    # highdicom reads it; every frame maps onto a source instance at the same position
    seg = highdicom.seg.segread(seg_path)
    sources = [pydicom.dcmread(f) for f in series_files(series)]
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == {str(ds.SOPInstanceUID) for ds in sources}
    assert str(seg.FrameOfReferenceUID) == str(sources[0].FrameOfReferenceUID)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        src = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose([float(x) for x in position],
                           [float(x) for x in by_uid[src].ImagePositionPatient], atol=1e-3)
    description = seg.get_segment_description(1)
    assert description.segment_label == "hippocampus"
    assert description.algorithm_type.value == "AUTOMATIC"
    assert description.algorithm_identification[0].AlgorithmName == "segrefine mgnet"
    assert "no slice corrected" in seg.ImageComments

    mask, names = read_seg(seg_path, series)
    assert names == {"hippocampus": 1}
    assert dice(mask > 0, reference) == 1.0
    assert np.array_equal(mask > 0, reference)

    # the original NIfTI's prediction: the same up to the series' int16 quantisation
    run_cli("predict", "-i", hippo / "imagesTr" / "hippocampus_004.nii.gz", "-o", tmp_path / "orig", check=True)
    original = io.load(tmp_path / "orig" / "hippocampus_004.nii.gz").array > 0
    assert dice(mask > 0, original) > 0.98


def test_corrected_slices_and_several_labels_are_recorded(series, tmp_path):
    volume = io.load(series)
    labels = np.zeros(volume.shape, np.uint8)
    labels[10:20, 10:30, 5:15] = 1
    labels[20:30, 10:30, 5:15] = 2
    out = write_seg(labels, series, tmp_path / "two.dcm", label_names={"anterior": 1, "posterior": 2},
                    corrected_slices=[7, 9])
    seg = highdicom.seg.segread(out)
    assert [seg.get_segment_description(n).segment_label for n in (1, 2)] == ["anterior", "posterior"]
    assert seg.get_segment_description(1).algorithm_type.value == "SEMIAUTOMATIC"
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert "corrected_slices=7,9" in algorithm.AlgorithmParameters
    files = series_files(series)
    assert "slices corrected by a person: 7,9 " in seg.ImageComments
    assert str(pydicom.dcmread(files[7]).SOPInstanceUID) in seg.ImageComments
    mask, names = read_seg(out, series)
    assert names == {"anterior": 1, "posterior": 2}
    assert np.array_equal(mask, labels)


def test_bad_inputs_are_one_line_errors(hippo, series, tmp_path):
    volume = io.load(series)
    with pytest.raises(InputError, match="does not fit the series"):
        write_seg(np.zeros(volume.shape[:2] + (3,), np.uint8), series, tmp_path / "x.dcm",
                  label_names={"hippocampus": 1})
    with pytest.raises(InputError, match="no label name"):
        write_seg(np.full(volume.shape, 3, np.uint8), series, tmp_path / "x.dcm", label_names={"a": 1})
    assert not (tmp_path / "x.dcm").exists()
    nifti = hippo / "imagesTr" / "hippocampus_004.nii.gz"
    proc = run_cli("predict", "-i", nifti, "-o", tmp_path / "o", "--format", "dicom-seg")
    assert proc.returncode == 2 and "needs a DICOM series folder" in proc.stderr
    proc = run_cli("predict", "-i", series, "-o", tmp_path / "o", "--format", "png")
    assert proc.returncode == 2 and "--format must be nifti or dicom-seg" in proc.stderr


def test_web_app_session_download_as_dicom_seg(series, tmp_path):
    import httpx
    from server_util import running_server

    root = tmp_path / "root"
    shutil.copytree(series, root / "series" / "h4")
    other = io.load(series)
    write_series(io.Volume(array=other.array[:, :, :10], affine=other.affine), root / "series" / "short")
    (tmp_path / "ws").mkdir()
    with running_server(tmp_path / "ws", root, timeout=120) as url, httpx.Client(base_url=url, timeout=120) as http:
        sid = http.post("/api/sessions", json={"path": "series/h4"}).json()["id"]
        assert http.post(f"/api/sessions/{sid}/predict").status_code == 200
        k = 20
        r = http.post(f"/api/sessions/{sid}/scribbles", json={"index": k, "label": 2, "points": [[20, 20], [21, 21]],
                                                            "refine": True})
        assert r.status_code == 200, r.text
        raw = http.get(f"/api/sessions/{sid}/arrays/mask")
        mask = np.frombuffer(raw.content, np.uint8).reshape(tuple(map(int, raw.headers["X-Shape"].split(","))),
                                                            order="F")
        r = http.get(f"/api/sessions/{sid}/dicom-seg", params={"series": "series/h4"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
        assert r.headers["content-disposition"].endswith('_seg.dcm"')
        (tmp_path / "s.dcm").write_bytes(r.content)
        back, names = read_seg(tmp_path / "s.dcm", root / "series" / "h4")
        assert names == {"hippocampus": 1} and np.array_equal(back > 0, mask > 0) and mask.any()
        seg = highdicom.seg.segread(tmp_path / "s.dcm")
        assert f"corrected_slices={k}," in seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[
            0].AlgorithmParameters
        r = http.get(f"/api/sessions/{sid}/dicom-seg", params={"series": "series/short"})
        assert r.status_code == 400 and "is not the session image's" in r.json()["detail"]
        r = http.get(f"/api/sessions/{sid}/dicom-seg", params={"series": "../ws"})
        assert r.status_code == 403
