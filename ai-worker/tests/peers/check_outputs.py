"""Reads a Segmentation and its measurement report back with highdicom and compares them with
what the Rust test wrote them from.

    python3 check_outputs.py SEG.dcm SR.dcm EXPECTED.json

EXPECTED.json (written by ai-worker/tests/dicom_out.rs):
    sop_class_uid, segmentation_type, source_series_instance_uid,
    source_sop_instance_uids (volume order), rows, columns,
    segments: [{number, label, category, property_type, color (sRGB), cielab, tracking_id,
                length_tracking_id (the TID 1501 group's),
                tracking_uid, mask: one string of "0"/"1" per slice, row-major,
                diameter: null or {mm, sop_instance_uid, graphic_data}}],
    measurements: [{number, name, value, unit, derivation, method}]  (codes as [value, scheme];
                   the volumetric group's measurements)

Exits non-zero with a message on the first mismatch; prints "OK ..." when everything matches.
"""

import json
import sys

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes


def fail(message):
    print(f"check_outputs.py: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def code_key(code):
    """(value, scheme) of a highdicom/pydicom code, or None."""
    if code is None:
        return None
    return [str(code.value), str(code.scheme_designator)]


def check_segmentation(seg, expected):
    check(seg.SOPClassUID == expected["sop_class_uid"], f"SOP Class {seg.SOPClassUID}")
    check(
        seg.segmentation_type == hd.seg.SegmentationTypeValues(expected["segmentation_type"]),
        f"SegmentationType {seg.segmentation_type}",
    )
    numbers = [s["number"] for s in expected["segments"]]
    check(list(seg.segment_numbers) == numbers, f"segment numbers {list(seg.segment_numbers)} != {numbers}")
    for s in expected["segments"]:
        d = seg.get_segment_description(s["number"])
        check(d.segment_label == s["label"], f"segment {s['number']} label {d.segment_label!r}")
        check(
            code_key(d.segmented_property_category) == s["category"],
            f"segment {s['number']} category {d.segmented_property_category}",
        )
        check(
            code_key(d.segmented_property_type) == s["property_type"],
            f"segment {s['number']} property type {d.segmented_property_type}",
        )
        check(
            d.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            f"segment {s['number']} algorithm type {d.algorithm_type}",
        )
        check(str(d.tracking_uid) == s["tracking_uid"], f"segment {s['number']} Tracking UID {d.tracking_uid}")
        check(d.tracking_id == s["tracking_id"], f"segment {s['number']} Tracking ID {d.tracking_id!r}")
        lab = [int(v) for v in d.RecommendedDisplayCIELabValue]
        check(lab == s["cielab"], f"segment {s['number']} CIELab {lab} != {s['cielab']}")
        # An independent sRGB -> CIELab conversion (highdicom's) agrees to a few 1/65535 steps.
        theirs = hd.color.CIELabColor.from_rgb(*s["color"]).value
        check(
            all(abs(a - b) <= 8 for a, b in zip(lab, theirs)),
            f"segment {s['number']} CIELab {lab}, highdicom converts {s['color']} to {list(theirs)}",
        )

    # The referenced source series and instances.
    referenced = seg.get_source_image_uids()
    referenced_instances = {sop for (_study, _series, sop) in referenced}
    check(
        referenced_instances == set(expected["source_sop_instance_uids"]),
        "the SEG does not reference exactly the source instances",
    )

    # The mask on every source instance, segment by segment.
    uids = expected["source_sop_instance_uids"]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=numbers,
        assert_missing_frames_are_empty=True,
    )
    rows, columns = expected["rows"], expected["columns"]
    check(
        pixels.shape == (len(uids), rows, columns, len(numbers)),
        f"pixel array shape {pixels.shape}",
    )
    for k, s in enumerate(expected["segments"]):
        want = np.array(
            [[int(ch) for ch in plane] for plane in s["mask"]], dtype=np.uint8
        ).reshape(len(uids), rows, columns)
        got = pixels[..., k].astype(np.uint8)
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)
            fail(
                f"segment {s['number']}: {len(bad)} pixels differ, first at "
                f"(instance {uids[bad[0][0]]}, row {bad[0][1]}, col {bad[0][2]})"
            )
    frames = int(seg.NumberOfFrames)
    if expected["segmentation_type"] == "LABELMAP":
        # one frame per slice where any segment has a pixel
        expected_frames = sum(
            1 for planes in zip(*(s["mask"] for s in expected["segments"]))
            if any("1" in plane for plane in planes)
        )
    else:
        expected_frames = sum(
            sum(1 for plane in s["mask"] if "1" in plane) for s in expected["segments"]
        )
    check(frames == expected_frames, f"NumberOfFrames {frames} != {expected_frames}")


def check_report(sr, seg, expected):
    check(sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34", f"SOP Class {sr.SOPClassUID}")
    check(sr.StudyInstanceUID == seg.StudyInstanceUID, "SR and SEG in different studies")
    report = sr.content
    check(isinstance(report, hd.sr.MeasurementReport), f"content is {type(report).__name__}")
    measured = [s for s in expected["segments"] if s["diameter"] is not None]
    groups = report.get_volumetric_roi_measurement_groups()
    check(len(groups) == len(measured), f"{len(groups)} volumetric groups for {len(measured)} segments with voxels")
    by_number = {}
    for g in groups:
        ref = g.referenced_segment
        check(ref is not None, f"group {g.tracking_identifier!r} references no segment")
        image = ref[0]
        sop = image.ReferencedSOPSequence[0]
        check(
            sop.ReferencedSOPInstanceUID == seg.SOPInstanceUID,
            f"group {g.tracking_identifier!r} references {sop.ReferencedSOPInstanceUID}, not the SEG",
        )
        check(sop.ReferencedSOPClassUID == seg.SOPClassUID, "referenced SOP class is not the SEG's")
        number = int(sop.ReferencedSegmentNumber)
        source_series = [
            item.UID for item in ref if item.name == codes.DCM.SourceSeriesForSegmentation
        ]
        check(
            source_series == [expected["source_series_instance_uid"]],
            f"segment {number}: source series {source_series}",
        )
        by_number[number] = g

    for s in measured:
        g = by_number.get(s["number"])
        check(g is not None, f"no measurement group for segment {s['number']}")
        d = seg.get_segment_description(s["number"])
        check(str(g.tracking_uid) == str(d.tracking_uid), f"segment {s['number']}: tracking UID differs from the SEG")
        check(g.tracking_identifier == s["tracking_id"], f"segment {s['number']}: tracking id {g.tracking_identifier!r}")
        check(code_key(g.finding_type) == s["property_type"], f"segment {s['number']}: finding {g.finding_type}")
        check(code_key(g.finding_category) == s["category"], f"segment {s['number']}: category {g.finding_category}")

        got = g.get_measurements()
        want = [m for m in expected["measurements"] if m["number"] == s["number"]]
        check(len(got) == len(want), f"segment {s['number']}: {len(got)} measurements, expected {len(want)}")
        for m in want:
            matches = [
                x for x in got
                if code_key(x.name) == m["name"] and code_key(x.derivation) == m["derivation"]
                and code_key(x.unit) == m["unit"]
            ]
            check(len(matches) == 1, f"segment {s['number']}: {len(matches)} measurements {m['name']} {m['derivation']}")
            x = matches[0]
            check(
                abs(float(x.value) - m["value"]) <= 1e-9 * max(1.0, abs(m["value"])),
                f"segment {s['number']}: {m['name']} = {x.value}, expected {m['value']}",
            )
            check(code_key(x.unit) == m["unit"], f"segment {s['number']}: {m['name']} unit {x.unit}")
            check(code_key(x.method) == m["method"], f"segment {s['number']}: {m['name']} method {x.method}")

    check_diameters(report, expected, measured)

    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    check(seg.SOPInstanceUID in evidence, "the SEG is not in the SR's evidence")
    check(
        set(expected["source_sop_instance_uids"]) <= evidence,
        "source instances missing from the SR's evidence",
    )


def check_diameters(report, expected, measured):
    """The TID 1501 groups: one per segment with voxels, its Long axis NUM in mm INFERRED FROM
    a two-point SCOORD POLYLINE SELECTED FROM the source image where it lies."""
    groups = report.get_image_measurement_groups()
    check(len(groups) == len(measured), f"{len(groups)} image measurement groups for {len(measured)} segments")
    by_uid = {str(g.tracking_uid): g for g in groups}
    for s in measured:
        g = by_uid.get(s["tracking_uid"])
        check(g is not None, f"segment {s['number']}: no TID 1501 group with its tracking UID")
        check(g.tracking_identifier == s["length_tracking_id"], f"segment {s['number']}: 1501 tracking id {g.tracking_identifier!r}")
        check(code_key(g.finding_type) == s["property_type"], f"segment {s['number']}: 1501 finding {g.finding_type}")
        lengths = [m for m in g.get_measurements() if code_key(m.name) == ["103339001", "SCT"]]
        check(len(lengths) == 1, f"segment {s['number']}: {len(lengths)} Long axis measurements")
        m = lengths[0]
        want = s["diameter"]
        check(abs(float(m.value) - want["mm"]) <= 1e-9 * max(1.0, want["mm"]), f"segment {s['number']}: Long axis {m.value}")
        check(code_key(m.unit) == ["mm", "UCUM"], f"segment {s['number']}: Long axis unit {m.unit}")
        check(m.derivation is None and m.method is None, f"segment {s['number']}: the Long axis has a modifier")
        children = list(m[0].ContentSequence) if "ContentSequence" in m[0] else []
        scoords = [c for c in children if c.ValueType == "SCOORD"]
        check(len(children) == 1 and len(scoords) == 1, f"segment {s['number']}: Long axis content {[c.ValueType for c in children]}")
        scoord = scoords[0]
        check(scoord.RelationshipType == "INFERRED FROM", f"SCOORD relationship {scoord.RelationshipType}")
        check(scoord.GraphicType == "POLYLINE", f"GraphicType {scoord.GraphicType}")
        points = [float(v) for v in scoord.GraphicData]
        check(points == want["graphic_data"], f"segment {s['number']}: GraphicData {points} != {want['graphic_data']}")
        image = scoord.ContentSequence[0]
        check(image.RelationshipType == "SELECTED FROM" and image.ValueType == "IMAGE", "SCOORD not SELECTED FROM an IMAGE")
        ref = image.ReferencedSOPSequence[0]
        check(ref.ReferencedSOPInstanceUID == want["sop_instance_uid"], f"segment {s['number']}: line on {ref.ReferencedSOPInstanceUID}")
        check(ref.ReferencedSOPInstanceUID in expected["source_sop_instance_uids"], "line on an unknown image")


def main():
    if len(sys.argv) != 4:
        fail("usage: check_outputs.py SEG SR EXPECTED_JSON")
    seg_path, sr_path, expected_path = sys.argv[1:]
    with open(expected_path) as f:
        expected = json.load(f)
    seg = hd.seg.segread(seg_path)
    check_segmentation(seg, expected)
    sr = hd.sr.srread(sr_path)
    check_report(sr, seg, expected)
    print(
        f"OK highdicom {hd.__version__}: {int(seg.NumberOfFrames)} frames, "
        f"{len(expected['segments'])} segments, {len(expected['measurements'])} measurements"
    )


if __name__ == "__main__":
    main()
