#!/usr/bin/env bash
# The web console's study list over a large index: the exact QIDO-RS request the console's
# Studies page makes (ui/pages/studies.js: 25 a page, one more asked for, four include fields),
# its second and a deep page, a name search, and the page shell and its script, each timed as
# a signed-in administrator would send them (the pacs_session cookie of POST /ui/session), for
# SQLite and PostgreSQL.
#
#   bench/console.sh [STUDIES] [RUNS]     (default 10000 studies = 1,000,000 instances; 200 runs)
#
# Budget (issue: the study list at 1,000,000 instances within the QIDO study-list budget of
# docs/benchmarks.md): p95 < 20 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES=${1:-10000}
RUNS=${2:-200}
WORK=$(mktemp -d /tmp/pacs-bench.XXXXXX)
PACS=target/release/pacs
. bench/lib.sh
trap bench_cleanup EXIT

echo "building release binaries..."
cargo build --release --quiet --bin pacs
start_postgres
PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
INCLUDE=00081030%2C00201206%2C00201208%2C00080090
for backend in sqlite postgres; do
  dir=$WORK/node-$backend
  args=()
  if [ "$backend" = postgres ]; then
    url=$(new_database "bench_console")
    args+=(--database-url "$url")
  fi
  # migrate, then fill the empty index directly
  start_node "$dir" "${args[@]}"
  stop_node
  started=$(date +%s)
  if [ "$backend" = postgres ]; then
    python3 bench/fill_index.py postgres "$STUDIES" 2 50 | psql -q "$url" >/dev/null
  else
    python3 bench/fill_index.py sqlite "$STUDIES" 2 50 | sqlite3 "$dir/index.sqlite" >/dev/null
  fi
  printf '%s\n' "$PASSWORD" | "$PACS" user add admin --roles admin --password-stdin \
    --data-dir "$dir" "${args[@]}" >/dev/null
  echo
  echo "== $backend: filled $STUDIES studies / $((STUDIES * 100)) instances in $(( $(date +%s) - started )) s"
  start_node "$dir" "${args[@]}"
  cookie=$(curl -s -D - -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" \
    "http://127.0.0.1:$HTTP_PORT/ui/session" | sed -n 's/^[Ss]et-[Cc]ookie: \(pacs_session=[^;]*\).*/\1/p')
  [ -n "$cookie" ] || { echo "no session cookie" >&2; exit 1; }
  base=/dicom-web/studies
  HTTP_LATENCY_HEADER="Cookie: $cookie" python3 bench/http_latency.py 127.0.0.1 "$HTTP_PORT" "$RUNS" \
    "console_study_list=$base?includefield=$INCLUDE&limit=26|application/dicom+json" \
    "console_page_2=$base?includefield=$INCLUDE&limit=26&offset=25|application/dicom+json" \
    "console_page_200=$base?includefield=$INCLUDE&limit=26&offset=5000|application/dicom+json" \
    "console_name_search=$base?PatientName=GARC*&includefield=$INCLUDE&limit=26|application/dicom+json" \
    "console_modality_month=$base?ModalitiesInStudy=CT&StudyDate=20200101-20200131&includefield=$INCLUDE&limit=26|application/dicom+json" \
    "shell_ui_studies=/ui/studies" \
    "script_app_js=/ui/assets/app.js"
  stop_node
done
