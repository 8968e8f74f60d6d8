#!/usr/bin/env python3
"""C-FIND latency over one association (pynetdicom), study level, Study Root.

usage: cfind_latency.py HOST PORT RUNS
Prints p50/p95 of a study-list C-FIND (PatientName wildcard, limit by the node's maximum) and of
a StudyDate range C-FIND.
"""
import sys
import time

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

host, port, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ae = AE(ae_title="BENCH")
ae.add_requested_context(FIND)
assoc = ae.associate(host, port, ae_title="PACS")
assert assoc.is_established


def query(**keys):
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    for k in ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "ModalitiesInStudy",
              "StudyDescription", "AccessionNumber", "NumberOfStudyRelatedInstances"):
        setattr(q, k, "")
    for k, v in keys.items():
        setattr(q, k, v)
    return q


cases = {
    "cfind_patient_name_prefix": query(PatientName="GARC*"),
    "cfind_study_date_range": query(StudyDate="20200101-20200131"),
}
print(f"{'request':28} {'p50_ms':>8} {'p95_ms':>8} {'matches':>8}")
for name, q in cases.items():
    times, matches = [], 0
    for i in range(runs + 3):
        t = time.perf_counter()
        n = sum(1 for status, ident in assoc.send_c_find(q, FIND) if status and status.Status == 0xFF00)
        if i >= 3:
            times.append(time.perf_counter() - t)
        matches = n
    times.sort()
    print(f"{name:28} {times[len(times) // 2] * 1000:>8.1f} {times[min(len(times) - 1, int(len(times) * 0.95))] * 1000:>8.1f} {matches:>8}")
assoc.release()
