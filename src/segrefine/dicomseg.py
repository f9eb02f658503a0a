"""DICOM: series folders (finding, writing, their instances in volume order) and DICOM SEG.

    write_seg(labels, "series_dir", "out.dcm", label_names={"hippocampus": 1},
              corrected_slices=[12, 14])
    mask = read_seg("out.dcm", "series_dir")          # back on the series' voxel grid

A series is read into a volume by :func:`segrefine.io.load` (SimpleITK/GDCM, slices
sorted along the slice normal); :func:`series_files` gives the files in that same
order, so slice ``k`` of the volume's last axis is instance ``files[k]`` and its
pixel ``(row r, column c)`` is voxel ``(c, r, k)``.

A DICOM SEG written here (highdicom, binary segmentation):

- references the source series and every source instance (the frames are those of
  the instances, in their geometry: the SEG shares the series' frame of reference);
- has one segment per label value of the mask, named from ``label_names``
  (:func:`model_labels` reads them from the network checkpoint);
- identifies the algorithm (name, version, family "artificial intelligence")
  and records which slices a person corrected as an algorithm parameter
  ``corrected_slices`` (slice numbers along the volume's last axis, i.e. positions in
  :func:`series_files`; the segment's algorithm type is then ``SEMIAUTOMATIC``) and
  in the SEG's ``ImageComments`` as the corrected instances' SOP Instance UIDs.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np

from segrefine import io
from segrefine.errors import InputError

#: the software version written into the SEG
SOFTWARE_VERSION = "0.1.0"
DICOM_SUFFIXES = (".dcm", ".dicom")
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def is_dicom_series(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding DICOM files (``.dcm``/``.dicom``) directly."""
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        return any(p.is_file() and p.name.lower().endswith(DICOM_SUFFIXES) for p in path.iterdir())
    except OSError:
        return False


def series_files(folder: str | os.PathLike) -> list[Path]:
    """The instances of the one series in ``folder``, in the order of the volume's last axis."""
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a DICOM series folder")
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise InputError(f"{folder}: folder holds no DICOM series")
    if len(ids) > 1:
        raise InputError(f"{folder}: folder holds {len(ids)} DICOM series; give one series folder")
    return [Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0])]


def read_instances(folder: str | os.PathLike) -> list:
    """pydicom datasets of the series' instances, in :func:`series_files` order."""
    import pydicom

    out = []
    for f in series_files(folder):
        try:
            out.append(pydicom.dcmread(f))
        except Exception as exc:
            raise InputError(f"{f}: unreadable DICOM file ({str(exc).splitlines()[0]})") from None
    return out


def model_labels(checkpoint: str | os.PathLike | None = None) -> dict[str, int]:
    """Label names and values of a network, from its model card (``card`` in the checkpoint,
    see :mod:`segrefine.nets.card`): each ``label_names`` entry but background for a
    multi-class network, else one foreground label named after the card's ``dataset``.
    Without a card: one foreground label named after the file (``mgnet_hippocampus.pt`` ->
    ``{"hippocampus": 1}``)."""
    from segrefine.nets.checkpoint import read_checkpoint, shipped_model

    checkpoint = shipped_model("mgnet") if checkpoint is None else checkpoint
    card = read_checkpoint(checkpoint).get("card") or {}
    names = {str(k): str(v) for k, v in (card.get("label_names") or {}).items()}
    if "each label value" in str(card.get("foreground", "")) and len(names) > 1:
        return {name: int(k) for k, name in sorted(names.items(), key=lambda kv: int(kv[0]))
                if k.isdigit() and int(k) != 0}
    if card.get("dataset"):
        return {str(card["dataset"]).lower(): 1}
    stem = Path(checkpoint).stem
    return {stem.split("_", 1)[1] if "_" in stem else "foreground": 1}


def _property_type(name: str):
    from pydicom.sr.codedict import codes

    wanted = name.replace("_", " ").replace("-", " ").title().replace(" ", "")
    return getattr(codes.SCT, wanted, None) or codes.SCT.Tissue


def write_seg(labels: np.ndarray, series: str | os.PathLike, out: str | os.PathLike, *,
              label_names: dict[str, int], algorithm: str = "segrefine MG-Net",
              corrected_slices: list[int] | tuple[int, ...] = (),
              series_description: str = "segrefine segmentation") -> Path:
    """Write the label map ``labels`` (on the series' voxel grid) as a DICOM SEG at ``out``.

    Parameters
    ----------
    labels : (I, J, K) integer array
        0 background, a value of ``label_names`` per structure; shape as the loaded series.
    series : path
        The source DICOM series folder.
    label_names : dict
        Segment label -> value in ``labels``; values absent from the mask still get a segment.
    corrected_slices : list of int
        Slices (last axis) a person corrected; recorded in the SEG (see module docstring).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    out = Path(out)
    sources = read_instances(series)
    labels = np.asarray(labels)
    first = sources[0]
    rows, cols = int(first.Rows), int(first.Columns)
    if labels.ndim != 3 or labels.shape != (cols, rows, len(sources)):
        raise InputError(f"{series}: a mask of shape {labels.shape} does not fit the series "
                         f"({cols}x{rows} pixels, {len(sources)} instances)")
    if not label_names:
        raise InputError("label_names is empty: name at least one segment")
    values = sorted(set(int(v) for v in np.unique(labels)) - {0})
    unknown = [v for v in values if v not in label_names.values()]
    if unknown:
        raise InputError(f"mask values {unknown} have no label name (names: {label_names})")
    corrected = sorted({int(k) for k in corrected_slices})
    if any(k < 0 or k >= len(sources) for k in corrected):
        raise InputError(f"corrected slices {corrected} outside 0..{len(sources) - 1}")
    by_value = sorted(label_names.items(), key=lambda kv: kv[1])
    # segment numbers 1..N in label-value order; the frames hold segment numbers
    segment_of = {v: n for n, (_, v) in enumerate(by_value, start=1)}
    pixel = np.zeros((len(sources), rows, cols), np.uint16)
    for v, n in segment_of.items():
        pixel[np.transpose(labels, (2, 1, 0)) == v] = n
    params = {"corrected_slices": ",".join(map(str, corrected)) or "none",
              "slice_axis": "volume last axis, series order"}
    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm[:64], family=codes.cid7162.ArtificialIntelligence, version=SOFTWARE_VERSION,
        source="segrefine", parameters=params)
    kind = (hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if corrected
            else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=name[:64],
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=_property_type(name), algorithm_type=kind,
        algorithm_identification=algo, tracking_id=name[:64], tracking_uid=hd.UID())
        for n, (name, _) in enumerate(by_value, start=1)]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixel, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="segrefine",
        manufacturer_model_name=algorithm[:64], software_versions=SOFTWARE_VERSION,
        device_serial_number="0", content_description=series_description[:64],
        content_label="SEGREFINE", omit_empty_frames=False)
    seg.SeriesDescription = series_description[:64]
    if corrected:
        uids = " ".join(str(sources[k].SOPInstanceUID) for k in corrected)
        seg.ImageComments = (f"segrefine: slices corrected by a person: {','.join(map(str, corrected))} "
                             f"(SOP Instance UIDs {uids})")[:10240]
    else:
        seg.ImageComments = "segrefine: no slice corrected by a person (model output)"
    with io.atomic_path(out) as tmp:
        seg.save_as(tmp)
    return out


def read_seg(seg_path: str | os.PathLike, series: str | os.PathLike) -> tuple[np.ndarray, dict[str, int]]:
    """A DICOM SEG mapped back onto ``series``' voxel grid: (label map (I, J, K) uint16 whose
    values are the segment numbers, {segment label: number})."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(seg_path)
    except Exception as exc:
        raise InputError(f"{seg_path}: not a readable DICOM SEG ({str(exc).splitlines()[0]})") from None
    sources = read_instances(series)
    uids = [str(ds.SOPInstanceUID) for ds in sources]
    numbers = list(seg.get_segment_numbers())
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=numbers,
                                               combine_segments=True, relabel=False,
                                               assert_missing_frames_are_empty=True)
    names = {seg.get_segment_description(n).segment_label: int(n) for n in numbers}
    return np.ascontiguousarray(np.transpose(pixels, (2, 1, 0))).astype(np.uint16), names


def write_series(volume: io.Volume, folder: str | os.PathLike, *, patient_id: str = "ANON^",
                 series_description: str = "segrefine series", modality: str = "MR") -> list[Path]:
    """Write ``volume`` as an MR Image Storage series of single-frame files in ``folder``.

    Voxel values are stored as int16 with a rescale slope (and intercept) that keeps
    the value range; the geometry (affine, RAS) becomes the DICOM patient (LPS)
    position and orientation of each slice along the last axis. Used to make test
    series and to hand a volume to DICOM-only tools.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = io.check_writable_dir(folder)
    array = np.asarray(volume.array, dtype=np.float64)
    if array.ndim != 3:
        raise InputError(f"a DICOM series needs a 3D volume, got shape {array.shape}")
    lo, hi = float(array.min()), float(array.max())
    if np.all(array == np.round(array)) and hi - lo <= 65535:  # integers: exact
        slope, intercept = 1.0, (0.0 if lo >= -32768 and hi <= 32767 else lo + 32768)
    else:  # 65000 steps over the range
        slope = max((hi - lo) / 65000.0, 1e-6)
        intercept = lo + 32768 * slope
    stored = np.clip(np.round((array - intercept) / slope), -32768, 32767).astype(np.int16)
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(volume.affine, float)[:3]
    spacing = volume.spacing
    row_dir, col_dir = lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]
    study, series_uid, frame_ref = generate_uid(), generate_uid(), generate_uid()
    now = _dt.datetime.now(_dt.timezone.utc)
    paths = []
    for k in range(array.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient_id, patient_id, "", ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series_uid, frame_ref
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, k + 1
        ds.SeriesDescription, ds.Manufacturer = series_description[:64], "segrefine"
        ds.ImagePositionPatient = [float(x) for x in lps @ np.array([0.0, 0.0, k, 1.0])]
        ds.ImageOrientationPatient = [float(x) for x in (*row_dir, *col_dir)]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[0])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:.10g}", f"{intercept:.10g}", "US"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        path = folder / f"slice_{k:04d}.dcm"
        with io.atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths
