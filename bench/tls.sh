#!/usr/bin/env bash
# What TLS costs: QIDO-RS over HTTPS vs plain HTTP (same node, same port, interleaved on kept-alive
# connections: bench/tls_latency.py), and DIMSE ingest with storescu +tls vs plain (the same
# files, 4 associations each, alternating rounds), in one run.
#
#   bench/tls.sh [SLICES] [RUNS] [ROUNDS]   (default 300 slices, 2000 QIDO runs, 3 ingest rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
SLICES=${1:-300}
RUNS=${2:-2000}
ROUNDS=${3:-3}
export TCP_NODELAY=1
BIN=${DCMTK_BIN:-/usr/bin}
WORK=$(mktemp -d /tmp/pacs-bench.XXXXXX)
PACS=target/release/pacs
. bench/lib.sh
trap bench_cleanup EXIT

echo "building release binaries..."
cargo build --release --quiet --bin pacs
$PACS synth --studies 20 --slices 1 --modality CT --seed 11 --out "$WORK/list" >/dev/null
$PACS synth --studies 2 --slices "$SLICES" --modality CT --seed 77 --out "$WORK/series" >/dev/null

# a CA and the node's certificate
tls=$WORK/tls
mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$tls/ca.key" -out "$tls/ca.crt" >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$tls/node.key" -out "$tls/node.csr" >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$tls/ext"
openssl x509 -req -in "$tls/node.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
  -days 2 -extfile "$tls/ext" -out "$tls/node.crt" >/dev/null 2>&1

TLS_PORT=$(free_port)
start_node "$WORK/node" --tls-cert "$tls/node.crt" --tls-key "$tls/node.key" --dimse-tls-port "$TLS_PORT"
find "$WORK/list" -name '*.dcm' | xargs "$BIN/storescu" -aet BENCH -aec PACS 127.0.0.1 "$DIMSE_PORT"

echo
echo "== QIDO-RS over HTTPS vs HTTP, $RUNS interleaved runs (node $(git rev-parse --short HEAD))"
python3 bench/tls_latency.py "$HTTP_PORT" "$RUNS" "$tls/ca.crt" \
  "/dicom-web/studies?PatientID=SYN-11-*&includefield=00081030"

# ingest: the two series, 4 associations, plain then TLS, three rounds (each round stores into
# a fresh node so that no instance is a duplicate)
echo
echo "== C-STORE ingest, $((SLICES * 2)) instances over 4 associations"
find "$WORK/series" -name '*.dcm' | sort > "$WORK/files.txt"
split -n r/4 "$WORK/files.txt" "$WORK/part-"
# the node's CPU time so far (user + system, seconds) from /proc: what TLS costs the node
# itself, apart from the storescu processes that share the machine's cores
node_cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$NODE_PID/stat"; }
ingest() {  # ingest plain|tls: sets RATE (instances per second) and CPU (node CPU seconds)
  local mode=$1 t0 t1 c0 pids=()
  stop_node
  rm -rf "$WORK/node"
  TLS_PORT=$(free_port)
  start_node "$WORK/node" --tls-cert "$tls/node.crt" --tls-key "$tls/node.key" --dimse-tls-port "$TLS_PORT"
  c0=$(node_cpu)
  t0=$(date +%s.%N)
  for part in "$WORK"/part-*; do
    if [ "$mode" = tls ]; then
      xargs -a "$part" "$BIN/storescu" +tla +cf "$tls/ca.crt" \
        -aet BENCH -aec PACS 127.0.0.1 "$TLS_PORT" &
    else
      xargs -a "$part" "$BIN/storescu" -aet BENCH -aec PACS 127.0.0.1 "$DIMSE_PORT" &
    fi
    pids+=($!)
  done
  wait "${pids[@]}"
  t1=$(date +%s.%N)
  RATE=$(python3 -c "print(f'{$((SLICES * 2)) / ($t1 - $t0):.0f}')")
  CPU=$(python3 -c "print(f'{$(node_cpu) - $c0:.2f}')")
}
printf '%-8s %10s %10s %14s %12s\n' round plain tls node-cpu-plain node-cpu-tls
for round in $(seq "$ROUNDS"); do
  ingest plain
  plain=$RATE
  plain_cpu=$CPU
  ingest tls
  printf '%-8s %10s %10s %14s %12s   (instances/s; node CPU s)\n' \
    "$round" "$plain" "$RATE" "$plain_cpu" "$CPU"
done
