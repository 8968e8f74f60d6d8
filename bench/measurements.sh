#!/usr/bin/env bash
# Measurements over time (docs/measurements.md), on the SQLite index:
#
# 1. Indexing cost of an SR at ingest: COUNT TID 1500 SRs of N measurement groups (2
#    measurements each) stored with storescu over one association, and the same data sets
#    under a non-SR SOP class (nothing to read), in the same run, alternating; prints ms per
#    SR of each, and the difference (reading the content tree and writing its rows).
# 2. The trend query (`GET /api/patients/{id}/measurements`) at PATIENTS patients with 10 SRs
#    each (5 measurements per SR: 500,000 rows at 10,000 patients), the table filled directly
#    with SQL (its rows point at no instance); prints p50/p95 over QUERIES random patients.
#
#   bench/measurements.sh [COUNT] [PATIENTS] [QUERIES]   (default 200, 10000, 500)
#
# Needs: dcmtk (storescu), python3 with pydicom. PACS: the node binary (default
# target/release/pacs, built first unless PACS_SKIP_BUILD is set).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-200}
PATIENTS=${2:-10000}
QUERIES=${3:-500}
STORESCU=${DCMTK_BIN:-/usr/bin}/storescu
WORK=$(mktemp -d /tmp/pacs-bench.XXXXXX)
PACS=${PACS:-target/release/pacs}
export TCP_NODELAY=1
. bench/lib.sh
trap bench_cleanup EXIT

if [ -z "${PACS_SKIP_BUILD:-}" ]; then
  echo "building the release binary..."
  cargo build --release --quiet -p pacs --bin pacs
fi

ms_now() { date +%s%N | cut -b1-13; }

echo "== indexing cost of an SR at ingest ($COUNT SRs per figure, SQLite index)"
start_node "$WORK/ingest"
printf '%-8s  %14s  %14s  %12s\n' groups "SR ms/instance" "plain ms/inst" "index ms/SR"
for groups in 1 10 50; do
  python3 bench/measurement_srs.py "$WORK/sr-$groups" "$COUNT" "$groups" sr
  python3 bench/measurement_srs.py "$WORK/plain-$groups" "$COUNT" "$groups" plain
  sr_ms=0; plain_ms=0
  for kind in plain sr sr plain; do
    # a fresh copy of the files: each round stores new SOP Instance UIDs
    rm -rf "$WORK/round"; cp -r "$WORK/$kind-$groups" "$WORK/round"
    python3 - "$WORK/round" <<'PY'
import os, sys, pydicom
from pydicom.uid import generate_uid
for f in os.listdir(sys.argv[1]):
    p = os.path.join(sys.argv[1], f)
    ds = pydicom.dcmread(p)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(p, enforce_file_format=True)
PY
    t0=$(ms_now)
    "$STORESCU" -R -aec PACS 127.0.0.1 "$DIMSE_PORT" "$WORK"/round/*.dcm
    t1=$(ms_now)
    if [ "$kind" = sr ]; then sr_ms=$((sr_ms + t1 - t0)); else plain_ms=$((plain_ms + t1 - t0)); fi
  done
  python3 -c "import sys; n, s, p = int(sys.argv[1]) * 2, int(sys.argv[2]), int(sys.argv[3]); print(f'{sys.argv[4]:<8}  {s / n:14.2f}  {p / n:14.2f}  {(s - p) / n:12.2f}')" \
    "$COUNT" "$sr_ms" "$plain_ms" "$groups"
done
stop_node

echo "== trend query at $PATIENTS patients x 10 SRs x 5 measurements (SQLite index)"
start_node "$WORK/trend"
python3 - "$WORK/trend/index.sqlite" "$PATIENTS" <<'PY'
import sqlite3, sys
db, patients = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db, timeout=30)
c.execute("PRAGMA foreign_keys = OFF")  # the rows point at no instance
c.execute(f"""
WITH RECURSIVE p(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM p WHERE x < {patients}),
  s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 9),
  m(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM m WHERE k < 4)
INSERT INTO measurements (instance_pk, patient_id, issuer_of_patient_id, study_instance_uid,
  study_date, sr_instance_uid, source_series_uid, tracking_id, tracking_uid,
  finding_code, finding_scheme, finding_meaning, site_code, site_scheme, site_meaning,
  concept_code, concept_scheme, concept_meaning, derivation_code, derivation_scheme,
  derivation_meaning, value, unit_code, unit_scheme, unit_meaning, ordinal)
SELECT 0, 'BENCH' || x, '', '2.25.' || x || '.' || n, strftime('%Y%m%d', '2015-01-01', '+' || (n * 180) || ' days'),
  '2.25.9' || x || '.' || n, '2.25.8' || x || '.' || n, 'Lesion ' || (k % 3), '2.25.7' || x || '.' || (k % 3),
  '', '', '', '39607008', 'SCT', 'Lung',
  CASE WHEN k < 3 THEN '118565006' ELSE '81827009' END, 'SCT', CASE WHEN k < 3 THEN 'Volume' ELSE 'Diameter' END,
  '', '', '', CAST(10 + n + k * 0.5 AS TEXT), 'mL', 'UCUM', 'milliliter', k
FROM p, s, m""")
c.commit()
print(f"{c.execute('SELECT COUNT(*) FROM measurements').fetchone()[0]} measurement rows")
PY
python3 - "$HTTP_PORT" "$PATIENTS" "$QUERIES" <<'PY'
import http.client, json, random, sys, time
port, patients, queries = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port)
random.seed(1)
for label, query in (("all tracks", ""), ("concept filter", "?concept=118565006")):
    times = []
    for _ in range(queries):
        pid = random.randint(1, patients)
        t = time.perf_counter()
        conn.request("GET", f"/api/patients/BENCH{pid}/measurements{query}")
        body = conn.getresponse().read()
        times.append((time.perf_counter() - t) * 1000)
        assert len(json.loads(body)) >= 1, body
    times.sort()
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(f"{label:<15} p50 {p(0.5):7.2f} ms  p95 {p(0.95):7.2f} ms  ({queries} queries)")
PY
stop_node
