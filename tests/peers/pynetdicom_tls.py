"""C-ECHO and, with --file, C-STORE against the node's DIMSE TLS port with pynetdicom, through an
ssl.SSLContext (tls_args), for tests/dimse_tls.rs.

Usage:
  pynetdicom_tls.py PORT --ca CA.pem [--cert C.pem --key K.pem] [--calling AET] [--file F]
                    [--move DEST --study UID] [--tls12]
      --tls12 caps the protocol at TLS 1.2; --move sends a Study Root C-MOVE of the study to
      DEST (DCMTK's movescu has no TLS options). Prints JSON: {"established", "error", "echo"
      (status), "store" (status), "move" (final status), "completed" (its sub-operations),
      "version" (the TLS version negotiated)}.
"""

import argparse
import json
import ssl

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelMove as MOVE_MODEL,
    Verification,
)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--calling", default="PYTLS")
    p.add_argument("--file")
    p.add_argument("--move")
    p.add_argument("--study")
    p.add_argument("--tls12", action="store_true")
    a = p.parse_args()

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=a.ca)
    if a.cert:
        context.load_cert_chain(a.cert, a.key)
    if a.tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2

    ae = AE(ae_title=a.calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MOVE_MODEL)
    out = {"established": False, "error": None, "echo": None, "store": None, "move": None,
           "completed": None, "version": None}
    try:
        assoc = ae.associate(
            "127.0.0.1", a.port, ae_title="PACS", tls_args=(context, "127.0.0.1")
        )
    except Exception as e:  # a refused handshake
        out["error"] = repr(e)
        print(json.dumps(out))
        return
    if assoc.is_established:
        out["established"] = True
        socket = assoc.dul.socket.socket
        out["version"] = socket.version() if hasattr(socket, "version") else None
        out["echo"] = assoc.send_c_echo().Status
        if a.file:
            out["store"] = assoc.send_c_store(dcmread(a.file)).Status
        if a.move:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = a.study
            for status, _ in assoc.send_c_move(identifier, a.move, MOVE_MODEL):
                if status is not None and status.Status not in (0xFF00, 0xFF01):
                    out["move"] = status.Status
                    out["completed"] = status.get("NumberOfCompletedSuboperations")
        assoc.release()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
