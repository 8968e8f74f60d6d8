#!/usr/bin/env python3
"""QIDO-RS over HTTPS and plain HTTP, interleaved, each over one kept-alive connection to the
same node (the port answers both); prints p50/p95 and what TLS adds.

usage: tls_latency.py PORT RUNS CA_FILE PATH
"""
import http.client
import ssl
import sys
import time

from latency_lib import fetch, pct

port, runs, ca, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
variants = {
    "http": http.client.HTTPConnection("127.0.0.1", port),
    "https": http.client.HTTPSConnection("127.0.0.1", port, context=ctx),
}




times = {v: [] for v in variants}
for conn in variants.values():
    for _ in range(5):
        fetch(conn, path)
for _ in range(runs):
    for v, conn in variants.items():
        t = time.perf_counter()
        fetch(conn, path)
        times[v].append(time.perf_counter() - t)
print(f"{'qido_study_list':18} {'scheme':8} {'p50_ms':>8} {'p95_ms':>8}")
for v in variants:
    print(f"{'qido_study_list':18} {v:8} {pct(times[v], 0.5):>8.3f} {pct(times[v], 0.95):>8.3f}")
print(f"{'qido_study_list':18} {'added':8} {pct(times['https'], 0.5) - pct(times['http'], 0.5):>8.3f} "
      f"{pct(times['https'], 0.95) - pct(times['http'], 0.95):>8.3f}")
