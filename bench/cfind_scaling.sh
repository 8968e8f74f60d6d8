#!/usr/bin/env bash
# C-FIND cost against index size: a study-level C-FIND with FIND_STUDIES matches (findscu
# process, the keys of bench/dimse.sh) next to a C-ECHO (echoscu process), over indexes of
# several sizes, on SQLite and PostgreSQL. Each index is filled by bench/fill_index.py
# (100 instances per study) and then receives the FIND_STUDIES one-slice studies by C-STORE.
#
#   bench/cfind_scaling.sh [FIND_STUDIES] [RUNS] [STUDIES...]   (defaults 101, 11, 0 2000 10000)
#
# 10000 studies = 1,000,000 instances. PACS names the binary (default target/release/pacs):
# run the script with two binaries to compare them.
set -euo pipefail
cd "$(dirname "$0")/.."
FIND_STUDIES=${1:-101}
RUNS=${2:-11}
shift 2 || true
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(0 2000 10000)
export TCP_NODELAY=1
BIN=${DCMTK_BIN:-/usr/bin}
WORK=$(mktemp -d /tmp/pacs-bench.XXXXXX)
PACS=${PACS:-target/release/pacs}
. bench/lib.sh
trap bench_cleanup EXIT

$PACS synth --studies "$FIND_STUDIES" --slices 1 --modality CT --seed 11 --out "$WORK/find" >/dev/null
find "$WORK/find" -name '*.dcm' | sort > "$WORK/find.txt"
start_postgres

median_ms() { # COMMAND...: median wall time of RUNS runs (after one warm-up), in ms
  local times=() s e
  for i in $(seq $((RUNS + 1))); do
    s=$(date +%s%N)
    "$@" >/dev/null 2>&1
    e=$(date +%s%N)
    [ "$i" = 1 ] || times+=("$(( (e - s) / 1000 ))")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", v[int((NR + 1) / 2)] / 1000 }'
}

echo "binary $PACS; C-FIND of $FIND_STUDIES matches; median of $RUNS findscu / echoscu processes"
echo
echo "| index | studies | instances | C-ECHO ms | C-FIND ms | C-FIND - C-ECHO ms |"
echo "|---|---|---|---|---|---|"
requestors_toml > "$WORK/requestors.toml"
for backend in sqlite postgres; do
  for studies in "${SIZES[@]}"; do
    dir=$WORK/node-$backend-$studies
    args=(--config "$WORK/requestors.toml")
    if [ "$backend" = postgres ]; then
      url=$(new_database "bench_cfind_$studies")
      args+=(--database-url "$url")
    fi
    start_node "$dir" "${args[@]}"
    stop_node
    if [ "$studies" -gt 0 ]; then
      if [ "$backend" = postgres ]; then
        python3 bench/fill_index.py postgres "$studies" 2 50 | psql -q "$url" >/dev/null
      else
        python3 bench/fill_index.py sqlite "$studies" 2 50 | sqlite3 "$dir/index.sqlite" >/dev/null
      fi
    fi
    start_node "$dir" "${args[@]}"
    xargs -a "$WORK/find.txt" "$BIN/storescu" -aet BENCH -aec PACS 127.0.0.1 "$DIMSE_PORT"
    find=("$BIN/findscu" -S -aet BENCH -aec PACS "${STUDY_LIST_KEYS[@]}" 127.0.0.1 "$DIMSE_PORT")
    n=$("${find[@]}" -v 2>&1 | grep -c "Find Response.*(Pending)" || true)
    [ "$n" = "$FIND_STUDIES" ] || { echo "C-FIND returned $n matches, not $FIND_STUDIES" >&2; exit 1; }
    echo_ms=$(median_ms "$BIN/echoscu" -aet BENCH -aec PACS 127.0.0.1 "$DIMSE_PORT")
    find_ms=$(median_ms "${find[@]}")
    echo "| $backend | $((studies + FIND_STUDIES)) | $((studies * 100 + FIND_STUDIES)) | $echo_ms | $find_ms | $(echo "$find_ms - $echo_ms" | bc) |"
    stop_node
    rm -rf "$dir"
  done
done
