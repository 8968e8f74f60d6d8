"""Shared by the bench/*_latency.py scripts: one GET over a kept-alive connection, and
percentiles."""


def fetch(conn, path, headers=None):
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"GET {path}: {r.status} {body[:200]!r}")


def pct(times, q):
    times = sorted(times)
    return times[min(len(times) - 1, int(len(times) * q))] * 1000
