# Shared by the bench/ scripts: a throwaway PostgreSQL cluster, free ports, nodes.
# Source it after setting WORK (a temporary directory) and PACS (the release binary), or call
# bench_against_orthanc_setup after sourcing it.

PIDS=()
bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${PGDATA_DIR:-}" ]; then run_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}

# CPU time, in ticks of TICKS per second: a process's (user + system), and the whole machine's
# busy time over all CPUs (user, nice, system, irq, softirq)
TICKS=$(getconf CLK_TCK)
process_cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }

run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# PostgreSQL: PACS_BENCH_DATABASE_URL names a server where databases may be created, else a
# throwaway cluster is started (initdb refuses root: it runs as the postgres user).
start_postgres() {
  PGBIN=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | tail -n1)")
  if [ -n "${PACS_BENCH_DATABASE_URL:-}" ]; then return; fi
  PGDATA_DIR=$WORK/pg
  mkdir -p "$PGDATA_DIR"
  chmod 755 "$WORK"
  if [ "$(id -u)" = 0 ]; then chown postgres "$PGDATA_DIR"; fi
  local port
  port=$(free_port)
  run_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -A trust -U postgres >/dev/null
  run_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/log" -w \
    -o "-p $port -k $PGDATA_DIR -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c shared_buffers=256MB" start >/dev/null
  PACS_BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# new_database NAME: creates it, prints its URL
new_database() {
  local base=${PACS_BENCH_DATABASE_URL%/*}
  psql "$PACS_BENCH_DATABASE_URL" -qc "CREATE DATABASE $1" >/dev/null
  echo "$base/$1"
}

# start_node DIR [ARGS...]: starts a node on free ports; sets NODE_PID, DIMSE_PORT, HTTP_PORT
start_node() {
  local dir=$1
  shift
  DIMSE_PORT=$(free_port)
  HTTP_PORT=$(free_port)
  mkdir -p "$dir"
  RUST_LOG=warn "$PACS" serve --bind 127.0.0.1 --dimse-port "$DIMSE_PORT" --http-port "$HTTP_PORT" \
    --data-dir "$dir" "$@" > "$dir.log" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && return; sleep 0.1; done
  echo "node did not start:" >&2; cat "$dir.log" >&2; return 1
}

stop_node() { kill "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true; }

# The study-level C-FIND keys of bench/dimse.sh and bench/cfind_scaling.sh, a study list as a
# workstation asks for it: every study of the patients SYN-11-* (the one-slice studies
# `pacs synth --seed 11` writes).
STUDY_LIST_KEYS=(-k QueryRetrieveLevel=STUDY -k "PatientID=SYN-11-*" -k PatientName
  -k PatientBirthDate -k PatientSex -k StudyDate -k StudyTime -k AccessionNumber
  -k StudyDescription -k ModalitiesInStudy -k ReferringPhysicianName -k StudyID
  -k StudyInstanceUID -k NumberOfStudyRelatedSeries -k NumberOfStudyRelatedInstances)

# start_orthanc NAME sqlite|postgres [dicomweb]: starts Orthanc (ORTHANC, plugins from
# ORTHANC_PLUGINS, DCMTK from BIN) on free 127.0.0.1 ports with its own storage directory (and, for
# postgres, a database in the cluster of start_postgres); sets TARGET_PID, TARGET_PORT (DIMSE),
# TARGET_AE and, with "dicomweb", ORTHANC_HTTP_PORT (the DICOMweb plugin answers under /dicom-web/).
# SCP_PORT, when set, is declared as the C-MOVE destination BENCHSCP. The system service is not used.
start_orthanc() {
  local dir=$WORK/$1 backend=$2 web=${3:-} plugins=() pg="" http modalities=""
  mkdir -p "$dir/storage"
  TARGET_PORT=$(free_port)
  if [ "$backend" = postgres ]; then
    local url db hostport
    url=$(new_database "bench_${1//-/_}")
    db=${url##*/}
    hostport=${url#*@}
    hostport=${hostport%%/*}
    plugins+=("\"$ORTHANC_PLUGINS/libOrthancPostgreSQLIndex.so\"")
    pg=", \"PostgreSQL\": { \"EnableIndex\": true, \"EnableStorage\": false, \"Host\": \"${hostport%:*}\",
      \"Port\": ${hostport##*:}, \"Database\": \"$db\", \"Username\": \"postgres\", \"Password\": \"\",
      \"Lock\": false, \"EnableSsl\": false }"
  fi
  if [ "$web" = dicomweb ]; then
    # Orthanc 1.10 has no bind address option: RemoteAccessAllowed false keeps it to localhost
    ORTHANC_HTTP_PORT=$(free_port)
    plugins+=("\"$ORTHANC_PLUGINS/libOrthancDicomWeb.so\"")
    http="\"HttpServerEnabled\": true, \"HttpPort\": $ORTHANC_HTTP_PORT, \"AuthenticationEnabled\": false,
  \"HttpCompressionEnabled\": false, \"KeepAlive\": true,
  \"DicomWeb\": { \"Enable\": true, \"Root\": \"/dicom-web/\", \"EnableWado\": false },"
  else
    # HTTP is off: the caller speaks DIMSE only
    http="\"HttpServerEnabled\": false,"
  fi
  if [ -n "${SCP_PORT:-}" ]; then
    modalities="\"DicomModalities\": { \"BENCHSCP\": [ \"BENCHSCP\", \"127.0.0.1\", $SCP_PORT ] },"
  fi
  local joined
  joined=$(IFS=,; echo "${plugins[*]}")
  cat > "$dir/orthanc.json" <<EOF
{
  "Name": "bench", "StorageDirectory": "$dir/storage", "IndexDirectory": "$dir",
  "Plugins": [ $joined ], $http "RemoteAccessAllowed": false,
  "DicomServerEnabled": true, "DicomAet": "ORTHANC", "DicomPort": $TARGET_PORT,
  "DicomAlwaysAllowEcho": true, "DicomAlwaysAllowStore": true, "DicomAlwaysAllowFind": true,
  "DicomAlwaysAllowGet": true, "DicomAlwaysAllowMove": true, "DicomCheckCalledAet": false,
  $modalities
  "SaveJobs": false, "LimitFindResults": 0, "LimitFindInstances": 0$pg
}
EOF
  "$ORTHANC" --no-jobs "$dir/orthanc.json" > "$dir.log" 2>&1 &
  TARGET_PID=$!
  PIDS+=("$TARGET_PID")
  TARGET_AE=ORTHANC
  for _ in $(seq 300); do
    if "$BIN/echoscu" -aec ORTHANC 127.0.0.1 "$TARGET_PORT" >/dev/null 2>&1; then
      [ "$web" != dicomweb ] && return
      curl -sf "http://127.0.0.1:$ORTHANC_HTTP_PORT/dicom-web/studies?limit=1" >/dev/null && return
    fi
    sleep 0.1
  done
  echo "Orthanc did not start:" >&2; cat "$dir.log" >&2; return 1
}

# bench_against_orthanc_setup: what the scripts that measure this node against Orthanc share:
# DCMTK from BIN (default /usr/bin: pynetdicom installs commands of the same names), Orthanc from
# ORTHANC and ORTHANC_PLUGINS, a WORK directory removed at exit, PACS (the release binary, built
# here unless PACS_SKIP_BUILD is set), and TCP_NODELAY=1 for DCMTK.
bench_against_orthanc_setup() {
  export TCP_NODELAY=1
  BIN=${DCMTK_BIN:-/usr/bin}
  ORTHANC=${ORTHANC:-$(command -v Orthanc || true)}
  ORTHANC_PLUGINS=${ORTHANC_PLUGINS:-/usr/share/orthanc/plugins}
  WORK=$(mktemp -d /tmp/pacs-bench.XXXXXX)
  PACS=${PACS:-target/release/pacs}
  trap bench_cleanup EXIT
  if [ -z "${PACS_SKIP_BUILD:-}" ]; then
    echo "building release binaries..."
    cargo build --release --quiet --bin pacs
  fi
}

# requestors_toml: `[[ae]]` tables for the benchmarks' requestors (BENCH, and MOVESCU and
# GETSCU, DCMTK's default calling AE titles): an AE not in the registry may only echo and store.
requestors_toml() {
  local title
  for title in BENCH MOVESCU GETSCU; do
    printf '[[ae]]\ntitle = "%s"\nallow = ["echo", "store", "find", "move", "get"]\n\n' "$title"
  done
}

# start_move_destination: a storescp (DCMTK from BIN) writing every object to WORK/recv, as a
# workstation does, on SCP_PORT; and WORK/pacs.toml registering it as the move destination
# BENCHSCP for the node (`--config`), with the requestors of `requestors_toml`.
start_move_destination() {
  SCP_PORT=$(free_port)
  mkdir -p "$WORK/recv"
  "$BIN/storescp" -aet BENCHSCP -od "$WORK/recv" "$SCP_PORT" > "$WORK/storescp.log" 2>&1 &
  PIDS+=("$!")
  cat > "$WORK/pacs.toml" <<EOF
[[ae]]
title = "BENCHSCP"
host = "127.0.0.1"
port = $SCP_PORT
allow = ["echo"]
move_destination = true

EOF
  requestors_toml >> "$WORK/pacs.toml"
}
