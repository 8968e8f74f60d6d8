#!/usr/bin/env bash
# De-identified export benchmark (issue 13): one 300-slice CT study (512x512 16-bit, ~158 MB)
# exported de-identified (Basic Profile) to a ZIP and to a local storescp, beside plain
# retrieval of the same study in the same run: WADO-RS study retrieval (multipart) and C-MOVE
# to the same storescp. SQLite index.
#
#   bench/deid.sh [RUNS]        (default 3; the best and the median run are printed)
#
# Needs: dcmtk, curl, python3 with pydicom. Compare the rows with each other (same run), not
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
TOKEN=bench-admin-token

echo "building the release binary..."
cargo build --release --quiet -p pacs --bin pacs

$PACS synth --studies 1 --slices $SLICES --modality CT --seed 7 --out "$WORK/synth" >/dev/null
SERIES_DIR=$(dirname "$(find "$WORK/synth" -name '*.dcm' | head -n1)")
BYTES=$(find "$SERIES_DIR" -name '*.dcm' -printf '%s\n' | awk '{s+=$1} END {print s}')
STUDY_UID=$(python3 -c "import pydicom,sys,glob; print(pydicom.dcmread(sorted(glob.glob(sys.argv[1]+'/*.dcm'))[0]).StudyInstanceUID)" "$SERIES_DIR")

start_move_destination
sleep 0.5
start_node "$WORK/node" --config "$WORK/pacs.toml" --admin-token "$TOKEN" --deid-secret bench-secret
"$BIN/storescu" -aet BENCH -aec PACS 127.0.0.1 "$DIMSE_PORT" "$SERIES_DIR"/*.dcm
# BENCHSCP (WORK/pacs.toml, with its host and port) is the export destination too

now() { date +%s.%N; }
report() { # label seconds...
  local label=$1
  shift
  printf '%s\n' "$@" | sort -n | awk -v label="$label" -v n="$SLICES" -v bytes="$BYTES" '
    { t[NR] = $1 }
    END {
      best = t[1]; med = t[int((NR + 1) / 2)]
      printf "%-40s %7.0f inst/s %7.0f MB/s (best)   %7.0f inst/s %7.0f MB/s (median)\n",
        label, n / best, bytes / best / 1e6, n / med, bytes / med / 1e6
    }'
}

# export DESTINATION_JSON: creates the export, waits for it to end; prints its id
export_and_wait() {
  local id state
  id=$(curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"studies\":[\"$STUDY_UID\"],\"destination\":$1}" \
    "http://127.0.0.1:$HTTP_PORT/api/exports" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  while :; do
    state=$(curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$HTTP_PORT/api/exports/$id" |
      python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["state"], j["instances_done"])')
    case $state in
      queued*|running*) sleep 0.05 ;;
      "succeeded $SLICES") break ;;
      *) echo "export $id ended: $state" >&2; exit 1 ;;
    esac
  done
  echo "$id"
}

zip=() ; ae=() ; wado=() ; move=()
for _ in $(seq "$RUNS"); do
  # de-identified export to a ZIP, including the download
  s=$(now)
  id=$(export_and_wait '{"type":"zip"}')
  curl -sf -H "Authorization: Bearer $TOKEN" -o "$WORK/export.zip" \
    "http://127.0.0.1:$HTTP_PORT/api/exports/$id/archive"
  e=$(now)
  zip+=("$(echo "$e - $s" | bc)")
  # de-identified export to the storescp
  rm -rf "$WORK/recv"/*
  s=$(now)
  export_and_wait '{"type":"ae","title":"BENCHSCP"}' >/dev/null
  e=$(now)
  n=$(find "$WORK/recv" -type f | wc -l)
  [ "$n" = "$SLICES" ] || { echo "export delivered $n of $SLICES" >&2; exit 1; }
  ae+=("$(echo "$e - $s" | bc)")
  # plain retrieval: WADO-RS study (multipart/related, stored transfer syntax)
  s=$(now)
  curl -sf -H "Authorization: Bearer $TOKEN" -H 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*' \
    -o "$WORK/wado.bin" "http://127.0.0.1:$HTTP_PORT/dicom-web/studies/$STUDY_UID"
  e=$(now)
  wado+=("$(echo "$e - $s" | bc)")
  # plain retrieval: C-MOVE to the same storescp
  rm -rf "$WORK/recv"/*
  s=$(now)
  "$BIN/movescu" -S -aec PACS -aem BENCHSCP -k QueryRetrieveLevel=STUDY \
    -k StudyInstanceUID="$STUDY_UID" 127.0.0.1 "$DIMSE_PORT"
  e=$(now)
  n=$(find "$WORK/recv" -type f | wc -l)
  [ "$n" = "$SLICES" ] || { echo "C-MOVE delivered $n of $SLICES" >&2; exit 1; }
  move+=("$(echo "$e - $s" | bc)")
done
report "de-identified export -> ZIP (+download)" "${zip[@]}"
report "de-identified export -> storescp" "${ae[@]}"
report "WADO-RS study retrieval (plain)" "${wado[@]}"
report "C-MOVE -> storescp (plain)" "${move[@]}"
stop_node
