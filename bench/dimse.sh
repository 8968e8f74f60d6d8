#!/usr/bin/env bash
# DIMSE benchmark, this node against Orthanc, each on SQLite and on PostgreSQL, in one run with
# the same data and the same DCMTK client processes:
#   C-ECHO (echoscu), study-level C-FIND with FIND_STUDIES matches (findscu), C-GET of a series
#   (getscu), C-MOVE of a series (movescu into a storescp), C-STORE of a series over 1 and over
#   4 associations (storescu), and for the 4 associations the CPU used per instance by the server
#   process and by the whole machine (server, its PostgreSQL, the clients, the kernel).
#
#   bench/dimse.sh [SLICES] [FIND_STUDIES] [RUNS]     (defaults 300, 101, 5)
#
# The series is a synthetic 512x512 16-bit CT (`pacs synth`, SLICES slices, ~0.5 MB each); the
# C-FIND matches FIND_STUDIES one-slice studies (PatientID SYN-11-*) among the others. Times are
# the median of RUNS; every figure ends with a ratio from this run: >1 means this node is faster.
#
# Installs nothing. Needs DCMTK and PostgreSQL server binaries; Orthanc runs when its binary is
# found (Debian packages `orthanc` and, for the PostgreSQL rows, `orthanc-postgresql`); the
# system's orthanc service is not used: each Orthanc is started here on free ports with a
# temporary storage directory (and a database in the throwaway cluster), and stopped after.
# Environment: DCMTK_BIN (default /usr/bin: pynetdicom installs commands of the same names),
# ORTHANC (binary), ORTHANC_PLUGINS (directory of libOrthancPostgreSQLIndex.so).
set -euo pipefail
cd "$(dirname "$0")/.."
SLICES=${1:-300}
FIND_STUDIES=${2:-101}
RUNS=${3:-5}
. bench/lib.sh
bench_against_orthanc_setup

echo "synthesising a $SLICES-slice CT series (twice: 1 and 4 associations) and $FIND_STUDIES one-slice studies..."
$PACS synth --studies 1 --slices "$SLICES" --modality CT --seed 5 --out "$WORK/series1" >/dev/null
$PACS synth --studies 1 --slices "$SLICES" --modality CT --seed 6 --out "$WORK/series4" >/dev/null
$PACS synth --studies "$FIND_STUDIES" --slices 1 --modality CT --seed 11 --out "$WORK/find" >/dev/null
find "$WORK/series1" -name '*.dcm' | sort > "$WORK/series1.txt"
find "$WORK/series4" -name '*.dcm' | sort > "$WORK/series4.txt"
find "$WORK/find" -name '*.dcm' | sort > "$WORK/find.txt"
split -n r/4 "$WORK/series4.txt" "$WORK/part-"
BYTES=$(xargs -a "$WORK/series1.txt" stat -c %s | awk '{s+=$1} END {print s}')
SERIES_UID=$(python3 -c "import pydicom,sys; print(pydicom.dcmread(sys.argv[1], stop_before_pixels=True).SeriesInstanceUID)" "$(head -n1 "$WORK/series1.txt")")

# the C-MOVE destination, writing every object to disk as a workstation does
start_move_destination

start_postgres

now_ns() { date +%s%N; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
declare -A R # R[metric,target] = value

start_pacs() { # NAME sqlite|postgres
  local url=()
  [ "$2" = postgres ] && url=(--database-url "$(new_database "bench_${1//-/_}")")
  start_node "$WORK/$1" --config "$WORK/pacs.toml" "${url[@]}"
  TARGET_PID=$NODE_PID TARGET_PORT=$DIMSE_PORT TARGET_AE=PACS
}

measure() { # TARGET-NAME
  local t=$1 ae=$TARGET_AE port=$TARGET_PORT s e times
  # C-STORE, one association, then four (another series: nothing is a duplicate)
  s=$(now_ns)
  xargs -a "$WORK/series1.txt" "$BIN/storescu" -aet BENCH -aec "$ae" 127.0.0.1 "$port"
  e=$(now_ns)
  R[store1,$t]=$(echo "$SLICES / (($e - $s) / 1000000000)" | bc -l)
  s=$(now_ns)
  local pids=() cpu0 busy0 cpu1 busy1
  cpu0=$(process_cpu "$TARGET_PID")
  busy0=$(machine_busy)
  for part in "$WORK"/part-*; do
    xargs -a "$part" "$BIN/storescu" -aet BENCH -aec "$ae" 127.0.0.1 "$port" &
    pids+=("$!")
  done
  wait "${pids[@]}"
  e=$(now_ns)
  cpu1=$(process_cpu "$TARGET_PID")
  busy1=$(machine_busy)
  R[store4,$t]=$(echo "$SLICES / (($e - $s) / 1000000000)" | bc -l)
  # where the CPU went: the server's own process, and the whole machine (the server, its
  # PostgreSQL, the four storescu processes and the kernel's loopback work), per instance
  R[store4cpu,$t]=$(echo "($cpu1 - $cpu0) * 1000 / $TICKS / $SLICES" | bc -l)
  R[store4busy,$t]=$(echo "($busy1 - $busy0) * 1000 / $TICKS / $SLICES" | bc -l)
  xargs -a "$WORK/find.txt" "$BIN/storescu" -aet BENCH -aec "$ae" 127.0.0.1 "$port"

  times=()
  for _ in $(seq $((RUNS + 1))); do
    s=$(now_ns)
    "$BIN/echoscu" -aet BENCH -aec "$ae" 127.0.0.1 "$port"
    e=$(now_ns)
    times+=("$(( (e - s) / 1000 ))")
  done
  R[echo,$t]=$(printf '%s\n' "${times[@]:1}" | median | awk '{print $1 / 1000}')

  # a study list as a workstation asks for it
  local find=("$BIN/findscu" -S -aet BENCH -aec "$ae" "${STUDY_LIST_KEYS[@]}" 127.0.0.1 "$port")
  local n
  n=$("${find[@]}" -v 2>&1 | grep -c "Find Response.*(Pending)" || true)
  [ "$n" = "$FIND_STUDIES" ] || { echo "$t: C-FIND returned $n matches, not $FIND_STUDIES" >&2; exit 1; }
  times=()
  for _ in $(seq $((RUNS + 1))); do
    s=$(now_ns)
    "${find[@]}" >/dev/null 2>&1
    e=$(now_ns)
    times+=("$(( (e - s) / 1000 ))")
  done
  R[find,$t]=$(printf '%s\n' "${times[@]:1}" | median | awk '{print $1 / 1000}')

  times=()
  for _ in $(seq "$RUNS"); do
    rm -rf "$WORK/get" && mkdir -p "$WORK/get"
    s=$(now_ns)
    "$BIN/getscu" -S -aet BENCH -aec "$ae" -od "$WORK/get" -k QueryRetrieveLevel=SERIES \
      -k SeriesInstanceUID="$SERIES_UID" 127.0.0.1 "$port" >/dev/null 2>&1
    e=$(now_ns)
    n=$(find "$WORK/get" -type f | wc -l)
    [ "$n" = "$SLICES" ] || { echo "$t: C-GET delivered $n of $SLICES" >&2; exit 1; }
    times+=("$(( (e - s) / 1000 ))")
  done
  R[get,$t]=$(printf '%s\n' "${times[@]}" | median | awk -v b="$BYTES" '{print b / $1}')

  times=()
  for _ in $(seq "$RUNS"); do
    rm -rf "$WORK/recv"/*
    s=$(now_ns)
    "$BIN/movescu" -S -aet BENCH -aec "$ae" -aem BENCHSCP -k QueryRetrieveLevel=SERIES \
      -k SeriesInstanceUID="$SERIES_UID" 127.0.0.1 "$port" >/dev/null 2>&1
    e=$(now_ns)
    n=$(find "$WORK/recv" -type f | wc -l)
    [ "$n" = "$SLICES" ] || { echo "$t: C-MOVE delivered $n of $SLICES" >&2; exit 1; }
    times+=("$(( (e - s) / 1000 ))")
  done
  R[move,$t]=$(printf '%s\n' "${times[@]}" | median | awk -v b="$BYTES" '{print b / $1}')
  kill "$TARGET_PID"
  wait "$TARGET_PID" 2>/dev/null || true
}

TARGETS=()
for backend in sqlite postgres; do
  echo "== this node, $backend"
  start_pacs "pacs-$backend" "$backend"
  measure "pacs-$backend"
  TARGETS+=("pacs-$backend")
done
if [ -n "$ORTHANC" ]; then
  for backend in sqlite postgres; do
    if [ "$backend" = postgres ] && [ ! -e "$ORTHANC_PLUGINS/libOrthancPostgreSQLIndex.so" ]; then
      echo "== Orthanc, postgres: no libOrthancPostgreSQLIndex.so in $ORTHANC_PLUGINS, not measured"
      continue
    fi
    echo "== Orthanc, $backend"
    start_orthanc "orthanc-$backend" "$backend"
    measure "orthanc-$backend"
    TARGETS+=("orthanc-$backend")
  done
else
  echo "== Orthanc not found (set ORTHANC): this node only"
fi

echo
echo "$SLICES-slice CT series (512x512, $((BYTES / 1000000)) MB), C-FIND of $FIND_STUDIES matches, median of $RUNS, $(date -u +%F)"
python3 - "$SLICES" "${TARGETS[*]}" "$(for k in "${!R[@]}"; do echo "$k=${R[$k]}"; done)" <<'PY'
import sys
targets = sys.argv[2].split()
r = {}
for line in sys.argv[3].splitlines():
    k, v = line.split("=")
    metric, target = k.split(",")
    r[(metric, target)] = float(v)
rows = [  # metric, label, unit, higher is better
    ("echo", "C-ECHO, echoscu process", "ms", False),
    ("find", "C-FIND study level, findscu process", "ms", False),
    ("get", "C-GET series, getscu", "MB/s", True),
    ("move", "C-MOVE series, movescu to storescp", "MB/s", True),
    ("store4", "C-STORE, 4 associations", "inst/s", True),
    ("store1", "C-STORE, 1 association", "inst/s", True),
    ("store4cpu", "C-STORE, 4 associations: server process CPU per instance", "ms", False),
    ("store4busy", "C-STORE, 4 associations: whole machine CPU per instance", "ms", False),
]
names = {"pacs-sqlite": "node SQLite", "pacs-postgres": "node PostgreSQL",
         "orthanc-sqlite": "Orthanc SQLite", "orthanc-postgres": "Orthanc PostgreSQL"}
ratios = [b for b in ("sqlite", "postgres") if f"orthanc-{b}" in targets and f"pacs-{b}" in targets]
label = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
head = ["", "unit"] + [names[t] for t in targets] + [f"node/Orthanc {label[b]}" for b in ratios]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for metric, label, unit, higher in rows:
    cells = [label, unit]
    for t in targets:
        v = r[(metric, t)]
        cells.append(f"{v:.2f}" if metric in ("store4cpu", "store4busy") else f"{v:.1f}" if unit == "ms" else f"{v:.0f}")
    for b in ratios:
        node, orthanc = r[(metric, f"pacs-{b}")], r[(metric, f"orthanc-{b}")]
        cells.append(f"{(node / orthanc if higher else orthanc / node):.2f}x")
    print("| " + " | ".join(cells) + " |")
PY
