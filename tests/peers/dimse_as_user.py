"""One DIMSE operation against the node with pynetdicom, optionally as a user (User Identity
Negotiation, PS3.7 D.3.3.7), for tests/auth.rs.

Usage:
  dimse_as_user.py PORT OP [--calling AET] [--user NAME [--passcode P] | --jwt TOKEN]
                   [--file F] [--study UID]
      OP is echo, store (--file), find, move or get (--study; move asks for the calling AE as
      destination). --user without --passcode offers the user name alone (type 1). Prints JSON: {"established", "rejected", "result", "source", "reason",
      "positive_response" (whether the A-ASSOCIATE-AC had a User Identity sub-item), "status"
      (the final status of the operation), "matches" (C-FIND Pending responses)}.
"""

import argparse
import json

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.pdu_primitives import A_ASSOCIATE, UserIdentityNegotiation
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind as FIND_MODEL,
    StudyRootQueryRetrieveInformationModelGet as GET_MODEL,
    StudyRootQueryRetrieveInformationModelMove as MOVE_MODEL,
    Verification,
)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("op", choices=["echo", "store", "find", "move", "get"])
    p.add_argument("--calling", default="PYUSER")
    p.add_argument("--user")
    p.add_argument("--passcode")
    p.add_argument("--jwt")
    p.add_argument("--file")
    p.add_argument("--study", default="")
    a = p.parse_args()

    ext_neg = []
    if a.user or a.jwt:
        identity = UserIdentityNegotiation()
        if a.jwt:
            identity.user_identity_type = 5
            identity.primary_field = a.jwt.encode()
        elif a.passcode is None:
            identity.user_identity_type = 1
            identity.primary_field = a.user.encode()
        else:
            identity.user_identity_type = 2
            identity.primary_field = a.user.encode()
            identity.secondary_field = a.passcode.encode()
        identity.positive_response_requested = True
        ext_neg.append(identity)

    out = {"established": False, "rejected": False, "result": None, "source": None,
           "reason": None, "positive_response": False, "status": None, "matches": 0}

    def on_acse_recv(event):
        primitive = event.primitive
        if isinstance(primitive, A_ASSOCIATE) and primitive.result is not None:
            out["result"] = primitive.result
            out["source"] = primitive.result_source
            out["reason"] = primitive.diagnostic
            for item in primitive.user_information or []:
                if isinstance(item, UserIdentityNegotiation):
                    out["positive_response"] = True

    ae = AE(ae_title=a.calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    handlers = [(evt.EVT_ACSE_RECV, on_acse_recv)]
    roles = []
    if a.op == "echo":
        ae.add_requested_context(Verification)
    elif a.op == "store":
        ae.add_requested_context(CTImageStorage)
    elif a.op == "find":
        ae.add_requested_context(FIND_MODEL)
    elif a.op == "move":
        ae.add_requested_context(MOVE_MODEL)
    else:
        ae.add_requested_context(GET_MODEL)
        ae.add_requested_context(CTImageStorage)
        roles.append(build_role(CTImageStorage, scp_role=True))
        handlers.append((evt.EVT_C_STORE, lambda event: 0x0000))
    assoc = ae.associate("127.0.0.1", a.port, ae_title="PACS", ext_neg=ext_neg + roles,
                         evt_handlers=handlers)
    out["established"] = assoc.is_established
    out["rejected"] = assoc.is_rejected
    if assoc.is_established:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = a.study
        if a.op == "echo":
            out["status"] = assoc.send_c_echo().Status
        elif a.op == "store":
            out["status"] = assoc.send_c_store(dcmread(a.file)).Status
        else:
            if a.op == "find":
                query.PatientName = ""
                responses = assoc.send_c_find(query, FIND_MODEL)
            elif a.op == "move":
                responses = assoc.send_c_move(query, a.calling, MOVE_MODEL)
            else:
                responses = assoc.send_c_get(query, GET_MODEL)
            for status, _ in responses:
                if status is None:
                    continue
                if status.Status in (0xFF00, 0xFF01):
                    out["matches"] += 1
                else:
                    out["status"] = status.Status
        assoc.release()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
