#!/usr/bin/env python3
"""QIDO-RS latency on one node, over one kept-alive connection: RUNS requests, or, with
--while PID..., as many as fit while those processes run (at least 20). Prints the count, p50
and p95 in milliseconds.

usage: cluster_qido.py PORT PATH (--runs N | --while PID [PID...])
"""
import http.client
import os
import sys
import time

from latency_lib import fetch, pct

port, path = int(sys.argv[1]), sys.argv[2]
mode, rest = sys.argv[3], sys.argv[4:]
conn = http.client.HTTPConnection("127.0.0.1", port)


def alive(pids):
    for pid in pids:
        try:
            os.kill(pid, 0)
            # a zombie has finished: /proc says so
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] != "Z":
                    return True
        except (ProcessLookupError, FileNotFoundError):
            pass
    return False


for _ in range(3):
    fetch(conn, path)
times = []
if mode == "--runs":
    for _ in range(int(rest[0])):
        t = time.perf_counter()
        fetch(conn, path)
        times.append(time.perf_counter() - t)
else:
    pids = [int(p) for p in rest]
    while alive(pids) or len(times) < 20:
        t = time.perf_counter()
        fetch(conn, path)
        times.append(time.perf_counter() - t)
print(f"{len(times)} {pct(times, 0.5):.1f} {pct(times, 0.95):.1f}")
