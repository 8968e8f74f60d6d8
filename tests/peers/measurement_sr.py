"""Writes TID 1500 Measurement Reports with highdicom, as another vendor's SR would reach the node
(nothing of the node's own code is involved), or a broken SR with pydicom alone.

    python3 measurement_sr.py OUT.dcm SOURCE_DIR SPEC_JSON
    python3 measurement_sr.py --broken OUT.dcm SOURCE_DIR

SOURCE_DIR holds the source series (its first file is the study's and patient's). SPEC_JSON:
{"sop_uid": "...", "series_uid": "...", "groups": [{"tracking_id": "...", "tracking_uid": "...",
"finding_site": ["39607008", "SCT", "Lung"], "measurements": [{"concept": ["118565006", "SCT",
"Volume"], "value": 12.5, "unit": ["mL", "UCUM", "milliliter"]}]}]}. The report is a
Comprehensive 3D SR (TID 1500 with one TID 1501 Measurement Group per group, each with its
Tracking Identifier and Tracking Unique Identifier, a Finding Site and the source image).
"""

import json
import os
import sys

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid


def code(triple):
    value, scheme, meaning = triple
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def sources(source_dir):
    files = sorted(
        os.path.join(source_dir, f) for f in os.listdir(source_dir) if f.endswith(".dcm")
    )
    if not files:
        sys.exit(f"measurement_sr.py: no .dcm files in {source_dir}")
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def report(out, source_dir, spec):
    images = sources(source_dir)
    first = images[0]
    groups = []
    for g in spec["groups"]:
        measurements = [
            hd.sr.Measurement(
                name=code(m["concept"]),
                value=m["value"],
                unit=code(m["unit"]),
            )
            for m in g["measurements"]
        ]
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=g["tracking_uid"], identifier=g["tracking_id"]
                ),
                finding_type=codes.SCT.Organ if "finding" not in g else code(g["finding"]),
                finding_sites=[hd.sr.FindingSite(anatomic_location=code(g["finding_site"]))],
                measurements=measurements,
                source_images=[
                    hd.sr.SourceImageForMeasurementGroup.from_source_image(images[len(images) // 2])
                ],
            )
        )
    observation_context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name="Other^Vendor"
            ),
        )
    )
    content = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=images,
        content=content[0],
        series_instance_uid=spec.get("series_uid") or generate_uid(),
        series_number=900,
        sop_instance_uid=spec.get("sop_uid") or generate_uid(),
        instance_number=1,
        manufacturer="Other Vendor",
        is_complete=True,
    )
    sr.save_as(out, enforce_file_format=True)
    print(json.dumps({"sop_uid": sr.SOPInstanceUID, "series_uid": first.SeriesInstanceUID}))


def broken(out, source_dir):
    """An SR whose content tree no template explains: a Measurement Group without a tracking
    context, a NUM without its Measured Value Sequence, one whose value is no number, an item
    with no Value Type, a CODE without a Concept Code Sequence."""
    first = sources(source_dir)[0]
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                    "ReferringPhysicianName", "StudyID"):
        setattr(ds, keyword, getattr(first, keyword, ""))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.SeriesNumber = 901
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"

    def concept(value, scheme, meaning):
        c = Dataset()
        c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
        return Sequence([c])

    ds.ConceptNameCodeSequence = concept("126000", "DCM", "Imaging Measurement Report")
    no_value = Dataset()
    no_value.RelationshipType, no_value.ValueType = "CONTAINS", "NUM"
    no_value.ConceptNameCodeSequence = concept("118565006", "SCT", "Volume")
    nonsense = Dataset()
    nonsense.RelationshipType, nonsense.ValueType = "CONTAINS", "NUM"
    nonsense.ConceptNameCodeSequence = concept("118565006", "SCT", "Volume")
    mv = Dataset()
    mv.NumericValue = "12"  # valid here, spoilt below
    mv.MeasurementUnitsCodeSequence = concept("mL", "UCUM", "milliliter")
    nonsense.MeasuredValueSequence = Sequence([mv])
    untyped = Dataset()
    untyped.RelationshipType = "CONTAINS"
    bare_code = Dataset()
    bare_code.RelationshipType, bare_code.ValueType = "HAS CONCEPT MOD", "CODE"
    bare_code.ConceptNameCodeSequence = concept("363698007", "SCT", "Finding Site")
    group = Dataset()
    group.RelationshipType, group.ValueType = "CONTAINS", "CONTAINER"
    group.ContinuityOfContent = "SEPARATE"
    group.ConceptNameCodeSequence = concept("125007", "DCM", "Measurement Group")
    group.ContentSequence = Sequence([bare_code, no_value, nonsense, untyped])
    ds.ContentSequence = Sequence([group, Dataset()])
    ds.CompletionFlag = "PARTIAL"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate = first.StudyDate
    ds.ContentTime = "120000"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(out, enforce_file_format=True)
    # a Numeric Value that is no number (DS "1.2.3"), written over the valid one's bytes
    data = open(out, "rb").read()
    numeric_value = b"\x40\x00\x0a\xa3DS\x02\x00"  # (0040,A30A) DS, 2 bytes
    assert data.count(numeric_value + b"12") == 1
    data = data.replace(numeric_value + b"12", numeric_value + b"x2")
    open(out, "wb").write(data)
    print(json.dumps({"sop_uid": ds.SOPInstanceUID, "series_uid": ds.SeriesInstanceUID}))


def main():
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "--broken":
        broken(args[1], args[2])
    elif len(args) == 3:
        report(args[0], args[1], json.loads(args[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
