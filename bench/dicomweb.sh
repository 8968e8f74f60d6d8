#!/usr/bin/env bash
# DICOMweb benchmark: QIDO-RS and WADO-RS latency over a large index, for SQLite and PostgreSQL,
# and C-FIND study-level latency (bench/cfind_latency.py, pynetdicom) over the same index.
#
#   bench/dicomweb.sh [STUDIES] [RUNS]     (default 10000 studies = 1,000,000 instances; 200 runs)
#
# The index is filled with synthetic rows by set-based SQL (bench/fill_index.py: 2 series of 50
# instances per study), then two real 300-slice CT series are stored through C-STORE, and
# bench/http_latency.py times sequential requests over one keep-alive connection.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES=${1:-10000}
RUNS=${2:-200}
export TCP_NODELAY=1
STORESCU=${DCMTK_BIN:-/usr/bin}/storescu
WORK=$(mktemp -d /tmp/pacs-bench.XXXXXX)
PACS=target/release/pacs
. bench/lib.sh
trap bench_cleanup EXIT

echo "building release binaries..."
cargo build --release --quiet
$PACS synth --studies 2 --slices 300 --modality CT --seed 77 --out "$WORK/synth" >/dev/null
start_postgres

requestors_toml > "$WORK/requestors.toml"
for backend in sqlite postgres; do
  dir=$WORK/node-$backend
  args=(--config "$WORK/requestors.toml")
  if [ "$backend" = postgres ]; then
    url=$(new_database "bench_dicomweb")
    args+=(--database-url "$url")
  fi
  # migrate, then fill the empty index directly
  start_node "$dir" "${args[@]}"
  stop_node
  started=$(date +%s)
  if [ "$backend" = postgres ]; then
    python3 bench/fill_index.py postgres "$STUDIES" 2 50 | psql -q "$url" >/dev/null
  else
    python3 bench/fill_index.py sqlite "$STUDIES" 2 50 | sqlite3 "$dir/index.sqlite" >/dev/null
  fi
  echo
  echo "== $backend: filled $STUDIES studies / $((STUDIES * 100)) instances in $(( $(date +%s) - started )) s"
  start_node "$dir" "${args[@]}"
  find "$WORK/synth" -name '*.dcm' | sort > "$WORK/files.txt"
  split -n r/4 "$WORK/files.txt" "$WORK/part-$backend-"
  for part in "$WORK"/part-"$backend"-*; do
    xargs -a "$part" "$STORESCU" -aet BENCH -aec PACS 127.0.0.1 "$DIMSE_PORT" &
  done
  wait $(jobs -p | grep -v "^$NODE_PID$") 2>/dev/null || true
  base="/dicom-web"
  read -r study series instance < <(curl -s "http://127.0.0.1:$HTTP_PORT$base/studies?PatientID=SYN-77-0" | python3 -c '
import json, sys, urllib.request
s = json.load(sys.stdin)[0]["0020000D"]["Value"][0]
port = sys.argv[1]
se = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/dicom-web/studies/{s}/series"))[0]["0020000E"]["Value"][0]
i = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/dicom-web/studies/{s}/series/{se}/instances?limit=1"))[0]["00080018"]["Value"][0]
print(s, se, i)' "$HTTP_PORT")
  frames=$(curl -s "http://127.0.0.1:$HTTP_PORT$base/studies/$study/series/$series/instances" | python3 -c "
import json, sys
print(' '.join('$base/studies/$study/series/$series/instances/' + i['00080018']['Value'][0] + '/frames/1' for i in json.load(sys.stdin)[:100]))")
  random_study="2.25.1$(( STUDIES / 2 ))"
  python3 bench/http_latency.py 127.0.0.1 "$HTTP_PORT" "$RUNS" \
    "ohif_study_list=$base/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060" \
    "study_date_range=$base/studies?StudyDate=20200101-20200131" \
    "patient_name_prefix=$base/studies?PatientName=GARC*&limit=101" \
    "series_search=$base/studies/$random_study/series" \
    "instances_300_series=$base/studies/$study/series/$series/instances" \
    "series_metadata_300=$base/studies/$study/series/$series/metadata" \
    "frame=$frames|multipart/related; type=\"application/octet-stream\"; transfer-syntax=*" \
    "series_retrieve_mbps=$base/studies/$study/series/$series|multipart/related; type=\"application/dicom\"; transfer-syntax=*"
  # the Python client above tops out near 600 MB/s: curl measures what the node delivers
  for _ in 1 2 3; do
    curl -s -o /dev/null -w "series_retrieve_curl         %{speed_download} B/s\n" \
      -H 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*' \
      "http://127.0.0.1:$HTTP_PORT$base/studies/$study/series/$series"
  done
  python3 bench/cfind_latency.py 127.0.0.1 "$DIMSE_PORT" "$RUNS"
  stop_node
done
