#!/usr/bin/env bash
# End-to-end tests with JavaScript DICOMweb clients: the npm package dicomweb-client, and the
# OHIF viewer (prebuilt @ohif/app from npm) in headless Chromium, anonymous and logged in
# through OpenID Connect.
#
#   tests/e2e/run.sh
#
# Starts a pacs node on free 127.0.0.1 ports with a temporary data directory, stores a
# synthetic 40-slice CT series with DCMTK's storescu, runs `npm ci` here, then the scripts
# dicomweb-client and ohif against it. Then starts the test OpenID provider
# (oidc-provider.mjs) and a second node that requires its tokens (--oidc-issuer,
# --oidc-audience pacs; own data directory and ports; viewer with the shipped OIDC
# configuration), stores the same series into it and runs ohif-login. Stops everything and
# prints `E2E: N passed, M failed`. Builds nothing.
#
# Environment:
#   PACS_BIN       the node binary (default <repo>/target/debug/pacs)
#   E2E_ARTIFACTS  screenshots, logs and results (default <repo>/target/e2e-artifacts)
#   CHROMIUM       browser executable (default /usr/bin/chromium)
#   DCMTK_BIN      directory of DCMTK's storescu and dcmdump (default /usr/bin)
#   E2E_SKIP_NPM_CI=1  reuse the installed node_modules (local iterations only)
#
# Needs: node >= 20 and npm, DCMTK, Chromium (apt packages nodejs, dcmtk, chromium).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "${here}/../.." && pwd)
cd "${repo}"

PACS_BIN=${PACS_BIN:-${repo}/target/debug/pacs}
DCMTK_BIN=${DCMTK_BIN:-/usr/bin}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export DCMDUMP=${DCMTK_BIN}/dcmdump
export TCP_NODELAY=1
artifacts=${E2E_ARTIFACTS:-target/e2e-artifacts}
mkdir -p "${artifacts}"
artifacts=$(cd "${artifacts}" && pwd)
export E2E_ARTIFACTS=${artifacts}

t_start=$(date +%s)
passed=0
failed=0
node_pid=""
oidc_node_pid=""
provider_pid=""
work=""

say() { echo "e2e: $*"; }

# stop PID: SIGTERM, up to 10 s to exit, then SIGKILL.
stop() {
    local pid=$1
    [ -n "${pid}" ] || return 0
    if kill -0 "${pid}" 2>/dev/null; then
        kill -TERM "${pid}" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "${pid}" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "${pid}" 2>/dev/null
    fi
    wait "${pid}" 2>/dev/null
    return 0
}

finish() {
    local rc=$?
    stop "${node_pid}"
    stop "${oidc_node_pid}"
    stop "${provider_pid}"
    [ -n "${work}" ] && rm -rf "${work}"
    exit "${rc}"
}
trap finish EXIT
trap 'exit 130' INT TERM

# setup_failure WHAT: a step before the scripts failed; counts as one failed test.
setup_failure() {
    echo "e2e: FAILED: $*" >&2
    failed=$((failed + 1))
    if [ -f "${artifacts}/node.log" ]; then
        echo "--- last lines of the node's log (${artifacts}/node.log) ---" >&2
        tail -n 40 "${artifacts}/node.log" >&2
    fi
    echo "E2E: ${passed} passed, ${failed} failed"
    exit 1
}

# timed NAME COMMAND...: runs COMMAND and says how long it took.
timed() {
    local name=$1 t0 rc
    shift
    t0=$(date +%s)
    "$@"
    rc=$?
    say "${name}: $(($(date +%s) - t0))s"
    return "${rc}"
}

free_port() {
    node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# wait_ready PID URL: until URL answers 2xx (0), or PID exits or 30 s pass (1).
wait_ready() {
    local pid=$1 url=$2
    for _ in $(seq 1 150); do
        kill -0 "${pid}" 2>/dev/null || return 1
        curl -fsS -o /dev/null "${url}" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}

# --- prerequisites -----------------------------------------------------------------------
[ -x "${PACS_BIN}" ] || setup_failure "no pacs binary at ${PACS_BIN} (build it, or set PACS_BIN)"
for tool in node npm curl; do
    command -v "${tool}" >/dev/null 2>&1 || setup_failure "${tool} not found"
done
[ -x "${DCMTK_BIN}/storescu" ] && [ -x "${DCMTK_BIN}/dcmdump" ] \
    || setup_failure "DCMTK's storescu/dcmdump not found in ${DCMTK_BIN}"
[ -x "${CHROMIUM}" ] || setup_failure "no browser at ${CHROMIUM} (apt-get install chromium)"
say "node $(node --version), npm $(npm --version), $("${CHROMIUM}" --version 2>/dev/null | head -n 1)"

(cd "${artifacts}" && rm -f dicomweb-client.result.json ohif.result.json study-list.png viewer.png \
    viewer-scrolled.png ohif-console.log node.log ohif-login.result.json login-page.png \
    login-study-list.png login-viewer.png login-refused.png ohif-login-console.log node-oidc.log \
    oidc-provider.log)
work=$(mktemp -d "${TMPDIR:-/tmp}/pacs-e2e.XXXXXX")

# --- JavaScript packages (pinned in package-lock.json) -----------------------------------
if [ "${E2E_SKIP_NPM_CI:-}" = "1" ] && [ -d "${here}/node_modules/@ohif/app/dist" ]; then
    say "npm ci skipped (E2E_SKIP_NPM_CI=1)"
else
    timed "npm ci" npm ci --prefix "${here}" --no-audit --no-fund --loglevel=error \
        || setup_failure "npm ci in ${here}"
fi

# --- data --------------------------------------------------------------------------------
"${PACS_BIN}" synth --studies 1 --slices 40 --modality CT --seed 5 --out "${work}/ct" >/dev/null \
    || setup_failure "pacs synth (CT series)"
"${PACS_BIN}" synth --studies 1 --slices 1 --modality MR --seed 77 --out "${work}/stow" >/dev/null \
    || setup_failure "pacs synth (STOW-RS file)"
series_dir=${work}/ct/0/0
stow_file=$(ls "${work}"/stow/0/0/*.dcm | head -n 1)

# --- TLS: a CA and the node's certificate (made here, never kept) ---------------------------
mkdir -p "${work}/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=e2e CA" \
    -keyout "${work}/tls/ca.key" -out "${work}/tls/ca.crt" >/dev/null 2>&1 \
    || setup_failure "openssl: the test CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "${work}/tls/node.key" -out "${work}/tls/node.csr" >/dev/null 2>&1 \
    && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"${work}/tls/ext" \
    && openssl x509 -req -in "${work}/tls/node.csr" -CA "${work}/tls/ca.crt" -CAkey "${work}/tls/ca.key" \
        -CAcreateserial -days 2 -extfile "${work}/tls/ext" -out "${work}/tls/node.crt" >/dev/null 2>&1 \
    || setup_failure "openssl: the node's certificate"
# Chromium trusts the node's key by its SPKI hash (nothing else is accepted unchecked)
E2E_SPKI=$(openssl x509 -in "${work}/tls/node.crt" -pubkey -noout | openssl pkey -pubin -outform der \
    | openssl dgst -sha256 -binary | base64)
export E2E_SPKI

# --- the node ----------------------------------------------------------------------------
# Ports are picked free, then bound by the node: another process may take one in between,
# so a node that exits at start is started again on new ports. It serves HTTPS (the viewer is
# opened over HTTPS) and plain HTTP (the npm dicomweb-client) on the same port.
for attempt in 1 2 3; do
    dimse_port=$(free_port)
    http_port=$(free_port)
    base=http://127.0.0.1:${http_port}
    export PACS_DICOMWEB=${base}/dicom-web
    export PACS_DICOMWEB_HTTPS=https://127.0.0.1:${http_port}/dicom-web
    node "${here}/ohif.mjs" prepare "${work}/viewer" "${PACS_DICOMWEB_HTTPS}" \
        || setup_failure "preparing the OHIF viewer directory"
    rm -rf "${work}/data"
    mkdir -p "${work}/data"
    "${PACS_BIN}" serve --bind 127.0.0.1 --aet PACS --dimse-port "${dimse_port}" \
        --http-port "${http_port}" --data-dir "${work}/data" --viewer-dir "${work}/viewer" \
        --tls-cert "${work}/tls/node.crt" --tls-key "${work}/tls/node.key" \
        --dimse-tls-port "$(free_port)" \
        >"${artifacts}/node.log" 2>&1 &
    node_pid=$!
    wait_ready "${node_pid}" "${base}/healthz" && break
    stop "${node_pid}"
    node_pid=""
    say "the node did not start (attempt ${attempt}):"
    tail -n 5 "${artifacts}/node.log"
done
[ -n "${node_pid}" ] || setup_failure "starting the node"
say "node up: DIMSE 127.0.0.1:${dimse_port}, HTTP ${base} (pid ${node_pid})"

timed "storescu of ${series_dir}" "${DCMTK_BIN}/storescu" -aec PACS \
    127.0.0.1 "${dimse_port}" "${series_dir}"/*.dcm \
    || setup_failure "storescu of the CT series to the node"

# --- the scripts -------------------------------------------------------------------------
export E2E_SERIES_DIR=${series_dir}
export E2E_STOW_FILE=${stow_file}

# run_suite NAME SCRIPT: runs one script; adds its counts from NAME.result.json (a script
# that died without writing it counts as one failure).
run_suite() {
    local name=$1 script=$2 rc result counts
    echo "==> ${name}"
    timed "${name}" node "${here}/${script}"
    rc=$?
    result=${artifacts}/${name}.result.json
    if [ -f "${result}" ]; then
        counts=$(node -e 'const r = require(process.argv[1]); console.log(r.passed, r.failed)' "${result}")
        passed=$((passed + ${counts% *}))
        failed=$((failed + ${counts#* }))
        if [ "${rc}" -ne 0 ] && [ "${counts#* }" = 0 ]; then
            failed=$((failed + 1))
        fi
    else
        say "${script} exited ${rc} without results"
        failed=$((failed + 1))
    fi
}

run_suite dicomweb-client npm-dicomweb-client.mjs
PACS_DICOMWEB=${PACS_DICOMWEB_HTTPS} run_suite ohif ohif.mjs
failed_anonymous=${failed}

# --- the OpenID provider, and a node that requires its tokens ------------------------------
# The provider registers the viewer's redirect URIs under the node's address and the node
# reads the provider's discovery document at start: both get new ports on a retry.
start_oidc_node() {
    local attempt
    for attempt in 1 2 3; do
        oidc_port=$(free_port)
        oidc_dimse_port=$(free_port)
        oidc_http_port=$(free_port)
        issuer=http://127.0.0.1:${oidc_port}
        oidc_base=http://127.0.0.1:${oidc_http_port}
        node "${here}/oidc-provider.mjs" "${oidc_port}" "${oidc_base}" >"${artifacts}/oidc-provider.log" 2>&1 &
        provider_pid=$!
        if ! wait_ready "${provider_pid}" "${issuer}/.well-known/openid-configuration"; then
            say "the OpenID provider did not start (attempt ${attempt}):"
            tail -n 5 "${artifacts}/oidc-provider.log"
            stop "${provider_pid}"
            provider_pid=""
            continue
        fi
        node "${here}/ohif.mjs" prepare "${work}/viewer-oidc" "${oidc_base}/dicom-web" --oidc "${issuer}" \
            || return 1
        rm -rf "${work}/data-oidc"
        mkdir -p "${work}/data-oidc"
        RUST_LOG=info,pacs_dicomweb=debug "${PACS_BIN}" serve --bind 127.0.0.1 --aet PACS \
            --dimse-port "${oidc_dimse_port}" --http-port "${oidc_http_port}" \
            --data-dir "${work}/data-oidc" --viewer-dir "${work}/viewer-oidc" \
            --oidc-issuer "${issuer}" --oidc-audience pacs \
            >"${artifacts}/node-oidc.log" 2>&1 &
        oidc_node_pid=$!
        wait_ready "${oidc_node_pid}" "${oidc_base}/healthz" && return 0
        say "the node with --oidc-issuer did not start (attempt ${attempt}):"
        tail -n 5 "${artifacts}/node-oidc.log"
        stop "${oidc_node_pid}"
        stop "${provider_pid}"
        oidc_node_pid=""
        provider_pid=""
    done
    return 1
}

# oidc_seg_and_sr: a DICOM SEG (a box on 5 slices, tests/peers/box_seg.py) and a TID 1500 SR
# (the box's outline on its middle slice as a planar ROI with its area, tests/peers/box_sr.py)
# of the CT series, both written by highdicom as another vendor's would be, stored to the OIDC
# node: alice's viewer must retrieve them with her token too. Their Series Instance UIDs are
# fixed here. (An SR of measurement_sr.py, a measurement group without an image region, makes
# OHIF 3.13's SR viewport fail: "Cannot read properties of undefined (reading
# 'ReferencedSOPSequence')".)
oidc_seg_series=2.25.35687680107849302503633602461463980835
oidc_sr_series=2.25.311413254145901283508353895686343990394
oidc_seg_and_sr() {
    rm -f "${artifacts}/login-seg.png" "${artifacts}/login-sr.png"
    python3 "${repo}/tests/peers/box_seg.py" "${work}/oidc-seg.dcm" "${series_dir}" \
        --series-uid "${oidc_seg_series}" >/dev/null || return 1
    python3 "${repo}/tests/peers/box_sr.py" "${work}/oidc-sr.dcm" "${series_dir}" \
        --series-uid "${oidc_sr_series}" >/dev/null || return 1
    # -R: propose only the files' SOP classes (storescu's default list has no Segmentation)
    timed "storescu of the SEG and the SR to the OIDC node" "${DCMTK_BIN}/storescu" -aec PACS -R \
        127.0.0.1 "${oidc_dimse_port}" "${work}/oidc-seg.dcm" "${work}/oidc-sr.dcm"
}

say "starting the OpenID provider and the node with --oidc-issuer"
if ! start_oidc_node; then
    echo "e2e: FAILED: starting the OpenID provider and the node with --oidc-issuer" >&2
    failed=$((failed + 1))
elif ! timed "storescu of ${series_dir} to the OIDC node" "${DCMTK_BIN}/storescu" -aec PACS \
    127.0.0.1 "${oidc_dimse_port}" "${series_dir}"/*.dcm; then
    echo "e2e: FAILED: storescu of the CT series to the node with --oidc-issuer" >&2
    failed=$((failed + 1))
elif ! oidc_seg_and_sr; then
    echo "e2e: FAILED: a SEG and an SR of the CT series (highdicom) stored to the node with --oidc-issuer" >&2
    failed=$((failed + 1))
else
    say "OpenID provider ${issuer} (pid ${provider_pid}); node with --oidc-issuer: DIMSE" \
        "127.0.0.1:${oidc_dimse_port}, HTTP ${oidc_base} (pid ${oidc_node_pid})"
    export PACS_OIDC_DICOMWEB=${oidc_base}/dicom-web
    export OIDC_ISSUER=${issuer}
    export E2E_OIDC_NODE_LOG=${artifacts}/node-oidc.log
    export E2E_OIDC_SEG_SERIES=${oidc_seg_series}
    export E2E_OIDC_SR_SERIES=${oidc_sr_series}
    run_suite ohif-login ohif-login.mjs
fi

# >>> AI suite (ohif-ai.mjs) ------------------------------------------------------------------
# A third node with the AI worker pool (a worker token, the shipped models in ai-worker/models)
# and one real pacs-ai-worker process (target/debug/pacs-ai-worker beside PACS_BIN, built by
# `cargo test --workspace`; it loads libonnxruntime from ORT_DYLIB_PATH or the onnxruntime
# wheel of tests/requirements.txt). The synthetic CT above, a 250 x 250 CT and the deepbrain
# reference MR (ai-worker/models/deepbrain/reference/dicom) are stored with storescu; once the
# three jobs have succeeded, ohif-ai.mjs opens each SEG, SR and report in a viewer prepared
# with --hydrate.
# Own data directory, ports and viewer: the SEG/SR/DOC series must not change what ohif.mjs
# sees. Environment: PACS_AI_WORKER_BIN (default: pacs-ai-worker beside PACS_BIN),
# E2E_AI_JOB_TIMEOUT (seconds, default 600).
ai_node_pid=""
ai_worker_pid=""
ai_stop() {
    stop "${ai_worker_pid}"
    stop "${ai_node_pid}"
    ai_worker_pid=""
    ai_node_pid=""
}
# finish() does not know these two: stop them first, keeping the exit status for finish
trap 'ai_rc=$?; ai_stop; (exit "${ai_rc}"); finish' EXIT
(cd "${artifacts}" && rm -f ohif-ai.result.json ohif-ai-console.log node-ai.log ai-worker.log ai-*.png \
    ai-*-expected.json)

# ai_jobs: the node's job list as lines "STATE MODEL STUDY SERIES"
ai_jobs() {
    curl -fsS "${ai_base}/api/ai/jobs" | node -e '
        let t = ""; process.stdin.on("data", d => (t += d)).on("end", () => {
            for (const j of JSON.parse(t)) {
                console.log(j.state, j.model, j.study_instance_uid, j.series_instance_uid);
            }
        });'
}

# ai_suite: the node, the worker, the three series and their jobs, then ohif-ai.mjs
ai_suite() {
    local worker_bin=${PACS_AI_WORKER_BIN:-$(dirname "${PACS_BIN}")/pacs-ai-worker}
    local token attempt jobs cases deadline t0 odd_series
    if [ ! -x "${worker_bin}" ]; then
        echo "e2e: FAILED: no pacs-ai-worker at ${worker_bin} (cargo test --workspace builds it)" >&2
        return 1
    fi
    # the worker token reaches both processes as PACS_WORKER_TOKEN (never on a command line)
    token=$(openssl rand -hex 16)
    for attempt in 1 2 3; do
        ai_dimse_port=$(free_port)
        ai_http_port=$(free_port)
        ai_base=http://127.0.0.1:${ai_http_port}
        node "${here}/ohif.mjs" prepare "${work}/viewer-ai" "${ai_base}/dicom-web" --hydrate || return 1
        rm -rf "${work}/data-ai"
        mkdir -p "${work}/data-ai"
        PACS_WORKER_TOKEN=${token} "${PACS_BIN}" serve --bind 127.0.0.1 --aet PACS \
            --dimse-port "${ai_dimse_port}" --http-port "${ai_http_port}" \
            --data-dir "${work}/data-ai" --viewer-dir "${work}/viewer-ai" \
            --series-quiet-secs 3 --ai-models-dir "${repo}/ai-worker/models" \
            >"${artifacts}/node-ai.log" 2>&1 &
        ai_node_pid=$!
        wait_ready "${ai_node_pid}" "${ai_base}/healthz" && break
        say "the node with the AI pool did not start (attempt ${attempt}):"
        tail -n 5 "${artifacts}/node-ai.log"
        stop "${ai_node_pid}"
        ai_node_pid=""
    done
    if [ -z "${ai_node_pid}" ]; then
        echo "e2e: FAILED: starting the node with the AI pool" >&2
        return 1
    fi
    PACS_WORKER_TOKEN=${token} RUST_LOG=info "${worker_bin}" --node "${ai_base}" \
        --models "${repo}/ai-worker/models" --worker-id e2e --poll-ms 500 \
        >"${artifacts}/ai-worker.log" 2>&1 &
    ai_worker_pid=$!
    say "node with the AI pool: DIMSE 127.0.0.1:${ai_dimse_port}, HTTP ${ai_base} (pid ${ai_node_pid}); worker pid ${ai_worker_pid}"
    # a CT of 250 x 250 (frames of 62,500 pixels, not whole bytes at 1 bit) besides the 512 x
    # 512 one: the worker writes BINARY, FRACTIONAL and LABELMAP Segmentations for the three
    "${PACS_BIN}" synth --studies 1 --slices 30 --size 250 --modality CT --seed 6 --out "${work}/ct250" \
        >/dev/null || return 1
    odd_series=$("${DCMDUMP}" +P 0020,000e "$(ls "${work}"/ct250/0/0/*.dcm | head -n 1)" | sed 's/.*\[\(.*\)\].*/\1/')
    timed "storescu of the CTs and the deepbrain reference MR to the AI node" "${DCMTK_BIN}/storescu" \
        -aec PACS 127.0.0.1 "${ai_dimse_port}" "${series_dir}"/*.dcm "${work}"/ct250/0/0/*.dcm \
        "${repo}"/ai-worker/models/deepbrain/reference/dicom/*.dcm || return 1
    t0=$(date +%s)
    deadline=$((t0 + ${E2E_AI_JOB_TIMEOUT:-600}))
    while :; do
        jobs=$(ai_jobs) || jobs=""
        if [ "$(grep -c '^succeeded ' <<<"${jobs}")" -eq 3 ] && [ "$(grep -c . <<<"${jobs}")" -eq 3 ]; then
            break
        fi
        if grep -qE '^(failed|dead|cancelled) ' <<<"${jobs}" || [ "$(date +%s)" -gt "${deadline}" ] \
            || ! kill -0 "${ai_worker_pid}" 2>/dev/null; then
            echo "e2e: FAILED: the three AI jobs did not all succeed: ${jobs:-(none)}" >&2
            tail -n 30 "${artifacts}/ai-worker.log" >&2
            return 1
        fi
        sleep 1
    done
    say "AI jobs succeeded after $(($(date +%s) - t0))s:"
    echo "${jobs}" | sed 's/^/    /'
    cases=$(awk -v odd="${odd_series}" '
        $2 == "ct-classical" && $4 == odd { printf "ct250=%s/%s,", $3, $4; next }
        $2 == "ct-classical" { printf "ct512=%s/%s,", $3, $4 }
        $2 == "deepbrain" { printf "mr=%s/%s,", $3, $4 }' <<<"${jobs}")
    E2E_AI_CASES=${cases%,} PACS_DICOMWEB=${ai_base}/dicom-web run_suite ohif-ai ohif-ai.mjs
    return 0
}

say "starting the node with the AI pool and a pacs-ai-worker"
if ! ai_suite; then
    failed=$((failed + 1))
    echo "--- last lines of ${artifacts}/node-ai.log ---"
    tail -n 30 "${artifacts}/node-ai.log"
fi
ai_stop
# <<< AI suite ----------------------------------------------------------------------------------

if [ "${failed_anonymous}" -ne 0 ]; then
    echo "--- last lines of the node's log (${artifacts}/node.log) ---"
    tail -n 40 "${artifacts}/node.log"
fi
if [ "${failed}" -ne "${failed_anonymous}" ]; then
    for log in node-oidc.log oidc-provider.log; do
        if [ -f "${artifacts}/${log}" ]; then
            echo "--- last lines of ${artifacts}/${log} ---"
            tail -n 30 "${artifacts}/${log}"
        fi
    done
fi
. "${here}/console.sh" # the web console: its own node, storescp and data; counted here
say "artefacts in ${artifacts}; total $(($(date +%s) - t_start))s"
echo "E2E: ${passed} passed, ${failed} failed"
[ "${failed}" -eq 0 ]
