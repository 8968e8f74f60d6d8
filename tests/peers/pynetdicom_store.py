#!/usr/bin/env python3
"""A second, independent DICOM peer for the tests: pynetdicom sends C-ECHO and C-STOREs.

usage: pynetdicom_store.py HOST PORT CALLED_AET CALLING_AET FILE...
Prints one JSON object: {"echo": status, "stores": {sop_instance_uid: status}}.
"""
import json
import sys

from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.sop_class import Verification


def main():
    host, port, called, calling = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    files = sys.argv[5:]
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    datasets = [dcmread(f) for f in files]
    # one context per SOP class and transfer syntax actually needed
    needed = sorted({(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets})
    for sop_class, ts in needed:
        ae.add_requested_context(sop_class, [ts])
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        print(json.dumps({"error": "association rejected or aborted"}))
        return 2
    result = {"echo": None, "stores": {}}
    status = assoc.send_c_echo()
    result["echo"] = status.Status if status else None
    for ds in datasets:
        status = assoc.send_c_store(ds)
        result["stores"][str(ds.SOPInstanceUID)] = status.Status if status else None
    assoc.release()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
