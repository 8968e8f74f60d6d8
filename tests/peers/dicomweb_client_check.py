#!/usr/bin/env python3
"""Drives the node's DICOMweb with the `dicomweb-client` package (an independent client).

usage: dicomweb_client_check.py BASE_URL STUDY SERIES INSTANCE ROWS COLUMNS STOW_FILE
Prints a JSON summary; exits non-zero on the first mismatch.
"""
import json
import sys

from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread


def main():
    base, study, series, instance = sys.argv[1:5]
    rows, columns = int(sys.argv[5]), int(sys.argv[6])
    stow_file = sys.argv[7]
    client = DICOMwebClient(url=base)
    summary = {}

    studies = client.search_for_studies()
    assert any(s["0020000D"]["Value"][0] == study for s in studies), "study not listed"
    found = client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert len(found) == 1, found
    summary["studies"] = len(studies)

    series_list = client.search_for_series(study_instance_uid=study)
    assert [s["0020000E"]["Value"][0] for s in series_list] == [series], series_list
    summary["series"] = len(series_list)

    instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=series)
    assert any(i["00080018"]["Value"][0] == instance for i in instances)
    summary["instances"] = len(instances)

    metadata = client.retrieve_series_metadata(study_instance_uid=study, series_instance_uid=series)
    assert len(metadata) == len(instances), (len(metadata), len(instances))
    pixel = metadata[0]["7FE00010"]
    assert "BulkDataURI" in pixel and pixel["BulkDataURI"].startswith("http"), pixel
    summary["metadata"] = len(metadata)

    frames = client.retrieve_instance_frames(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=instance,
        frame_numbers=[1],
        media_types=("application/octet-stream",),
    )
    assert len(frames) == 1 and len(frames[0]) == rows * columns * 2, [len(f) for f in frames]
    summary["frame_bytes"] = len(frames[0])

    ds = client.retrieve_instance(study_instance_uid=study, series_instance_uid=series, sop_instance_uid=instance)
    assert ds.SOPInstanceUID == instance and ds.Rows == rows
    assert len(ds.PixelData) == rows * columns * 2
    summary["retrieved"] = ds.SOPInstanceUID

    bulk = client.retrieve_bulkdata(pixel["BulkDataURI"])
    assert len(bulk) == 1 and len(bulk[0]) == rows * columns * 2, [len(b) for b in bulk]

    to_store = dcmread(stow_file)
    response = client.store_instances(datasets=[to_store])
    referenced = response.get("ReferencedSOPSequence", [])
    assert len(referenced) == 1 and referenced[0].ReferencedSOPInstanceUID == to_store.SOPInstanceUID, response
    again = client.search_for_instances(search_filters={"SOPInstanceUID": to_store.SOPInstanceUID})
    assert len(again) == 1, again
    summary["stored"] = to_store.SOPInstanceUID

    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
