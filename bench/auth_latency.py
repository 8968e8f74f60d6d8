#!/usr/bin/env python3
"""What authentication adds to a request: the same requests, interleaved, anonymous and with a
bearer token, over one keep-alive connection each; prints p50/p95 per request kind and the
difference.

usage: auth_latency.py PORT RUNS TOKEN NAME=PATH ...
"""
import http.client
import sys
import time

from latency_lib import fetch, pct

port, runs, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
specs = [s.split("=", 1) for s in sys.argv[4:]]
variants = {
    "anonymous": (http.client.HTTPConnection("127.0.0.1", port), {}),
    "bearer JWT": (http.client.HTTPConnection("127.0.0.1", port),
                   {"Authorization": f"Bearer {token}"}),
}




print(f"{'request':18} {'caller':12} {'p50_ms':>8} {'p95_ms':>8}")
for name, path in specs:
    times = {v: [] for v in variants}
    for conn, headers in variants.values():
        for _ in range(5):
            fetch(conn, path, headers)
    for _ in range(runs):
        # interleaved, so that machine drift touches both alike
        for v, (conn, headers) in variants.items():
            t = time.perf_counter()
            fetch(conn, path, headers)
            times[v].append(time.perf_counter() - t)
    for v in variants:
        print(f"{name:18} {v:12} {pct(times[v], 0.5):>8.3f} {pct(times[v], 0.95):>8.3f}")
    d50 = pct(times["bearer JWT"], 0.5) - pct(times["anonymous"], 0.5)
    d95 = pct(times["bearer JWT"], 0.95) - pct(times["anonymous"], 0.95)
    print(f"{name:18} {'added':12} {d50:>8.3f} {d95:>8.3f}")
