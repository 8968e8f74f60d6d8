#!/usr/bin/env bash
# Ingest benchmark: C-STORE throughput with DCMTK's storescu over 1 and 4 associations, for the
# SQLite and the PostgreSQL index, durability on (fsync of every object, synchronous commits).
#
#   bench/ingest.sh [INSTANCES]      (default 3000; 512x512 16-bit synthetic CT, ~0.5 MB each)
#
# Needs: dcmtk (storescu), PostgreSQL server binaries (initdb, pg_ctl). Prints a table.
# Both configurations run in the same invocation: compare them with each other, not with
# numbers from another day or machine.
# Environment: PACS, one or more node binaries separated by spaces (default
# target/release/pacs, built first unless PACS_SKIP_BUILD is set): each case runs on each
# binary in turn, so that a build before a change and one after are compared in one run.
# MAX_PDU: the node's --max-pdu (storescu sends PDUs as large as the node accepts; 16384 is
# what many modalities and Orthanc use).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3000}
SLICES=300
STUDIES=$(( (N + SLICES - 1) / SLICES ))
export TCP_NODELAY=1
STORESCU=${DCMTK_BIN:-/usr/bin}/storescu
WORK=$(mktemp -d /tmp/pacs-bench.XXXXXX)
BINARIES=${PACS:-target/release/pacs}
PACS=${BINARIES%% *}
. bench/lib.sh
trap bench_cleanup EXIT

if [ -z "${PACS_SKIP_BUILD:-}" ]; then
  echo "building release binaries..."
  cargo build --release --quiet
fi

echo "synthesising $((STUDIES * SLICES)) CT instances..."
$PACS synth --studies "$STUDIES" --slices "$SLICES" --modality CT --seed 42 --out "$WORK/synth" >/dev/null
find "$WORK/synth" -name '*.dcm' | sort | head -n "$N" > "$WORK/files.txt"
COUNT=$(wc -l < "$WORK/files.txt")
BYTES=$(xargs -a "$WORK/files.txt" stat -c %s | awk '{s+=$1} END {print s}')

start_postgres

run_case() { # backend associations binary-number
  local backend=$1 assocs=$2 dir=$WORK/node-$1-$2
  local url=()
  [ "$backend" = postgres ] && url=(--database-url "$(new_database "bench_ingest_${assocs}_$3")")
  [ -n "${MAX_PDU:-}" ] && url+=(--max-pdu "$MAX_PDU")
  start_node "$dir" "${url[@]}"
  local pid=$NODE_PID dport=$DIMSE_PORT hport=$HTTP_PORT
  split -n "r/$assocs" "$WORK/files.txt" "$WORK/part-$backend-$assocs-"
  local start end
  start=$(date +%s.%N)
  for part in "$WORK"/part-"$backend"-"$assocs"-*; do
    xargs -a "$part" "$STORESCU" -aet BENCH -aec PACS 127.0.0.1 "$dport" &
  done
  wait $(jobs -p | grep -v "^$pid$") 2>/dev/null || true
  end=$(date +%s.%N)
  local stored
  stored=$(curl -s "http://127.0.0.1:$hport/api/statistics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["instances"])')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$backend" "$assocs" "$start" "$end" "$COUNT" "$BYTES" "$stored" "$PACS" <<'PY'
import sys
b, a, s, e, n, by, stored = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
t = e - s
print(f"{b:9} {a:>6} {n:>9} {stored:>7} {t:>8.1f} {n / t:>11.0f} {by / t / 1e6:>8.1f}  {sys.argv[8]}")
PY
  rm -rf "$dir"
}

echo
echo "backend   assocs instances  stored   time_s instances/s     MB/s  binary"
for backend in sqlite postgres; do
  for assocs in 1 4; do
    i=0
    for PACS in $BINARIES; do
      i=$((i + 1))
      run_case "$backend" "$assocs" "$i"
    done
  done
done
