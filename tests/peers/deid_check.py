#!/usr/bin/env python3
"""An independent check of de-identified DICOM files against PS3.15 Table E.1-1.

The table comes from the PyPI package dicom-anonymizer (its own transcription of the 2026c
edition: dicomanonymizer.dicom_anonymization_databases.dicomfields_2026c), not from the node's
table, and the files are read with pydicom. For every file (recursing into sequences):

- no attribute the Basic Profile removes (X) is present, unless an option in force keeps it;
- with --expect-kept KEYWORD=VALUE, that attribute is there with its original value;
- every attribute replaced by a dummy (D) that is present has a value;
- every UID the profile replaces (U) is in the 2.25 form, unless --retain-uids;
- no private attribute (with --retain-safe-private: none the data set does not declare safe
  in its Private Data Element Characteristics Sequence), no curve (50xx) or overlay data/comments (60xx,3000/4000);
- Patient Identity Removed is YES, the De-identification Method Code Sequence holds 113100 and
  the codes of the options given, Longitudinal Temporal Information Modified is as expected;
- none of the --forbid strings (original names, IDs, UIDs) occurs anywhere in the file's bytes.

Prints a JSON summary; exits 1 when anything is wrong.

Two helpers for SEG tests: `deid_check.py make-seg OUT CT...` writes a highdicom SEG of a box
over the CT slices; `deid_check.py seg-refs SEG FILE_OR_DIR...` reads an (exported) SEG with
highdicom and fails unless every source image it references is among the files given;
`make-sr OUT CT...` writes a highdicom Comprehensive 3D SR measurement report over the first
slice; `sr-refs SR FILE_OR_DIR...` reads an (exported) SR with highdicom and fails unless every
Referenced SOP Instance UID in it (evidence, image regions) is among the files given.

usage: deid_check.py [--retain-uids] [--retain-longitudinal-modified-dates]
                     [--clean-descriptors] [--retain-patient-characteristics]
                     [--retain-device-identity] [--retain-institution-identity]
                     [--retain-safe-private]
                     [--expect-kept KEYWORD=VALUE ...] [--forbid S ...] FILE_OR_DIR...
"""

import argparse
import json
import os
import sys

import pydicom
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table


def tagset(tags):
    # (group, element) pairs; the masked repeating groups (group, element, mask, mask) of
    # curves and overlays are checked on their own below
    return {(t[0] << 16) | t[1] for t in tags if len(t) == 2}


X = tagset(table.X_TAGS)
D = tagset(table.D_TAGS)
U = tagset(table.U_TAGS)
Z = tagset(table.Z_TAGS)
# combined codes: present or not, but never with the original value (checked by --forbid)
COMBINED = (
    tagset(table.X_Z_TAGS)
    | tagset(table.X_D_TAGS)
    | tagset(table.X_Z_D_TAGS)
    | tagset(table.Z_D_TAGS)
    | tagset(table.X_Z_U_STAR_TAGS)
)

# Option codes (PS3.16 CID 7050)
CODES = {
    "clean_descriptors": "113105",
    "retain_longitudinal_modified_dates": "113107",
    "retain_uids": "113110",
    "retain_patient_characteristics": "113108",
    "retain_device_identity": "113109",
    "retain_institution_identity": "113112",
    "retain_safe_private": "113111",
}


def declared_safe(ds):
    """The private tags a data set declares safe in its Private Data Element Characteristics
    Sequence (0008,0300): a SAFE block whole, a MIXED block's Nonidentifying Private Elements,
    the private creators of those blocks (PS3.3 C.12.1.1.7, PS3.15 E.3.10)."""
    safe = set()
    for item in ds.get("PrivateDataElementCharacteristicsSequence", []):
        group = item.get("PrivateGroupReference")
        creator = str(item.get("PrivateCreatorReference", "")).strip()
        status = item.get("BlockIdentifyingInformationStatus")
        if group is None or group % 2 == 0:
            continue
        block = next(
            (b for b in range(0x10, 0x100)
             if (group << 16 | b) in ds and str(ds[group << 16 | b].value).strip() == creator),
            None,
        )
        if block is None or status not in ("SAFE", "MIXED"):
            continue
        if status == "SAFE":
            offsets = range(0x100)
        else:
            listed = item.get("NonidentifyingPrivateElements", [])
            offsets = [listed] if isinstance(listed, int) else list(listed)
        safe.add(group << 16 | block)
        safe.update(group << 16 | block << 8 | (o & 0xFF) for o in offsets)
    return safe

# What the Retain Patient Characteristics, Device Identity and Institution Identity Options keep
# (their K and C entries in PS3.15 Table E.1-1): this checker's own short list of the ones a
# modality commonly writes, since dicom-anonymizer has no option columns. With an option, these
# may stay; without it the Basic Profile's check above applies to them.
KEPT_BY_OPTION = {
    "retain_patient_characteristics": {
        0x00100040,  # Patient's Sex
        0x00101010,  # Patient's Age
        0x00101020,  # Patient's Size
        0x00101030,  # Patient's Weight
        0x00102160,  # Ethnic Group
        0x001021A0,  # Smoking Status
        0x001021C0,  # Pregnancy Status
    },
    "retain_device_identity": {
        0x00081010,  # Station Name
        0x00181000,  # Device Serial Number
        0x00181002,  # Device UID
        0x00181004,  # Plate ID
        0x00181005,  # Generator ID
        0x00181008,  # Gantry ID
        0x0018700A,  # Detector ID
    },
    "retain_institution_identity": {
        0x00080080,  # Institution Name
        0x00080081,  # Institution Address
        0x00080082,  # Institution Code Sequence
        0x00081040,  # Institutional Department Name
    },
}

# With the Clean Descriptors Option, text attributes the Basic Profile removes may be kept,
# cleaned: dicom-anonymizer has no option columns, so any text VR is exempt from the X check
# (the --forbid check still finds any identity left in them).
DESCRIPTOR_VRS = {"LO", "SH", "ST", "LT", "UT", "UC"}


def walk(dataset, path=""):
    """(where, element, the data set holding it) of every element, sequences included."""
    for element in dataset:
        here = f"{path}{element.tag:08X}"
        yield here, element, dataset
        if element.VR == "SQ" and element.value is not None:
            for i, item in enumerate(element.value):
                yield from walk(item, f"{here}/{i}/")


def check_file(path, args):
    problems = []
    ds = pydicom.dcmread(path)
    dates_kept = args.retain_longitudinal_modified_dates
    safe_in = {}
    for where, element, holder in walk(ds):
        tag = int(element.tag)
        group = tag >> 16
        vr = element.VR
        if group % 2 == 1:
            if args.retain_safe_private:
                if id(holder) not in safe_in:
                    safe_in[id(holder)] = declared_safe(holder)
                if tag in safe_in[id(holder)]:
                    continue
            problems.append(f"{where}: private attribute kept")
            continue
        if group & 0xFF00 == 0x5000 or (
            group & 0xFF00 == 0x6000 and (tag & 0xFFFF) in (0x3000, 0x4000)
        ):
            problems.append(f"{where}: curve or overlay kept")
            continue
        exempt_dates = dates_kept and vr in ("DA", "DT", "TM")
        exempt_desc = args.clean_descriptors and vr in DESCRIPTOR_VRS
        kept = any(tag in tags for option, tags in KEPT_BY_OPTION.items() if getattr(args, option))
        if tag in X and not (exempt_dates or exempt_desc or kept):
            problems.append(f"{where} ({element.keyword}): should have been removed (X)")
        if tag in D and vr != "SQ" and (element.value is None or element.value == ""):
            problems.append(f"{where} ({element.keyword}): D with no value")
        if tag in U and vr == "UI" and not (args.retain_uids or kept):
            values = element.value if element.VM > 1 else [element.value]
            for v in values:
                if v and not str(v).startswith("2.25."):
                    problems.append(f"{where} ({element.keyword}): UID {v} not replaced")
        if tag in Z and vr in ("DA", "DT") and not dates_kept and element.value not in (None, ""):
            problems.append(f"{where} ({element.keyword}): date kept without the option")
    if ds.get("PatientIdentityRemoved") != "YES":
        problems.append("Patient Identity Removed is not YES")
    codes = sorted(
        item.CodeValue for item in ds.get("DeidentificationMethodCodeSequence", [])
    )
    expected = sorted(
        ["113100"] + [code for option, code in CODES.items() if getattr(args, option)]
    )
    if codes != expected:
        problems.append(f"De-identification Method codes {codes}, expected {expected}")
    temporal = ds.get("LongitudinalTemporalInformationModified")
    want = "MODIFIED" if dates_kept else "REMOVED"
    if temporal != want:
        problems.append(f"Longitudinal Temporal Information Modified {temporal}, expected {want}")
    for expected in args.expect_kept:
        keyword, _, value = expected.partition("=")
        if str(ds.get(keyword, "")) != value:
            problems.append(f"{keyword} is {str(ds.get(keyword, ''))!r}, expected {value!r} kept")
    if ds.file_meta.MediaStorageSOPInstanceUID != ds.SOPInstanceUID:
        problems.append("Media Storage SOP Instance UID differs from SOP Instance UID")
    raw = open(path, "rb").read()
    for s in args.forbid:
        if s and s.encode() in raw:
            problems.append(f"original identifier {s!r} found in the file")
    return problems, {
        "patient_id": str(ds.get("PatientID", "")),
        "patient_name": str(ds.get("PatientName", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "sop_uid": str(ds.get("SOPInstanceUID", "")),
        "study_date": str(ds.get("StudyDate", "")),
        "sop_class": str(ds.get("SOPClassUID", "")),
        "path": path,
    }


def make_seg(out, ct_files):
    import highdicom as hd
    import numpy as np
    from pydicom.sr.codedict import codes

    images = sorted(
        (pydicom.dcmread(f) for f in ct_files),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    mask = np.zeros((len(images), images[0].Rows, images[0].Columns), dtype=bool)
    mask[:, 10:30, 10:30] = True
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
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="deid test",
        manufacturer_model_name="deid test",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(out)
    return 0


def make_sr(out, ct_files):
    import highdicom as hd
    import numpy as np
    from pydicom.sr.codedict import codes

    images = sorted(
        (pydicom.dcmread(f) for f in ct_files),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 10.0]]),
        source_image=hd.sr.SourceImageForRegion.from_source_image(images[0]),
    )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="roi 1"),
        referenced_region=region,
        measurements=[
            hd.sr.Measurement(
                name=codes.SCT.Area, value=400.0, unit=codes.UCUM.SquareMillimeter
            )
        ],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=images,
        content=report[0],
        series_number=101,
        series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="deid test",
    )
    sr.save_as(out)
    return 0


def exported_uids(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files.extend(os.path.join(root, n) for n in names)
        else:
            files.append(p)
    out = {}
    for f in files:
        d = pydicom.dcmread(f, stop_before_pixels=True)
        out[d.SOPInstanceUID] = (d.StudyInstanceUID, d.SeriesInstanceUID)
    return out


def sr_refs(sr_path, paths):
    import highdicom as hd

    sr = hd.sr.srread(sr_path)
    exported = exported_uids(paths)
    refs = sorted(
        {str(e.value) for _, e, _ in walk(sr) if int(e.tag) == 0x00081155}
    )
    missing = [r for r in refs if r not in exported]
    print(json.dumps({"references": len(refs), "missing": missing}))
    return 1 if missing or not refs else 0


def seg_refs(seg_path, paths):
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files.extend(os.path.join(root, n) for n in names)
        else:
            files.append(p)
    exported = {}
    for f in files:
        d = pydicom.dcmread(f, stop_before_pixels=True)
        exported[d.SOPInstanceUID] = (d.StudyInstanceUID, d.SeriesInstanceUID)
    refs = seg.get_source_image_uids()
    missing = [r for r in refs if exported.get(r[2]) != (r[0], r[1])]
    print(json.dumps({"references": len(refs), "missing": missing}))
    return 1 if missing or not refs else 0


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "make-seg":
        return make_seg(sys.argv[2], sys.argv[3:])
    if len(sys.argv) > 2 and sys.argv[1] == "make-sr":
        return make_sr(sys.argv[2], sys.argv[3:])
    if len(sys.argv) > 2 and sys.argv[1] == "sr-refs":
        return sr_refs(sys.argv[2], sys.argv[3:])
    if len(sys.argv) > 2 and sys.argv[1] == "seg-refs":
        return seg_refs(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser()
    parser.add_argument("--retain-uids", action="store_true")
    parser.add_argument("--retain-longitudinal-modified-dates", action="store_true")
    parser.add_argument("--clean-descriptors", action="store_true")
    parser.add_argument("--retain-patient-characteristics", action="store_true")
    parser.add_argument("--retain-device-identity", action="store_true")
    parser.add_argument("--retain-institution-identity", action="store_true")
    parser.add_argument("--retain-safe-private", action="store_true")
    # KEYWORD=VALUE: the attribute must be in every file with this value (what an option keeps)
    parser.add_argument("--expect-kept", action="append", default=[])
    parser.add_argument("--forbid", action="append", default=[])
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    files = []
    for p in args.paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files.extend(os.path.join(root, n) for n in names)
        else:
            files.append(p)
    files.sort()
    report = {"files": len(files), "problems": {}, "instances": []}
    for f in files:
        problems, ids = check_file(f, args)
        if problems:
            report["problems"][f] = problems
        report["instances"].append(ids)
    print(json.dumps(report))
    return 1 if report["problems"] or not files else 0


if __name__ == "__main__":
    sys.exit(main())
