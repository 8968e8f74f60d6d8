"""Writes a DICOM Segmentation with highdicom, as another vendor's SEG would reach the node
(nothing of the node's own code is involved): one segment, a box on a few middle slices of the
source series.

    python3 box_seg.py OUT.dcm SOURCE_DIR [--slices N] [--labelmap] [--series-uid UID]

SOURCE_DIR holds the source series (single-frame images of one series, e.g. `pacs synth`'s).
The box covers the middle half of the rows and columns on N (default 5) slices around the
middle of the series, sorted by position along the slice normal. The SEG is BINARY (a LABELMAP
with --labelmap), its Series Instance UID is UID (default: a new one), its Referenced Series
Sequence names the source series, and empty frames are left out. Prints {"sop_uid": ...,
"series_uid": ..., "frames": ..., "source_sop_uids": [...]}: the SEG's UIDs, its number of
frames and the source images the box lies on.
"""

import argparse
import json
import os
import sys

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes


def sources(source_dir):
    """The source series' images in order along the slice normal (box_sr.py uses it too)."""
    files = sorted(
        os.path.join(source_dir, f) for f in os.listdir(source_dir) if f.endswith(".dcm")
    )
    if not files:
        sys.exit(f"{os.path.basename(sys.argv[0])}: no .dcm files in {source_dir}")
    images = [pydicom.dcmread(f) for f in files]
    first = images[0]
    orientation = np.array(first.ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(
        images, key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=float)))
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("source_dir")
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--labelmap", action="store_true")
    parser.add_argument("--series-uid", default=None)
    args = parser.parse_args()

    images = sources(args.source_dir)
    rows, columns = images[0].Rows, images[0].Columns
    n = max(1, min(args.slices, len(images)))
    start = (len(images) - n) // 2
    mask = np.zeros((len(images), rows, columns), dtype=np.uint8)
    mask[start : start + n, rows // 4 : 3 * rows // 4, columns // 4 : 3 * columns // 4] = 1
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="box",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=mask,
        segmentation_type=(
            hd.seg.SegmentationTypeValues.LABELMAP
            if args.labelmap
            else hd.seg.SegmentationTypeValues.BINARY
        ),
        segment_descriptions=[description],
        series_instance_uid=args.series_uid or hd.UID(),
        series_number=800,
        series_description="box (other vendor)",
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Other Vendor",
        manufacturer_model_name="box_seg.py",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(args.out, enforce_file_format=True)
    print(
        json.dumps(
            {
                "sop_uid": seg.SOPInstanceUID,
                "series_uid": seg.SeriesInstanceUID,
                "frames": int(seg.NumberOfFrames),
                "source_sop_uids": [d.SOPInstanceUID for d in images[start : start + n]],
            }
        )
    )


if __name__ == "__main__":
    main()
