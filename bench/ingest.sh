#!/usr/bin/env bash
# Ingest benchmark: C-STORE throughput with DCMTK's storescu over 1 and 4 associations, for the
# SQLite and the PostgreSQL index, durability on (fsync of every object, synchronous commits),
# for this node and, when its binary is found, Orthanc (Debian packages `orthanc` and
# `orthanc-postgresql`) with the same files in the same run.
#
#   bench/ingest.sh [INSTANCES]      (default 3000; 512x512 16-bit synthetic CT, ~0.5 MB each)
#
# Needs: dcmtk (storescu), PostgreSQL server binaries (initdb, pg_ctl). Installs nothing. Prints a
# line per case (with the CPU per instance of the server process and of the whole machine:
# server, its PostgreSQL, the storescu clients and the kernel) and a table of ratios.
# Environment: PACS, one or more node binaries separated by spaces (default
# target/release/pacs, built first unless PACS_SKIP_BUILD is set): each case runs on each
# binary in turn, so that a build before a change and one after are compared in one run; the
# ratios are the first binary's. MAX_PDU: the node's --max-pdu (storescu sends PDUs as large as
# the node accepts; 16384 is what many modalities and Orthanc use). ORTHANC (binary, default
# the one on PATH; empty: no Orthanc), ORTHANC_PLUGINS (directory of
# libOrthancPostgreSQLIndex.so), DCMTK_BIN (default /usr/bin: pynetdicom installs commands of
# the same names).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3000}
SLICES=300
STUDIES=$(( (N + SLICES - 1) / SLICES ))
export TCP_NODELAY=1
BIN=${DCMTK_BIN:-/usr/bin}
STORESCU=$BIN/storescu
ORTHANC=${ORTHANC-$(command -v Orthanc || true)}
ORTHANC_PLUGINS=${ORTHANC_PLUGINS:-/usr/share/orthanc/plugins}
declare -A RATE # RATE[target,backend,associations]
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

# push PART-PREFIX's files over ASSOCIATIONS associations to AE at PORT (a server of pid PID):
# prints "seconds server-ms-per-instance machine-ms-per-instance"
push() { # prefix associations ae port pid
  split -n "r/$2" "$WORK/files.txt" "$1"
  local start end cpu0 cpu1 busy0 busy1 pids=()
  cpu0=$(process_cpu "$5")
  busy0=$(machine_busy)
  start=$(date +%s.%N)
  for part in "$1"*; do
    xargs -a "$part" "$STORESCU" -aet BENCH -aec "$3" 127.0.0.1 "$4" &
    pids+=("$!")
  done
  wait "${pids[@]}" || true
  end=$(date +%s.%N)
  cpu1=$(process_cpu "$5")
  busy1=$(machine_busy)
  python3 -c "import sys; t, c, b, n, k = map(float, sys.argv[1:]); print(t, c * 1000 / k / n, b * 1000 / k / n)" \
    "$(echo "$end - $start" | bc -l)" "$((cpu1 - cpu0))" "$((busy1 - busy0))" "$COUNT" "$TICKS"
}

report() { # target backend associations stored "seconds server-ms machine-ms" binary
  local t cpu busy
  read -r t cpu busy <<< "$5"
  RATE[$1,$2,$3]=$(echo "$COUNT / $t" | bc -l)
  python3 - "$@" "$COUNT" "$BYTES" "$t" "$cpu" "$busy" <<'PY'
import sys
target, b, a, stored, _, binary, n, by, t, cpu, busy = sys.argv[1:]
n, t = int(n), float(t)
print(f"{target:8} {b:9} {a:>6} {n:>9} {stored:>7} {t:>8.1f} {n / t:>11.0f} {int(by) / t / 1e6:>8.1f} "
      f"{float(cpu):>10.2f} {float(busy):>11.2f}  {binary}")
PY
}

run_case() { # backend associations binary-number
  local backend=$1 assocs=$2 dir=$WORK/node-$1-$2
  local url=()
  [ "$backend" = postgres ] && url=(--database-url "$(new_database "bench_ingest_${assocs}_$3")")
  [ -n "${MAX_PDU:-}" ] && url+=(--max-pdu "$MAX_PDU")
  start_node "$dir" "${url[@]}"
  local pid=$NODE_PID hport=$HTTP_PORT timing stored
  timing=$(push "$WORK/part-$backend-$assocs-$3-" "$assocs" PACS "$DIMSE_PORT" "$pid")
  stored=$(curl -s "http://127.0.0.1:$hport/api/statistics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["instances"])')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local target=node
  [ "$3" -gt 1 ] && target=node$3
  report "$target" "$backend" "$assocs" "$stored" "$timing" "$PACS"
  rm -rf "$dir"
}

orthanc_case() { # backend associations
  start_orthanc "orthanc-$1-$2" "$1"
  local timing stored
  timing=$(push "$WORK/part-orthanc-$1-$2-" "$2" "$TARGET_AE" "$TARGET_PORT" "$TARGET_PID")
  kill "$TARGET_PID"; wait "$TARGET_PID" 2>/dev/null || true
  stored=$(find "$WORK/orthanc-$1-$2/storage" -type f | wc -l)
  report orthanc "$1" "$2" "$stored" "$timing" "$ORTHANC"
  rm -rf "$WORK/orthanc-$1-$2"
}

echo
echo "target   backend   assocs instances  stored   time_s instances/s     MB/s server_ms machine_ms  binary"
for backend in sqlite postgres; do
  for assocs in 1 4; do
    i=0
    for PACS in $BINARIES; do
      i=$((i + 1))
      run_case "$backend" "$assocs" "$i"
    done
    if [ -n "$ORTHANC" ]; then
      if [ "$backend" = postgres ] && [ ! -e "$ORTHANC_PLUGINS/libOrthancPostgreSQLIndex.so" ]; then
        echo "(Orthanc, postgres: no libOrthancPostgreSQLIndex.so in $ORTHANC_PLUGINS)"
      else
        orthanc_case "$backend" "$assocs"
      fi
    fi
  done
done
if [ -n "$ORTHANC" ]; then
  echo
  echo "node / Orthanc, instances/s (>1: this node is faster)"
  for backend in sqlite postgres; do
    for assocs in 1 4; do
      [ -n "${RATE[orthanc,$backend,$assocs]:-}" ] || continue
      printf '%-9s %d association(s): %.2fx\n' "$backend" "$assocs" \
        "$(echo "${RATE[node,$backend,$assocs]} / ${RATE[orthanc,$backend,$assocs]}" | bc -l)"
    done
  done
fi
