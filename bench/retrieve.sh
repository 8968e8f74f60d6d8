#!/usr/bin/env bash
# Retrieve benchmark: C-MOVE and C-GET throughput for one 300-slice CT series (512x512 16-bit,
# ~158 MB), with DCMTK's movescu into a storescp and getscu, for the SQLite and the PostgreSQL
# index. As the reference, the same files sent straight to the same storescp by storescu: the
# node should move data as fast as the receiver takes it.
#
#   bench/retrieve.sh [RUNS]        (default 3; the best and the median run are printed)
#
# Needs: dcmtk, PostgreSQL server binaries. Compare the rows with each other (same run), not
# with numbers from another day or machine.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SLICES=300
export TCP_NODELAY=1
BIN=${DCMTK_BIN:-/usr/bin}
WORK=$(mktemp -d /tmp/pacs-bench.XXXXXX)
PACS=target/release/pacs
. bench/lib.sh
trap bench_cleanup EXIT

echo "building release binaries..."
cargo build --release --quiet

$PACS synth --studies 1 --slices $SLICES --modality CT --seed 5 --out "$WORK/synth" >/dev/null
SERIES_DIR=$(dirname "$(find "$WORK/synth" -name '*.dcm' | head -n1)")
BYTES=$(find "$SERIES_DIR" -name '*.dcm' -printf '%s\n' | awk '{s+=$1} END {print s}')
SERIES_UID=$(python3 -c "import pydicom,sys,glob; print(pydicom.dcmread(sorted(glob.glob(sys.argv[1]+'/*.dcm'))[0]).SeriesInstanceUID)" "$SERIES_DIR")

# the receiving storescp (writes every object to disk, as a workstation does)
start_move_destination
sleep 0.5

now() { date +%s.%N; }
report() { # label seconds...
  local label=$1
  shift
  printf '%s\n' "$@" | sort -n | awk -v label="$label" -v n="$SLICES" -v bytes="$BYTES" '
    { t[NR] = $1 }
    END {
      best = t[1]; med = t[int((NR + 1) / 2)]
      printf "%-34s %7.0f inst/s %7.0f MB/s (best)   %7.0f inst/s %7.0f MB/s (median)\n",
        label, n / best, bytes / best / 1e6, n / med, bytes / med / 1e6
    }'
}

times=()
for _ in $(seq "$RUNS"); do
  rm -rf "$WORK/recv"/*
  s=$(now)
  "$BIN/storescu" -aec BENCHSCP 127.0.0.1 "$SCP_PORT" "$SERIES_DIR"/*.dcm
  e=$(now)
  times+=("$(echo "$e - $s" | bc)")
done
report "storescu -> storescp (reference)" "${times[@]}"

start_postgres

for backend in sqlite postgres; do
  url=()
  [ "$backend" = postgres ] && url=(--database-url "$(new_database bench_retrieve)")
  start_node "$WORK/node-$backend" --config "$WORK/pacs.toml" "${url[@]}"
  "$BIN/storescu" -aec PACS 127.0.0.1 "$DIMSE_PORT" "$SERIES_DIR"/*.dcm
  move=()
  get=()
  for _ in $(seq "$RUNS"); do
    rm -rf "$WORK/recv"/*
    s=$(now)
    "$BIN/movescu" -S -aec PACS -aem BENCHSCP -k QueryRetrieveLevel=SERIES \
      -k SeriesInstanceUID="$SERIES_UID" 127.0.0.1 "$DIMSE_PORT"
    e=$(now)
    n=$(find "$WORK/recv" -type f | wc -l)
    [ "$n" = "$SLICES" ] || { echo "C-MOVE delivered $n of $SLICES" >&2; exit 1; }
    move+=("$(echo "$e - $s" | bc)")
    rm -rf "$WORK/get" && mkdir -p "$WORK/get"
    s=$(now)
    "$BIN/getscu" -S -aec PACS -od "$WORK/get" -k QueryRetrieveLevel=SERIES \
      -k SeriesInstanceUID="$SERIES_UID" 127.0.0.1 "$DIMSE_PORT"
    e=$(now)
    n=$(find "$WORK/get" -type f | wc -l)
    [ "$n" = "$SLICES" ] || { echo "C-GET delivered $n of $SLICES" >&2; exit 1; }
    get+=("$(echo "$e - $s" | bc)")
  done
  report "C-MOVE -> storescp ($backend)" "${move[@]}"
  report "C-GET -> getscu ($backend)" "${get[@]}"
  stop_node
done
