#!/usr/bin/env bash
# DICOMweb benchmark, this node against Orthanc with its DICOMweb plugin, each on SQLite and on
# PostgreSQL, in one run with the same data and the same client (bench/http_latency.py: sequential
# GETs over one keep-alive connection; curl for the whole-series rate):
#   QIDO-RS: the OHIF study list, a StudyDate range, a PatientName prefix, the series of a study,
#   the instances of a SLICES-slice series; WADO-RS: series metadata, one frame, the whole series.
#
#   bench/dicomweb_orthanc.sh [SLICES] [STUDIES] [RUNS]     (defaults 300, 200, 50)
#
# Data: a synthetic 512x512 16-bit CT series (`pacs synth`, SLICES slices) and STUDIES one-slice
# studies, pushed with DCMTK storescu to every target. p50/p95 over RUNS requests; every row ends
# with a ratio from this run: >1 means this node is faster.
#
# Installs nothing. Orthanc runs when its binary is found (Debian `orthanc`, `orthanc-dicomweb`
# and, for the PostgreSQL column, `orthanc-postgresql`), started by start_orthanc (bench/lib.sh)
# on free ports with a temporary storage directory; the system's orthanc service is not used.
# Environment: PACS (release binary; PACS_SKIP_BUILD=1 skips the build), DCMTK_BIN (default
# /usr/bin), ORTHANC (binary), ORTHANC_PLUGINS (directory of the plugins).
set -euo pipefail
cd "$(dirname "$0")/.."
SLICES=${1:-300}
STUDIES=${2:-200}
RUNS=${3:-50}
. bench/lib.sh
bench_against_orthanc_setup

echo "synthesising a $SLICES-slice CT series and $STUDIES one-slice studies..."
$PACS synth --studies 1 --slices "$SLICES" --modality CT --seed 5 --out "$WORK/series" >/dev/null
$PACS synth --studies "$STUDIES" --slices 1 --modality CT --seed 11 --out "$WORK/small" >/dev/null
find "$WORK/series" "$WORK/small" -name '*.dcm' | sort > "$WORK/files.txt"
split -n r/4 "$WORK/files.txt" "$WORK/part-"
read -r STUDY SERIES < <(python3 -c "import pydicom,sys; d=pydicom.dcmread(sys.argv[1], stop_before_pixels=True); print(d.StudyInstanceUID, d.SeriesInstanceUID)" "$(find "$WORK/series" -name '*.dcm' | head -n1)")

start_postgres
declare -A R # R[metric,target] = value

push() { # AE PORT: the same files over 4 associations
  local pids=() part
  for part in "$WORK"/part-*; do
    xargs -a "$part" "$BIN/storescu" -aet BENCH -aec "$1" 127.0.0.1 "$2" &
    pids+=("$!")
  done
  wait "${pids[@]}"
}

measure() { # TARGET-NAME HTTP-PORT
  local t=$1 port=$2 base=/dicom-web n frames out
  local st="$base/studies/$STUDY" se="$base/studies/$STUDY/series/$SERIES"
  n=$(curl -sf "http://127.0.0.1:$port$se/instances" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$n" = "$SLICES" ] || { echo "$t: $n instances in the series, not $SLICES" >&2; exit 1; }
  n=$(curl -sf "http://127.0.0.1:$port$base/studies?limit=1000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$n" = $((STUDIES + 1)) ] || { echo "$t: $n studies, not $((STUDIES + 1))" >&2; exit 1; }
  frames=$(curl -sf "http://127.0.0.1:$port$se/instances" | python3 -c "
import json, sys
print(' '.join('$se/instances/' + i['00080018']['Value'][0] + '/frames/1' for i in json.load(sys.stdin)[:100]))")
  out=$(python3 bench/http_latency.py 127.0.0.1 "$port" "$RUNS" \
    "study_list=$base/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060" \
    "date_range=$base/studies?StudyDate=20200101-20201231" \
    "name_prefix=$base/studies?PatientName=KOWALSKI*&limit=101" \
    "series_search=$st/series" \
    "instances=$se/instances" \
    "metadata=$se/metadata" \
    "frame=$frames|multipart/related; type=\"application/octet-stream\"; transfer-syntax=*")
  echo "$out"
  # the number of matches, compared across targets in the table's footnote
  local q
  for q in "study_list=$base/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060" \
    "date_range=$base/studies?StudyDate=20200101-20201231" "name_prefix=$base/studies?PatientName=KOWALSKI*&limit=101" \
    "metadata=$se/metadata"; do
    R[${q%%=*}.count,$t]=$(curl -sf "http://127.0.0.1:$port${q#*=}" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  done
  while read -r name p50 p95 bytes; do
    [ "$name" = request ] && continue
    R[$name.p50,$t]=$p50 R[$name.p95,$t]=$p95 R[$name.bytes,$t]=$bytes
  done <<< "$out"
  # whole-series WADO-RS: curl (the Python client tops out near 600 MB/s), best of 3
  local best=0 v
  for _ in 1 2 3; do
    v=$(curl -sf -o /dev/null -w '%{speed_download}' \
      -H 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*' "http://127.0.0.1:$port$se")
    best=$(echo "$v $best" | awk '{print ($1 > $2) ? $1 : $2}')
  done
  R[retrieve.mbps,$t]=$(echo "$best" | awk '{print $1 / 1e6}')
  echo "series_retrieve (curl, best of 3) ${R[retrieve.mbps,$t]} MB/s"
}

TARGETS=()
for backend in sqlite postgres; do
  echo "== this node, $backend"
  url=()
  [ "$backend" = postgres ] && url=(--database-url "$(new_database "web_pacs_$backend")")
  start_node "$WORK/pacs-$backend" "${url[@]}"
  push PACS "$DIMSE_PORT"
  measure "pacs-$backend" "$HTTP_PORT"
  stop_node
  rm -rf "$WORK/pacs-$backend"
  TARGETS+=("pacs-$backend")
done
if [ -n "$ORTHANC" ] && [ -e "$ORTHANC_PLUGINS/libOrthancDicomWeb.so" ]; then
  for backend in sqlite postgres; do
    if [ "$backend" = postgres ] && [ ! -e "$ORTHANC_PLUGINS/libOrthancPostgreSQLIndex.so" ]; then
      echo "== Orthanc, postgres: no libOrthancPostgreSQLIndex.so in $ORTHANC_PLUGINS, not measured"
      continue
    fi
    echo "== Orthanc, $backend"
    start_orthanc "orthanc-$backend" "$backend" dicomweb
    push ORTHANC "$TARGET_PORT"
    measure "orthanc-$backend" "$ORTHANC_HTTP_PORT"
    kill "$TARGET_PID"
    wait "$TARGET_PID" 2>/dev/null || true
    rm -rf "$WORK/orthanc-$backend"
    TARGETS+=("orthanc-$backend")
  done
else
  echo "== Orthanc or its DICOMweb plugin not found (set ORTHANC, ORTHANC_PLUGINS): this node only"
fi

echo
echo "$SLICES-slice CT series (512x512) + $STUDIES one-slice studies, p50/p95 of $RUNS requests, $(date -u +%F)"
python3 - "${TARGETS[*]}" "$(for k in "${!R[@]}"; do echo "$k=${R[$k]}"; done)" <<'PY'
import sys
targets = sys.argv[1].split()
r = {}
for line in sys.argv[2].splitlines():
    k, v = line.split("=")
    metric, target = k.split(",")
    r[(metric, target)] = float(v)
rows = [
    ("study_list", "QIDO studies, OHIF study list (limit 101, includefield)"),
    ("date_range", "QIDO studies, StudyDate range (one year)"),
    ("name_prefix", "QIDO studies, PatientName prefix `KOWALSKI*`"),
    ("series_search", "QIDO series of a study"),
    ("instances", "QIDO instances of the series"),
    ("metadata", "WADO-RS series metadata"),
    ("frame", "WADO-RS one frame (512x512x2)"),
]
names = {"pacs-sqlite": "node SQLite", "pacs-postgres": "node PostgreSQL",
         "orthanc-sqlite": "Orthanc SQLite", "orthanc-postgres": "Orthanc PostgreSQL"}
label = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
ratios = [b for b in ("sqlite", "postgres") if f"orthanc-{b}" in targets and f"pacs-{b}" in targets]
head = ["request (ms, p50 / p95)"] + [names[t] for t in targets] + [f"node/Orthanc {label[b]} p50" for b in ratios]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for metric, text in rows:
    cells = [text] + [f"{r[(metric + '.p50', t)]:.1f} / {r[(metric + '.p95', t)]:.1f}" for t in targets]
    cells += [f"{r[(metric + '.p50', 'orthanc-' + b)] / r[(metric + '.p50', 'pacs-' + b)]:.2f}x" for b in ratios]
    print("| " + " | ".join(cells) + " |")
cells = ["WADO-RS whole series, curl (MB/s, best of 3)"] + [f"{r[('retrieve.mbps', t)]:.0f}" for t in targets]
cells += [f"{r[('retrieve.mbps', 'pacs-' + b)] / r[('retrieve.mbps', 'orthanc-' + b)]:.2f}x" for b in ratios]
print("| " + " | ".join(cells) + " |")
print()
print("matches (the same on every target, in this order): " + "; ".join(
    f"{m}: " + " ".join(f"{r[(m + '.count', t)]:.0f}" for t in targets)
    for m in ("study_list", "date_range", "name_prefix", "metadata")))
PY
