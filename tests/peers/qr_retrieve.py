"""C-MOVE and C-GET against the node with pynetdicom, for tests/dimse_retrieve.rs.

Usage:
  qr_retrieve.py move NODE_PORT DEST_PORT STUDY_UID [--cancel-after N] [--fail-every K] [--delay S]
      Starts a pynetdicom storage SCP "PYDEST" on DEST_PORT (it must be registered in the node as
      a move destination), asks the node to move the study there, and prints JSON: every
      C-MOVE response (status and counts), the final identifier's Failed SOP Instance UID List,
      and the SOP Instance UIDs the SCP received. --fail-every K makes the SCP answer 0xA700 to
      every K-th C-STORE; --cancel-after N sends a C-CANCEL after N Pending responses; --delay
      slows each C-STORE down.
  qr_retrieve.py get NODE_PORT STUDY_UID [--cancel-after N] [--delay S]
      C-GET of the study, receiving on the same association; prints JSON as above, plus the
      received data sets' SOP Instance UIDs.
"""

import argparse
import json
import threading
import time

from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet as GET_MODEL,
    StudyRootQueryRetrieveInformationModelMove as MOVE_MODEL,
)


def identifier(study):
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study
    return ds


def responses_to_json(responses):
    out = []
    for status, ident in responses:
        if status is None:
            out.append({"status": None})
            continue
        entry = {"status": int(status.Status)}
        for key in (
            "NumberOfRemainingSuboperations",
            "NumberOfCompletedSuboperations",
            "NumberOfFailedSuboperations",
            "NumberOfWarningSuboperations",
        ):
            if key in status:
                entry[key] = int(status[key].value)
        if ident is not None and "FailedSOPInstanceUIDList" in ident:
            value = ident.FailedSOPInstanceUIDList
            if isinstance(value, str):
                value = [value]
            entry["failed_uids"] = [str(v) for v in value]
        out.append(entry)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["move", "get"])
    parser.add_argument("node_port", type=int)
    parser.add_argument("rest", nargs="+")
    parser.add_argument("--cancel-after", type=int, default=0)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()

    received = []
    lock = threading.Lock()

    def on_store(event):
        if args.delay:
            time.sleep(args.delay)
        ds = event.dataset
        with lock:
            received.append(str(ds.SOPInstanceUID))
            n = len(received)
        if args.fail_every and n % args.fail_every == 0:
            return 0xA700
        return 0x0000

    handlers = [(evt.EVT_C_STORE, on_store)]
    result = {}
    if args.mode == "move":
        dest_port, study = int(args.rest[0]), args.rest[1]
        scp_ae = AE(ae_title="PYDEST")
        scp_ae.supported_contexts = StoragePresentationContexts
        scp = scp_ae.start_server(("127.0.0.1", dest_port), block=False, evt_handlers=handlers)
        ae = AE(ae_title="PYMOVE")
        ae.add_requested_context(MOVE_MODEL)
        assoc = ae.associate("127.0.0.1", args.node_port, ae_title="PACS")
        assert assoc.is_established, "association refused"
        responses = []
        pending = 0
        cancelled = False
        for status, ident in assoc.send_c_move(identifier(study), "PYDEST", MOVE_MODEL, msg_id=7):
            responses.append((status, ident))
            if status is not None and status.Status == 0xFF00:
                pending += 1
                if args.cancel_after and pending == args.cancel_after and not cancelled:
                    cid = assoc._get_valid_context(MOVE_MODEL, "", "scu").context_id
                    assoc.send_c_cancel(7, cid)
                    cancelled = True
        assoc.release()
        time.sleep(0.5)
        scp.shutdown()
    else:
        study = args.rest[0]
        ae = AE(ae_title="PYGET")
        ae.add_requested_context(GET_MODEL)
        roles = []
        for cx in StoragePresentationContexts[:120]:
            ae.add_requested_context(cx.abstract_syntax)
            roles.append(build_role(cx.abstract_syntax, scp_role=True))
        assoc = ae.associate(
            "127.0.0.1", args.node_port, ae_title="PACS", ext_neg=roles, evt_handlers=handlers
        )
        assert assoc.is_established, "association refused"
        responses = []
        pending = 0
        cancelled = False
        for status, ident in assoc.send_c_get(identifier(study), GET_MODEL, msg_id=9):
            responses.append((status, ident))
            if status is not None and status.Status == 0xFF00:
                pending += 1
                if args.cancel_after and pending == args.cancel_after and not cancelled:
                    cid = assoc._get_valid_context(GET_MODEL, "", "scu").context_id
                    assoc.send_c_cancel(9, cid)
                    cancelled = True
        assoc.release()
    result["responses"] = responses_to_json(responses)
    with lock:
        result["received"] = list(received)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
