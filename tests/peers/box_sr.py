"""Writes a TID 1500 Measurement Report with highdicom, as another vendor's SR would reach the
node (nothing of the node's own code is involved): one planar ROI, the outline of box_seg.py's
box on the middle slice of the source series, with its area.

    python3 box_sr.py OUT.dcm SOURCE_DIR [--series-uid UID]

SOURCE_DIR holds the source series (single-frame images of one series, e.g. `pacs synth`'s).
The report is a Comprehensive 3D SR whose one TID 1410 Planar ROI Measurement Group (Tracking
Identifier "box", a new Tracking Unique Identifier, Finding Site lung) has an image region (a
closed SCOORD POLYLINE around the middle half of the rows and columns of the slice at index
len // 2, sorted by position along the slice normal, the slice box_seg.py's box lies on) and the
box's area in mm2; its evidence is the whole series. Its Series Instance UID is UID (default: a
new one). Prints {"sop_uid": ..., "series_uid": ..., "source_sop_uid": ..., "area_mm2": ...}.
(measurement_sr.py writes measurement groups without image regions.)
"""

import argparse
import json

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from box_seg import sources  # the same slices, in the same order, as the SEG's box


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("source_dir")
    parser.add_argument("--series-uid", default=None)
    args = parser.parse_args()

    images = sources(args.source_dir)
    image = images[len(images) // 2]
    rows, columns = image.Rows, image.Columns
    # image coordinates (column, row) of the box's outer edges (box_seg.py's pixels
    # rows // 4 .. 3 * rows // 4 - 1, likewise the columns)
    c0, c1 = float(columns // 4), float(3 * columns // 4)
    r0, r1 = float(rows // 4), float(3 * rows // 4)
    row_spacing, column_spacing = (float(v) for v in image.PixelSpacing)
    area = (c1 - c0) * column_spacing * (r1 - r0) * row_spacing
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1], [c0, r0]]),
        source_image=hd.sr.SourceImageForRegion.from_source_image(image),
    )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="box"),
        referenced_region=region,
        finding_type=codes.SCT.Tissue,
        finding_sites=[
            hd.sr.FindingSite(
                anatomic_location=hd.sr.CodedConcept(
                    value="39607008", scheme_designator="SCT", meaning="Lung"
                )
            )
        ],
        measurements=[
            hd.sr.Measurement(name=codes.SCT.Area, value=area, unit=codes.UCUM.SquareMillimeter)
        ],
    )
    observation_context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name="Other^Vendor"
            ),
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=images,
        content=report[0],
        series_instance_uid=args.series_uid or hd.UID(),
        series_number=900,
        series_description="box ROI (other vendor)",
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Other Vendor",
        is_complete=True,
    )
    sr.save_as(args.out, enforce_file_format=True)
    print(
        json.dumps(
            {
                "sop_uid": sr.SOPInstanceUID,
                "series_uid": sr.SeriesInstanceUID,
                "source_sop_uid": image.SOPInstanceUID,
                "area_mm2": area,
            }
        )
    )


if __name__ == "__main__":
    main()
