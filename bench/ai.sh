#!/usr/bin/env bash
# AI worker pool benchmark (release binaries, SQLite index, local storage):
#
# 1. Latency, for a 300-slice CT (512x512, ct-classical) and for the deepbrain reference MR:
#    the time from the last C-STORE answer to the SR being retrievable through QIDO-RS, split
#    into waiting for completion (the quiet period, QUIET seconds, plus the completion scanner's
#    tick), the job waiting for a worker, fetching (WADO-RS), assembling the volume, inference
#    (pre-processing, the ONNX Runtime run, post-processing), measuring, encoding SEG and SR,
#    and storing them (STOW-RS). One worker, idle before each push.
# 2. Throughput of 1, 2 and 4 workers (each with --threads 1) on SERIES queued CT series of
#    100 slices (512x512): the series are pushed and queued first, then the workers start; the
#    time until every job has succeeded gives series/s.
#
#   bench/ai.sh [RUNS] [SERIES]     (default 3 latency runs, best and median printed; 8 series)
#
# Needs: dcmtk, python3 with the onnxruntime wheel (tests/requirements.txt). Compare rows of one
# run with each other, not with numbers from another day or machine.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SERIES=${2:-8}
QUIET=2
export TCP_NODELAY=1
WORK=$(mktemp -d /tmp/pacs-bench-ai.XXXXXX)
PACS=target/release/pacs
WORKER=target/release/pacs-ai-worker
TOKEN=bench-token
. bench/lib.sh
trap bench_cleanup EXIT

echo "building release binaries..."
cargo build --release --quiet -p pacs -p pacs-ai-worker

ai_node() { # DIR
  start_node "$1" --worker-token "$TOKEN" --series-quiet-secs "$QUIET" \
    --ai-models-dir ai-worker/models
}

WORKER_PIDS=()
start_workers() { # N
  WORKER_PIDS=()
  for i in $(seq "$1"); do
    RUST_LOG=warn "$WORKER" --node "http://127.0.0.1:$HTTP_PORT" --token "$TOKEN" \
      --worker-id "bench-$i" --threads 1 --poll-ms 50 >> "$WORK/worker-$i.log" 2>&1 &
    WORKER_PIDS+=("$!")
    PIDS+=("$!")
  done
}
stop_workers() {
  for p in "${WORKER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  WORKER_PIDS=()
}

study_of() { python3 -c "import pydicom,sys,glob; print(pydicom.dcmread(sorted(glob.glob(sys.argv[1]+'/*.dcm'))[0]).StudyInstanceUID)" "$1"; }

# ---- 1. latency ----
split() { # LABEL SERIES_DIR: RUNS samples, each on a fresh node
  local label=$1 dir=$2 samples=()
  for r in $(seq "$RUNS"); do
    ai_node "$WORK/lat-$label-$r"
    start_workers 1
    sleep 0.5 # the worker has loaded its models and polls
    samples+=("$(python3 bench/ai_latency.py "$HTTP_PORT" "$DIMSE_PORT" "$dir" "$(study_of "$dir")")")
    stop_workers
    stop_node
  done
  printf '%s\n' "${samples[@]}" | python3 -c '
import json, sys
label = sys.argv[1]
rows = sorted((json.loads(l) for l in sys.stdin), key=lambda r: r["total_ms"])
keys = ["total_ms", "wait_for_completion_ms", "queue_ms", "fetch_ms", "assemble_ms",
        "inference_ms", "onnx_run_ms", "measure_ms", "encode_ms", "store_ms", "other_ms"]
for name, r in (("best", rows[0]), ("median", rows[(len(rows) - 1) // 2])):
    n = r["slices"]
    print(f"{label} ({n} slices), {name}: " +
          ", ".join(f"{k[:-3]} {r[k]:.0f}" for k in keys) + " (ms)")
' "$label"
}

"$PACS" synth --studies 1 --slices 300 --modality CT --seed 31 --out "$WORK/ct300" >/dev/null
CT300=$(dirname "$(find "$WORK/ct300" -name '*.dcm' | head -n1)")
echo "== latency: last C-STORE answer -> SR in QIDO (quiet period ${QUIET} s, 1 worker)"
split "CT 512x512 ct-classical" "$CT300"
split "MR reference deepbrain" "ai-worker/models/deepbrain/reference/dicom"

# ---- 2. throughput ----
"$PACS" synth --studies 1 --series "$SERIES" --slices 100 --modality CT --seed 37 --out "$WORK/many" >/dev/null
echo "== throughput: $SERIES CT series of 100 slices (512x512), queued before the workers start"
for n in 1 2 4; do
  ai_node "$WORK/tp-$n"
  /usr/bin/storescu -aet BENCH -aec PACS +sd +r 127.0.0.1 "$DIMSE_PORT" "$WORK/many" >/dev/null
  for _ in $(seq 600); do
    q=$(curl -sf "http://127.0.0.1:$HTTP_PORT/api/ai/jobs?state=queued" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    [ "$q" = "$SERIES" ] && break
    sleep 0.1
  done
  [ "$q" = "$SERIES" ] || { echo "only $q of $SERIES jobs queued" >&2; exit 1; }
  s=$(date +%s.%N)
  start_workers "$n"
  for _ in $(seq 6000); do
    d=$(curl -sf "http://127.0.0.1:$HTTP_PORT/api/ai/jobs?state=succeeded" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    [ "$d" = "$SERIES" ] && break
    sleep 0.1
  done
  e=$(date +%s.%N)
  [ "$d" = "$SERIES" ] || { echo "only $d of $SERIES jobs succeeded" >&2; exit 1; }
  echo "$n $SERIES $s $e" | awk '{ t = $4 - $3; printf "%d worker(s): %d series in %.1f s = %.2f series/s, %.0f slices/s\n", $1, $2, t, $2 / t, $2 * 100 / t }'
  stop_workers
  stop_node
done
