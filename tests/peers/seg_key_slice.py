"""What OHIF should draw for the AI results of one source series, from the objects themselves
read by peers nobody here wrote: dicomweb-client finds the study's SEG, SR and DOC (report)
series, highdicom decodes the SEG's frames. Prints one JSON object for tests/e2e/ohif-ai.mjs.

    python3 seg_key_slice.py DICOMWEB_URL STUDY_UID SOURCE_SERIES_UID

The chosen slice is the source instance with the most segments on it, and of those the one where
the largest segment has most pixels; `mask` is
the union of every segment on it, one string of 0/1 per row. Geometry (position, orientation,
spacing) is the source instance's, for mapping pixels to the viewport. `diameters` are the SR's
TID 1501 lengths (highdicom's reading): value in mm, the source image and the line's points.
"""

import json
import sys
import tempfile

import highdicom as hd
import numpy as np
from dicomweb_client.api import DICOMwebClient


def fail(message):
    print(f"seg_key_slice.py: {message}", file=sys.stderr)
    sys.exit(1)


def value(dataset_json, tag):
    v = dataset_json.get(tag, {}).get("Value")
    return v[0] if v else None


def main():
    if len(sys.argv) != 4:
        fail(__doc__)
    url, study, source_series = sys.argv[1:4]
    client = DICOMwebClient(url)
    series = {}
    for s in client.search_for_series(study_instance_uid=study):
        series.setdefault(value(s, "00080060"), []).append(value(s, "0020000E"))
    for modality in ("SEG", "SR", "DOC"):
        if len(series.get(modality, [])) != 1:
            fail(f"expected one {modality} series in study {study}: {series}")

    seg_series = series["SEG"][0]
    instances = client.retrieve_series(study, seg_series)
    with tempfile.NamedTemporaryFile(suffix=".dcm") as f:
        instances[0].save_as(f.name, enforce_file_format=True)
        seg = hd.seg.segread(f.name)

    source = client.search_for_instances(
        study_instance_uid=study, series_instance_uid=source_series,
        fields=["00200013", "00200032", "00200037", "00280030", "00280010", "00280011"])
    source = sorted(source, key=lambda i: int(value(i, "00200013")))
    uids = [value(i, "00080018") for i in source]
    numbers = list(seg.segment_numbers)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=numbers,
        assert_missing_frames_are_empty=True)
    masks = pixels > 0  # [slice, row, col, segment]
    largest = int(masks.sum(axis=(0, 1, 2)).argmax())
    # the slice that holds the most segments, then where the largest is largest (a CT slice
    # with body, lungs and bone rather than one below the lungs)
    present = masks.any(axis=(1, 2)).sum(axis=-1)
    k = int(np.lexsort((masks[..., largest].sum(axis=(1, 2)), present))[-1])
    union = masks[k].any(axis=-1)
    chosen = source[k]

    sr_instances = client.retrieve_series(study, series["SR"][0])
    if len(sr_instances) != 1:
        fail(f"expected one SR instance, got {len(sr_instances)}")
    with tempfile.NamedTemporaryFile(suffix=".dcm") as f:
        sr_instances[0].save_as(f.name, enforce_file_format=True)
        sr = hd.sr.srread(f.name)
    diameters = []
    for g in sr.content.get_image_measurement_groups():
        for m in g.get_measurements():
            scoords = [c for c in m[0].get("ContentSequence", []) if c.ValueType == "SCOORD"]
            if not scoords:
                continue
            ref = scoords[0].ContentSequence[0].ReferencedSOPSequence[0]
            diameters.append({
                "tracking_identifier": g.tracking_identifier,
                "tracking_uid": str(g.tracking_uid),
                "value": float(m.value),
                "unit": str(m.unit.value),
                "sop_instance_uid": ref.ReferencedSOPInstanceUID,
                "graphic_data": [float(v) for v in scoords[0].GraphicData],
            })
    if not diameters:
        fail("the SR holds no TID 1501 length with image coordinates")
    meta = client.retrieve_instance_metadata(study, source_series, uids[k])

    def floats(tag):
        return [float(x) for x in meta[tag]["Value"]]

    result = {
        "study_uid": study,
        "source_series_uid": source_series,
        "seg_series_uid": seg_series,
        "sr_series_uid": series["SR"][0],
        "doc_series_uid": series["DOC"][0],
        "seg_type": str(seg.SegmentationType),
        "slices": len(uids),
        "slice_index": k,
        "instance_number": int(value(chosen, "00200013")),
        "sop_instance_uid": uids[k],
        "largest_segment": numbers[largest],
        "segment_labels": [seg.get_segment_description(n).segment_label for n in numbers],
        "rows": int(union.shape[0]),
        "columns": int(union.shape[1]),
        "image_position": floats("00200032"),
        "image_orientation": floats("00200037"),
        "pixel_spacing": floats("00280030"),
        "mask_pixels": int(union.sum()),
        "diameters": diameters,
        "mask": ["".join("1" if v else "0" for v in row) for row in union],
    }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
