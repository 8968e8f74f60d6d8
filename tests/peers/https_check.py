"""HTTPS checks against the node with Python's ssl module, for tests/tls.rs.

Usage:
  https_check.py reload PORT CA DONE_FILE
      Opens a kept-alive HTTPS connection trusting CA, GETs /healthz on it, prints the server
      certificate's subject CN, then waits until DONE_FILE exists (the test replaces the node's
      certificate meanwhile), then polls new connections (up to 20 s) until one presents another
      CN, and GETs /healthz again on the first, still open, connection. Prints JSON:
      {"first_cn", "new_cn", "old_connection_status"}.
"""

import http.client
import json
import os
import ssl
import sys
import time


def cn_of(sock):
    for rdn in sock.getpeercert()["subject"]:
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def main():
    _, mode, port, ca, done = sys.argv
    assert mode == "reload"
    ctx = ssl.create_default_context(cafile=ca)
    first = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=30)
    first.request("GET", "/healthz")
    first.getresponse().read()
    first_cn = cn_of(first.sock)
    print(json.dumps({"first_cn": first_cn}), flush=True)
    while not os.path.exists(done):
        time.sleep(0.1)
    new_cn = first_cn
    deadline = time.time() + 20
    while new_cn == first_cn and time.time() < deadline:
        conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=30)
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        new_cn = cn_of(conn.sock)
        conn.close()
        time.sleep(0.3)
    first.request("GET", "/healthz")
    status = first.getresponse().status
    print(json.dumps({"first_cn": first_cn, "new_cn": new_cn, "old_connection_status": status}))


if __name__ == "__main__":
    main()
