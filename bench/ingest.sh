#!/usr/bin/env bash
# Ingest benchmark: C-STORE throughput with DCMTK's storescu over 1 and 4 associations, for the
# SQLite and the PostgreSQL index, durability on (fsync of every object, synchronous commits).
#
#   bench/ingest.sh [INSTANCES]      (default 3000; 512x512 16-bit synthetic CT, ~0.5 MB each)
#
# Needs: dcmtk (storescu), PostgreSQL server binaries (initdb, pg_ctl). Prints a table.
# Both configurations run in the same invocation: compare them with each other, not with
# numbers from another day or machine.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3000}
SLICES=300
STUDIES=$(( (N + SLICES - 1) / SLICES ))
export TCP_NODELAY=1
STORESCU=${DCMTK_BIN:-/usr/bin}/storescu
WORK=$(mktemp -d /tmp/pacs-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${PGDATA_DIR:-}" ]; then run_pg pg_ctl -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "building release binaries..."
cargo build --release --quiet
PACS=target/release/pacs

echo "synthesising $((STUDIES * SLICES)) CT instances..."
$PACS synth --studies "$STUDIES" --slices "$SLICES" --modality CT --seed 42 --out "$WORK/synth" >/dev/null
find "$WORK/synth" -name '*.dcm' | sort | head -n "$N" > "$WORK/files.txt"
COUNT=$(wc -l < "$WORK/files.txt")
BYTES=$(xargs -a "$WORK/files.txt" stat -c %s | awk '{s+=$1} END {print s}')

# PostgreSQL: PACS_BENCH_DATABASE_URL names a server where databases may be created, else a
# throwaway cluster is started here (initdb refuses root: run it as the postgres user).
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PGBIN=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | tail -n1)")
if [ -z "${PACS_BENCH_DATABASE_URL:-}" ]; then
  PGDATA_DIR=$WORK/pg
  mkdir -p "$PGDATA_DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$WORK" "$PGDATA_DIR"
  chmod 755 "$WORK"
  PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  run_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -A trust -U postgres >/dev/null
  run_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/log" -w \
    -o "-p $PGPORT -k $PGDATA_DIR -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on" start >/dev/null
  PACS_BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres"
fi
new_database() { # name
  local base=${PACS_BENCH_DATABASE_URL%/*}
  python3 - "$PACS_BENCH_DATABASE_URL" "$1" <<'PY'
import subprocess, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
subprocess.run(["psql", "-h", u.hostname, "-p", str(u.port or 5432), "-U", u.username or "postgres",
                "-d", u.path.lstrip("/") or "postgres", "-qc", f"CREATE DATABASE {sys.argv[2]}"], check=True)
PY
  echo "$base/$1"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run_case() { # backend associations
  local backend=$1 assocs=$2 dir=$WORK/node-$1-$2
  local dport hport url=()
  dport=$(free_port); hport=$(free_port)
  [ "$backend" = postgres ] && url=(--database-url "$(new_database "bench_$$_$assocs")")
  RUST_LOG=warn $PACS serve --bind 127.0.0.1 --dimse-port "$dport" --http-port "$hport" \
    --data-dir "$dir" "${url[@]}" > "$WORK/node-$backend-$assocs.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$hport/healthz" >/dev/null && break; sleep 0.1; done
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
  python3 - "$backend" "$assocs" "$start" "$end" "$COUNT" "$BYTES" "$stored" <<'PY'
import sys
b, a, s, e, n, by, stored = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
t = e - s
print(f"{b:9} {a:>6} {n:>9} {stored:>7} {t:>8.1f} {n / t:>11.0f} {by / t / 1e6:>8.1f}")
PY
  rm -rf "$dir"
}

echo
echo "backend   assocs instances  stored   time_s instances/s     MB/s"
for backend in sqlite postgres; do
  for assocs in 1 4; do
    run_case "$backend" "$assocs"
  done
done
