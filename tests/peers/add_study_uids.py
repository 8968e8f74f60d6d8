#!/usr/bin/env python3
"""Copies DICOM files into OUT_DIR, adding a Study and Series Instance UID where missing.

usage: add_study_uids.py OUT_DIR FILE...
"""
import os
import sys

from pydicom import dcmread
from pydicom.uid import generate_uid

out_dir = sys.argv[1]
for path in sys.argv[2:]:
    ds = dcmread(path)
    if not ds.get("StudyInstanceUID"):
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(ds.SOPInstanceUID), "study"])
    if not ds.get("SeriesInstanceUID"):
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(ds.SOPInstanceUID), "series"])
    ds.save_as(os.path.join(out_dir, os.path.basename(path)), enforce_file_format=True)
