"""A pynetdicom requestor offering a user identity (PS3.7 D.3.3.7), for dimse/tests/user_identity.rs.

Usage:
  user_identity.py PORT TYPE PRIMARY SECONDARY POSITIVE
      TYPE is the User-Identity-Type (1 username, 2 username and passcode, 3 Kerberos, 4 SAML,
      5 JWT); SECONDARY is the passcode (ignored unless TYPE is 2); POSITIVE is 1 to ask for a
      positive response. Requests an association with the Verification SOP Class from
      "PYIDENT" to "PACS", sends a C-ECHO when it is established, and prints JSON:
      {"established", "rejected", "result", "source", "reason", "server_response" (hex, or
      null when the A-ASSOCIATE-AC had no User Identity sub-item), "echo" (status)}.
"""

import json
import sys

from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import A_ASSOCIATE, UserIdentityNegotiation
from pynetdicom.sop_class import Verification


def main():
    port, kind, primary, secondary, positive = sys.argv[1:6]
    identity = UserIdentityNegotiation()
    identity.user_identity_type = int(kind)
    identity.primary_field = primary.encode()
    if int(kind) == 2:
        identity.secondary_field = secondary.encode()
    identity.positive_response_requested = positive == "1"

    out = {
        "established": False,
        "rejected": False,
        "result": None,
        "source": None,
        "reason": None,
        "server_response": None,
        "echo": None,
    }

    def on_acse_recv(event):
        primitive = event.primitive
        if isinstance(primitive, A_ASSOCIATE) and primitive.result is not None:
            out["result"] = primitive.result
            out["source"] = primitive.result_source
            out["reason"] = primitive.diagnostic
            for item in primitive.user_information or []:
                if isinstance(item, UserIdentityNegotiation):
                    out["server_response"] = (item.server_response or b"").hex()

    ae = AE(ae_title="PYIDENT")
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1",
        int(port),
        ae_title="PACS",
        ext_neg=[identity],
        evt_handlers=[(evt.EVT_ACSE_RECV, on_acse_recv)],
    )
    out["established"] = assoc.is_established
    out["rejected"] = assoc.is_rejected
    if assoc.is_established:
        # what the association itself recorded of the acceptor's answer
        answered = assoc.acceptor.user_identity
        if answered is not None:
            out["server_response"] = (answered.server_response or b"").hex()
        status = assoc.send_c_echo()
        out["echo"] = status.Status if status else None
        assoc.release()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
