#!/usr/bin/env python3
"""Lists DICOM files as the tests' reference: path, SOP Instance UID, SOP Class UID, transfer syntax.

usage: list_files.py FILE...   (files pydicom cannot read are left out)
"""
import json
import sys

from pydicom import dcmread

out = []
for path in sys.argv[1:]:
    try:
        ds = dcmread(path)
        out.append({
            "path": path,
            "sop_instance_uid": str(ds.SOPInstanceUID),
            "sop_class_uid": str(ds.SOPClassUID),
            "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
            "has_study_and_series": bool(ds.get("StudyInstanceUID")) and bool(ds.get("SeriesInstanceUID")),
        })
    except Exception:  # noqa: BLE001 - unreadable files are simply not listed
        pass
print(json.dumps(out))
