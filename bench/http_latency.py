#!/usr/bin/env python3
"""Sequential HTTP GETs over one keep-alive connection; prints p50/p95 latency per request kind.

usage: http_latency.py HOST PORT RUNS NAME=PATH[ PATH...][|ACCEPT] ...
A NAME ending in '_mbps' is instead downloaded RUNS times and reported as MB/s.
HTTP_LATENCY_HEADER="Name: value" adds one header to every request (e.g. a session cookie).
"""
import http.client
import os
import statistics
import sys
import time

host, port, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conn = http.client.HTTPConnection(host, port)
EXTRA = os.environ.get("HTTP_LATENCY_HEADER", "").partition(":") if os.environ.get("HTTP_LATENCY_HEADER") else None


def fetch(path, accept):
    headers = {"Accept": accept} if accept else {}
    if EXTRA:
        headers[EXTRA[0].strip()] = EXTRA[2].strip()
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"GET {path}: {r.status} {body[:200]!r}")
    return len(body)


print(f"{'request':28} {'p50_ms':>8} {'p95_ms':>8} {'bytes':>10}")
for spec in sys.argv[4:]:
    name, rest = spec.split("=", 1)
    path, _, accept = rest.partition("|")
    paths = path.split(" ")  # several paths, separated by spaces, are used in turn
    for _ in range(3):
        fetch(paths[0], accept)
    times, size = [], 0
    for i in range(runs):
        t = time.perf_counter()
        size = fetch(paths[i % len(paths)], accept)
        times.append(time.perf_counter() - t)
    if name.endswith("_mbps"):
        total = sum(times)
        print(f"{name:28} {size * runs / total / 1e6:>8.0f} MB/s ({size} bytes, {statistics.median(times) * 1000:.0f} ms each)")
        continue
    times.sort()
    p50 = times[len(times) // 2] * 1000
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))] * 1000
    print(f"{name:28} {p50:>8.1f} {p95:>8.1f} {size:>10}")
