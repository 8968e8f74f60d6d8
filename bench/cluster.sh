#!/usr/bin/env bash
# Many nodes on one PostgreSQL (docs/cluster.md), in one run:
# - C-STORE ingest throughput of two nodes together (4 storescu associations per node, at
#   once) against one node (4 associations), the same files, each round into a fresh database
#   of the same PostgreSQL server; objects on each node's local disk, so that the database is
#   what the nodes share;
# - QIDO-RS p95 on node B, idle and while node A ingests (4 associations).
#
#   bench/cluster.sh [SLICES] [RUNS] [ROUNDS]   (default 250 slices x 4 series, 1000 idle
#                                               QIDO runs, 2 ingest rounds)
# PACS (default target/release/pacs, built unless PACS_SKIP_BUILD is set),
# PACS_BENCH_DATABASE_URL (else a throwaway cluster), DCMTK_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
SLICES=${1:-250}
RUNS=${2:-1000}
ROUNDS=${3:-2}
export TCP_NODELAY=1
BIN=${DCMTK_BIN:-/usr/bin}
WORK=$(mktemp -d /tmp/pacs-bench.XXXXXX)
PACS=${PACS:-target/release/pacs}
. bench/lib.sh
trap bench_cleanup EXIT

if [ -z "${PACS_SKIP_BUILD:-}" ]; then
  echo "building release binaries..."
  cargo build --release --quiet --bin pacs
fi
start_postgres
$PACS synth --studies 20 --slices 1 --modality CT --seed 11 --out "$WORK/list" >/dev/null
$PACS synth --studies 4 --slices "$SLICES" --modality CT --seed 77 --out "$WORK/series" >/dev/null
$PACS synth --studies 4 --slices "$SLICES" --modality CT --seed 78 --out "$WORK/during" >/dev/null
find "$WORK/series" -name '*.dcm' | sort > "$WORK/files.txt"
find "$WORK/during" -name '*.dcm' | sort > "$WORK/during.txt"
TOTAL=$(wc -l < "$WORK/files.txt")
mkdir -p "$WORK/parts"
split -n r/4 "$WORK/files.txt" "$WORK/parts/one-"
split -n r/8 "$WORK/files.txt" "$WORK/parts/two-"
split -n r/4 "$WORK/during.txt" "$WORK/parts/during-"

# start_a NAME DB, start_b NAME DB: node A or B on database DB; set its pid and ports
start_a() { start_node "$WORK/$1-a" --database-url "$2"; A_PID=$NODE_PID A_DIMSE=$DIMSE_PORT A_HTTP=$HTTP_PORT; }
start_b() { start_node "$WORK/$1-b" --database-url "$2"; B_PID=$NODE_PID B_DIMSE=$DIMSE_PORT B_HTTP=$HTTP_PORT; }
stop() { for p in "$@"; do kill "$p"; wait "$p" 2>/dev/null || true; done; }
# store PORT FILE-LIST: one storescu association, in the background; its pid in STORE_PID
store() { xargs -a "$2" "$BIN/storescu" -aet BENCH -aec PACS 127.0.0.1 "$1" & STORE_PID=$!; }
rate() { python3 -c "print(f'{$1 / ($3 - $2):.0f}')"; }

echo
echo "== C-STORE ingest, $TOTAL instances: one node (4 associations) vs two nodes on one PostgreSQL (4 each) (node $(git rev-parse --short HEAD))"
printf '%-8s %12s %12s\n' round one-node two-nodes
for round in $(seq "$ROUNDS"); do
  db=$(new_database "cluster_one_$round")
  start_a "one-$round" "$db"
  pids=()
  t0=$(date +%s.%N)
  for part in "$WORK"/parts/one-*; do store "$A_DIMSE" "$part"; pids+=("$STORE_PID"); done
  wait "${pids[@]}"
  t1=$(date +%s.%N)
  one=$(rate "$TOTAL" "$t0" "$t1")
  stop "$A_PID"

  db=$(new_database "cluster_two_$round")
  start_a "two-$round" "$db"
  start_b "two-$round" "$db"
  pids=()
  n=0
  t0=$(date +%s.%N)
  for part in "$WORK"/parts/two-*; do
    if [ $((n % 2)) = 0 ]; then store "$A_DIMSE" "$part"; else store "$B_DIMSE" "$part"; fi
    pids+=("$STORE_PID")
    n=$((n + 1))
  done
  wait "${pids[@]}"
  t1=$(date +%s.%N)
  two=$(rate "$TOTAL" "$t0" "$t1")
  stored=$(curl -sf "http://127.0.0.1:$B_HTTP/api/statistics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["instances"])')
  [ "$stored" = "$TOTAL" ] || { echo "two nodes indexed $stored of $TOTAL instances" >&2; exit 1; }
  if [ "$round" != "$ROUNDS" ]; then stop "$A_PID" "$B_PID"; fi
  printf '%-8s %12s %12s   (instances/s)\n' "$round" "$one" "$two"
done

# QIDO on B over the last round's database (its studies, and the study list below)
find "$WORK/list" -name '*.dcm' | xargs "$BIN/storescu" -aet BENCH -aec PACS 127.0.0.1 "$A_DIMSE"
QUERY="/dicom-web/studies?PatientID=SYN-11-*&includefield=00081030"
echo
echo "== QIDO-RS on node B ($QUERY): idle, and while node A ingests $(wc -l < "$WORK/during.txt") instances (4 associations)"
printf '%-22s %8s %8s %8s\n' "" requests p50_ms p95_ms
read -r n p50 p95 < <(python3 bench/cluster_qido.py "$B_HTTP" "$QUERY" --runs "$RUNS")
printf '%-22s %8s %8s %8s\n' "B idle" "$n" "$p50" "$p95"
pids=()
for part in "$WORK"/parts/during-*; do store "$A_DIMSE" "$part"; pids+=("$STORE_PID"); done
read -r n p50 p95 < <(python3 bench/cluster_qido.py "$B_HTTP" "$QUERY" --while "${pids[@]}")
wait "${pids[@]}"
printf '%-22s %8s %8s %8s\n' "B while A ingests" "$n" "$p50" "$p95"
