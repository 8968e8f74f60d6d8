#!/usr/bin/env python3
"""Writes COUNT TID 1500 Measurement Reports (Comprehensive 3D SR) of GROUPS measurement groups
each, with pydicom (one template, new UIDs per file: fast), for bench/measurements.sh.

usage: measurement_srs.py OUT_DIR COUNT GROUPS sr|plain

`plain` writes the same data sets under Secondary Capture Image Storage with Modality OT: the
same bytes to receive and store, but no SR for ingest to read, so the difference in ingest time
is the cost of reading and indexing the measurements.
"""
import os
import sys

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

out, count, groups, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def code(value, scheme, meaning):
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return Sequence([c])


def item(rel, vt, name, **values):
    d = Dataset()
    d.RelationshipType, d.ValueType = rel, vt
    d.ConceptNameCodeSequence = code(*name)
    for k, v in values.items():
        setattr(d, k, v)
    return d


def num(name, value, unit):
    mv = Dataset()
    mv.NumericValue = value
    mv.MeasurementUnitsCodeSequence = code(*unit)
    return item("CONTAINS", "NUM", name, MeasuredValueSequence=Sequence([mv]))


def group(n):
    return item(
        "CONTAINS", "CONTAINER", ("125007", "DCM", "Measurement Group"),
        ContinuityOfContent="SEPARATE",
        ContentSequence=Sequence([
            item("HAS OBS CONTEXT", "TEXT", ("112039", "DCM", "Tracking Identifier"), TextValue=f"Lesion {n}"),
            item("HAS OBS CONTEXT", "UIDREF", ("112040", "DCM", "Tracking Unique Identifier"), UID=f"2.25.{1000 + n}"),
            item("HAS CONCEPT MOD", "CODE", ("363698007", "SCT", "Finding Site"), ConceptCodeSequence=code("39607008", "SCT", "Lung")),
            num(("118565006", "SCT", "Volume"), f"{10 + n}.5", ("mL", "UCUM", "milliliter")),
            num(("81827009", "SCT", "Diameter"), f"{20 + n}", ("mm", "UCUM", "millimeter")),
        ]),
    )


ds = Dataset()
ds.PatientName, ds.PatientID = "Bench^Sr", "BENCH-SR"
ds.StudyInstanceUID = generate_uid()
ds.StudyDate, ds.StudyTime = "20240101", "120000"
ds.SeriesInstanceUID = generate_uid()
ds.SeriesNumber, ds.InstanceNumber = 1, 1
if kind == "sr":
    ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.88.34", "SR"
else:
    ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.7", "OT"
ds.ValueType = "CONTAINER"
ds.ConceptNameCodeSequence = code("126000", "DCM", "Imaging Measurement Report")
ds.ContinuityOfContent = "SEPARATE"
ds.ContentSequence = Sequence([
    item("CONTAINS", "CONTAINER", ("126010", "DCM", "Imaging Measurements"),
         ContinuityOfContent="SEPARATE", ContentSequence=Sequence([group(n) for n in range(groups)])),
])
os.makedirs(out, exist_ok=True)
for i in range(count):
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(os.path.join(out, f"{i:05}.dcm"), enforce_file_format=True)
