#!/usr/bin/env bash
# Audit trail cost: C-STORE ingest of the same series with the audit trail on (the default)
# and off (`--audit false`), in the same run, for the SQLite and the PostgreSQL index; prints
# instances/s of each and the ratio on/off (the issue's goal: under 5% cost, ratio >= 0.95).
#
#   bench/audit.sh [INSTANCES] [ROUNDS]   (default 1200 and 3; 512x512 16-bit CT, ~0.5 MB each)
#
# storescu (TCP_NODELAY=1) over ASSOCS associations (default 4), durability on. The rounds
# alternate on, off, off, on... so that drift (page cache, a neighbour's load) falls on both;
# the figures are the medians. With audit on, the records written are counted (instances of one
# association and study are grouped into one DICOM Instances Transferred message per batch).
# Needs: dcmtk (storescu), PostgreSQL server binaries (initdb, pg_ctl), bench/lib.sh's helpers.
# PACS: the node binary (default target/release/pacs, built first unless PACS_SKIP_BUILD is set).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1200}
ROUNDS=${2:-3}
ASSOCS=${ASSOCS:-4}
SLICES=300
STUDIES=$(( (N + SLICES - 1) / SLICES ))
export TCP_NODELAY=1
STORESCU=${DCMTK_BIN:-/usr/bin}/storescu
WORK=$(mktemp -d /tmp/pacs-bench.XXXXXX)
PACS=${PACS:-target/release/pacs}
. bench/lib.sh
trap bench_cleanup EXIT

if [ -z "${PACS_SKIP_BUILD:-}" ]; then
  echo "building the release binary..."
  cargo build --release --quiet -p pacs --bin pacs
fi

echo "synthesising $((STUDIES * SLICES)) CT instances..."
$PACS synth --studies "$STUDIES" --slices "$SLICES" --modality CT --seed 42 --out "$WORK/synth" >/dev/null
find "$WORK/synth" -name '*.dcm' | sort | head -n "$N" > "$WORK/files.txt"
COUNT=$(wc -l < "$WORK/files.txt")
split -n "r/$ASSOCS" "$WORK/files.txt" "$WORK/part-"

start_postgres

RESULTS=$WORK/results.txt
: > "$RESULTS"
run_case() { # backend audit(true|false) round
  local backend=$1 audit=$2 round=$3 dir=$WORK/node-$1-$2-$3
  local args=(--audit "$audit")
  [ "$backend" = postgres ] && args+=(--database-url "$(new_database "bench_audit_${audit}_$round")")
  start_node "$dir" "${args[@]}"
  local pid=$NODE_PID dport=$DIMSE_PORT hport=$HTTP_PORT start end
  start=$(date +%s.%N)
  local senders=()
  for part in "$WORK"/part-*; do
    xargs -a "$part" "$STORESCU" -aet BENCH -aec PACS 127.0.0.1 "$dport" &
    senders+=($!)
  done
  wait "${senders[@]}" || true
  end=$(date +%s.%N)
  local stored
  stored=$(curl -s "http://127.0.0.1:$hport/api/statistics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["instances"])')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local records=0
  if [ "$audit" = true ]; then
    local index=()
    [ "$backend" = postgres ] && index=(--database-url "${args[3]}")
    records=$("$PACS" audit search --data-dir "$dir" "${index[@]}" --limit 1000 --json 2>/dev/null | wc -l)
    "$PACS" audit verify --data-dir "$dir" "${index[@]}" >/dev/null 2>&1
  fi
  echo "$backend $audit $start $end $stored $records" >> "$RESULTS"
  rm -rf "$dir"
}

for backend in sqlite postgres; do
  for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="true false"; else order="false true"; fi
    for audit in $order; do run_case "$backend" "$audit" "$round"; done
  done
done

python3 - "$RESULTS" "$COUNT" "$ASSOCS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
count, assocs = int(sys.argv[2]), int(sys.argv[3])
print()
print(f"{count} instances over {assocs} associations, median of {len(rows) // 4} rounds each")
print("backend   audit  instances/s (each round)            median  records  ratio on/off")
for backend in ("sqlite", "postgres"):
    med = {}
    for audit in ("true", "false"):
        rs = [r for r in rows if r[0] == backend and r[1] == audit]
        rates = [int(r[4]) / (float(r[3]) - float(r[2])) for r in rs]
        med[audit] = statistics.median(rates)
        records = max(int(r[5]) for r in rs)
        each = " ".join(f"{x:.0f}" for x in rates)
        ratio = f"{med['true'] / med['false']:.3f}" if audit == "false" else ""
        shown = "on" if audit == "true" else "off"
        print(f"{backend:9} {shown:5}  {each:34} {med[audit]:7.0f}  {records if audit == 'true' else '-':>7}  {ratio}")
PY
