"""Reads the AI results of one source series back from the node, with peers nobody here wrote:
dicomweb-client (QIDO-RS, WADO-RS) finds and fetches the SEG and SR series of the study, and
highdicom reads them (segread, srread). Prints one JSON object for the Rust test to check.

    python3 ai_results.py DICOMWEB_URL STUDY_UID SOURCE_SERIES_UID OUT_DIR [EXPECTED_MASK.npy]

OUT_DIR receives seg.dcm and sr.dcm (for dciodvfy). With EXPECTED_MASK.npy (uint8
[slice, row, col], slice = InstanceNumber - 1 of the source series), the Dice coefficient of the
first segment against it is reported as well.

Each segment also gets `expected_tracking_uid`, derived here, independently of the worker, by
the node's scheme: "2.25." + the first 16 bytes (big-endian) of SHA-256 over
"pacs-tracking\0PatientID\0IssuerOfPatientID\0model\0segment label".
"""

import hashlib
import json
import os
import sys

import highdicom as hd
import numpy as np
from dicomweb_client.api import DICOMwebClient
from pydicom.sr.codedict import codes


def fail(message):
    print(f"ai_results.py: {message}", file=sys.stderr)
    sys.exit(1)


def value(dataset_json, tag):
    v = dataset_json.get(tag, {}).get("Value")
    return v[0] if v else None


def expected_tracking_uid(patient_id, issuer, model, label):
    name = "\0".join(["pacs-tracking", patient_id, issuer, model, label]).encode("utf-8")
    return "2.25." + str(int.from_bytes(hashlib.sha256(name).digest()[:16], "big"))


def main():
    if len(sys.argv) not in (5, 6):
        fail(__doc__)
    url, study, source_series, out_dir = sys.argv[1:5]
    expected_path = sys.argv[5] if len(sys.argv) == 6 else None
    client = DICOMwebClient(url)

    series = client.search_for_series(study_instance_uid=study)
    by_modality = {}
    for s in series:
        by_modality.setdefault(value(s, "00080060"), []).append(s)
    segs = by_modality.get("SEG", [])
    srs = by_modality.get("SR", [])
    if len(segs) != 1 or len(srs) != 1:
        fail(f"expected one SEG and one SR series in the study, found {len(segs)} and {len(srs)}")

    def fetch(series_json, name):
        uid = value(series_json, "0020000E")
        instances = client.retrieve_series(study, uid)
        if len(instances) != 1:
            fail(f"{name} series {uid} has {len(instances)} instances")
        path = os.path.join(out_dir, f"{name}.dcm")
        instances[0].save_as(path, enforce_file_format=True)
        return path, value(series_json, "0008103E")

    seg_path, seg_description = fetch(segs[0], "seg")
    sr_path, sr_description = fetch(srs[0], "sr")
    seg = hd.seg.segread(seg_path)
    sr = hd.sr.srread(sr_path)

    # Source instances in InstanceNumber order (the expected mask's slice order).
    source = client.search_for_instances(
        study_instance_uid=study,
        series_instance_uid=source_series,
        fields=["00200013"],
    )
    source = sorted(source, key=lambda i: int(value(i, "00200013")))
    source_uids = [value(i, "00080018") for i in source]

    referenced = seg.get_source_image_uids()
    if {sop for (_st, _se, sop) in referenced} != set(source_uids):
        fail("the SEG does not reference exactly the source instances")
    if {se for (_st, se, _sop) in referenced} != {source_series}:
        fail("the SEG references another series")
    referenced_series = [
        item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence
    ]

    numbers = list(seg.segment_numbers)
    model = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName
    issuer = str(seg.get("IssuerOfPatientID", "") or "")
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=source_uids,
        segment_numbers=numbers,
        assert_missing_frames_are_empty=True,
    )
    segments = []
    for k, number in enumerate(numbers):
        d = seg.get_segment_description(number)
        mask = pixels[..., k] > 0
        segments.append({
            "number": number,
            "label": d.segment_label,
            "property_type": [str(d.segmented_property_type.value),
                              str(d.segmented_property_type.scheme_designator)],
            "voxels": int(mask.sum()),
            "slices_with_pixels": int(mask.any(axis=(1, 2)).sum()),
            "tracking_uid": str(d.tracking_uid),
            "tracking_id": d.tracking_id,
            "expected_tracking_uid": expected_tracking_uid(
                str(seg.PatientID), issuer, model, d.segment_label),
        })

    result = {
        "seg": {
            "sop_instance_uid": seg.SOPInstanceUID,
            "sop_class_uid": seg.SOPClassUID,
            "segmentation_type": seg.segmentation_type.value,
            "series_description": seg_description,
            "frames": int(seg.NumberOfFrames),
            "rows": int(seg.Rows),
            "columns": int(seg.Columns),
            "referenced_series": referenced_series,
            "algorithm_name": seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName,
            "segments": segments,
            "pixel_spacing": [float(x) for x in
                              seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing],
            "slice_thickness": float(
                seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness),
        },
        "sr": {"series_description": sr_description, "groups": [], "diameters": []},
    }

    report = sr.content
    if not isinstance(report, hd.sr.MeasurementReport):
        fail(f"SR content is {type(report).__name__}, not a TID 1500 measurement report")
    for g in report.get_volumetric_roi_measurement_groups():
        ref = g.referenced_segment
        if ref is None:
            fail(f"group {g.tracking_identifier!r} references no segment")
        sop = ref[0].ReferencedSOPSequence[0]
        if sop.ReferencedSOPInstanceUID != seg.SOPInstanceUID:
            fail(f"group {g.tracking_identifier!r} references {sop.ReferencedSOPInstanceUID}, not the SEG")
        source_ref = [item.UID for item in ref if item.name == codes.DCM.SourceSeriesForSegmentation]
        measurements = []
        for m in g.get_measurements():
            measurements.append({
                "name": str(m.name.meaning),
                "derivation": str(m.derivation.meaning) if m.derivation is not None else None,
                "value": float(m.value),
                "unit": str(m.unit.value),
            })
        result["sr"]["groups"].append({
            "tracking_identifier": g.tracking_identifier,
            "tracking_uid": str(g.tracking_uid),
            "segment_number": int(sop.ReferencedSegmentNumber),
            "source_series": source_ref,
            "measurements": measurements,
        })

    # TID 1501 groups: the longest in-plane diameter as a length on its source image.
    for g in report.get_image_measurement_groups():
        for m in g.get_measurements():
            item = m[0]
            scoords = [c for c in item.get("ContentSequence", []) if c.ValueType == "SCOORD"]
            if not scoords:
                continue
            scoord = scoords[0]
            ref = scoord.ContentSequence[0].ReferencedSOPSequence[0]
            result["sr"]["diameters"].append({
                "tracking_identifier": g.tracking_identifier,
                "tracking_uid": str(g.tracking_uid),
                "name": str(m.name.meaning),
                "value": float(m.value),
                "unit": str(m.unit.value),
                "modifiers": len(item.ContentSequence) - 1,
                "graphic_type": scoord.GraphicType,
                "graphic_data": [float(v) for v in scoord.GraphicData],
                "relationship": scoord.RelationshipType,
                "sop_instance_uid": ref.ReferencedSOPInstanceUID,
                "on_source_image": ref.ReferencedSOPInstanceUID in source_uids,
            })

    if expected_path:
        expected = np.load(expected_path) > 0
        got = pixels[..., 0] > 0
        if expected.shape != got.shape:
            fail(f"expected mask shape {expected.shape}, SEG gives {got.shape}")
        inter = np.logical_and(expected, got).sum()
        total = expected.sum() + got.sum()
        result["dice"] = float(2.0 * inter / total) if total else 1.0
        result["expected_voxels"] = int(expected.sum())

    result["highdicom"] = hd.__version__
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
