#!/usr/bin/env bash
# End-to-end test of the web console (/ui): sets up a node with everything the console shows,
# then runs console.mjs (HTTP-level checks, then headless Chromium logged in as an
# administrator and as a viewer).
#
#   bash tests/e2e/console.sh        # alone: prints `console: N passed, M failed`
#   . tests/e2e/console.sh           # from run.sh: adds its counts to run.sh's passed/failed
#
# Set-up (in a temporary directory, removed at the end):
# - a node on free 127.0.0.1 ports (plain HTTP) with its own data directory, the AI queue on
#   (--worker-token, --series-quiet-secs 1; no worker runs) and de-identified export
#   (--deid-secret), a placeholder --viewer-dir (the console only links to the viewer;
#   ohif.mjs tests OHIF itself), and the test OpenID provider (oidc-provider.mjs, client
#   pacs-console) as --oidc-issuer with --oidc-audience pacs;
# - local users `admin` (role admin) and `viewer` (role viewer), made with `pacs user add`
#   before the node starts; random passwords, handed to console.mjs in the environment only;
# - AI routes (PUT /api/ai/routes): ct-classical for CT from calling AE E2E-CT, deepbrain for
#   MR BRAIN from E2E-MRI (nothing here comes from it); a CT study (8 slices) stored with DCMTK
#   storescu as E2E-CT, whose ct-classical job is queued and then cancelled through the API
#   (the console retries it);
# - one patient scanned three times (pacs synth --study-date --lung-scale) with a highdicom
#   TID 1500 report per study (tests/peers/measurement_sr.py), one Tracking UID, lung volumes
#   100, 120 and 150 mL: a trend of three points;
# - 26 one-slice MR studies (stored as E2E-LIST): the study list has a second page;
# - a DCMTK storescp (AE E2E-SCP) that the console registers, echoes and sends to;
# - an association refused: AE E2E-ELSEWHERE registered at 192.0.2.1 with check_host, called
#   from 127.0.0.1 with DCMTK echoscu;
# - a file to upload: a copy of a CT slice as a new series of the CT study (pydicom).
#
# Environment: as run.sh (PACS_BIN, E2E_ARTIFACTS, CHROMIUM, DCMTK_BIN). Artefacts:
# console-*.png, console.result.json, console-node.log, console-browser.log,
# console-storescp.log, console-oidc-provider.log, console-export.zip,
# console-export-download.zip.

console_main() {
    set -uo pipefail
    # not local: the EXIT trap runs after this function has returned (the subshell's end)
    node_pid=""
    scp_pid=""
    provider_pid=""
    work=""
    local here repo artifacts base dimse_port http_port scp_port oidc_port issuer
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    repo=$(cd "${here}/../.." && pwd)
    local pacs=${PACS_BIN:-${repo}/target/debug/pacs}
    local dcmtk=${DCMTK_BIN:-/usr/bin}
    export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
    export DCMDUMP=${dcmtk}/dcmdump
    export TCP_NODELAY=1
    artifacts=${E2E_ARTIFACTS:-${repo}/target/e2e-artifacts}
    mkdir -p "${artifacts}"
    artifacts=$(cd "${artifacts}" && pwd)
    export E2E_ARTIFACTS=${artifacts}
    rm -f "${artifacts}"/console-*.png "${artifacts}/console.result.json" "${artifacts}/console-node.log" \
        "${artifacts}/console-browser.log" "${artifacts}/console-storescp.log" "${artifacts}/console-export.zip" \
        "${artifacts}/console-export-download.zip" \
        "${artifacts}/console-oidc-provider.log"

    say() { echo "e2e console: $*"; }
    echo "==> console"
    local t0
    t0=$(date +%s)
    stop_pid() {
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
    cleanup() {
        stop_pid "${node_pid}"
        stop_pid "${scp_pid}"
        stop_pid "${provider_pid}"
        [ -n "${work}" ] && rm -rf "${work}"
        return 0
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    # setup_failed WHAT: one failed check in console.result.json (read like any suite's)
    setup_failed() {
        echo "e2e console: FAILED: $*" >&2
        if [ -f "${artifacts}/console-node.log" ]; then
            echo "--- last lines of ${artifacts}/console-node.log ---" >&2
            tail -n 30 "${artifacts}/console-node.log" >&2
        fi
        node -e 'const [file, what] = process.argv.slice(1);
            require("fs").writeFileSync(file, JSON.stringify({ suite: "console", passed: 0, failed: 1,
              failures: [{ name: "set-up", message: what }] }, null, 2) + "\n");' \
            "${artifacts}/console.result.json" "$*"
        echo "console: 0 passed, 1 failed"
        exit 1
    }
    free_port() {
        node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
    }
    wait_ready() {
        local pid=$1 url=$2
        for _ in $(seq 1 150); do
            kill -0 "${pid}" 2>/dev/null || return 1
            curl -fsS -o /dev/null "${url}" 2>/dev/null && return 0
            sleep 0.2
        done
        return 1
    }

    [ -x "${pacs}" ] || setup_failed "no pacs binary at ${pacs} (build it, or set PACS_BIN)"
    for tool in storescu storescp echoscu dcmdump; do
        [ -x "${dcmtk}/${tool}" ] || setup_failed "DCMTK's ${tool} not found in ${dcmtk}"
    done
    [ -x "${CHROMIUM}" ] || setup_failed "no browser at ${CHROMIUM}"
    [ -d "${here}/node_modules/playwright-core" ] \
        || npm ci --prefix "${here}" --no-audit --no-fund --loglevel=error \
        || setup_failed "npm ci in ${here}"
    python3 -c 'import highdicom, pydicom' 2>/dev/null \
        || setup_failed "python3 with highdicom and pydicom (pip install -r tests/requirements.txt)"

    work=$(mktemp -d "${TMPDIR:-/tmp}/pacs-e2e-console.XXXXXX")
    mkdir -p "${work}/data" "${work}/viewer" "${work}/scp"
    # the console links to the viewer; OHIF itself is ohif.mjs's subject
    printf '<!doctype html><title>viewer</title><p>viewer placeholder</p>\n' >"${work}/viewer/index.html"

    # --- data ------------------------------------------------------------------------------
    "${pacs}" synth --studies 1 --slices 8 --modality CT --seed 5 --out "${work}/ct" >/dev/null \
        || setup_failed "pacs synth (CT study)"
    local ct_dir=${work}/ct/0/0
    # the file to upload: a slice of the CT study as a new series of the same study
    python3 - "${ct_dir}" "${work}/upload.dcm" <<'EOF' || setup_failed "making the file to upload"
import os, sys
import pydicom
from pydicom.uid import generate_uid
src, out = sys.argv[1], sys.argv[2]
ds = pydicom.dcmread(os.path.join(src, sorted(f for f in os.listdir(src) if f.endswith(".dcm"))[0]))
ds.SeriesInstanceUID = generate_uid()
ds.SOPInstanceUID = generate_uid()
ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
ds.SeriesNumber = 99
ds.SeriesDescription = "E2E console upload"
ds.save_as(out, enforce_file_format=True)
EOF
    # 26 more studies (one MR slice each): the study list has two pages of 25
    "${pacs}" synth --studies 26 --slices 1 --modality MR --seed 9 --out "${work}/more" >/dev/null \
        || setup_failed "pacs synth (26 MR studies)"
    local tracking_uid=2.25.271828182845904523536028747135266249
    local trend_dirs="" n=0 date scale value
    for visit in 20230105:0.9:100 20230706:1.0:120 20240110:1.1:150; do
        IFS=: read -r date scale value <<<"${visit}"
        "${pacs}" synth --studies 1 --slices 4 --modality CT --seed 77 --study-date "${date}" \
            --lung-scale "${scale}" --out "${work}/trend${n}" >/dev/null \
            || setup_failed "pacs synth (trend study ${date})"
        python3 "${repo}/tests/peers/measurement_sr.py" "${work}/trend${n}/sr.dcm" "${work}/trend${n}/0/0" \
            "{\"groups\": [{\"tracking_id\": \"Lungs\", \"tracking_uid\": \"${tracking_uid}\",
              \"finding_site\": [\"39607008\", \"SCT\", \"Lung\"],
              \"measurements\": [{\"concept\": [\"118565006\", \"SCT\", \"Volume\"], \"value\": ${value},
                                  \"unit\": [\"mL\", \"UCUM\", \"milliliter\"]}]}]}" >/dev/null \
            || setup_failed "measurement_sr.py (trend study ${date})"
        trend_dirs+="${trend_dirs:+:}${work}/trend${n}/0/0"
        n=$((n + 1))
    done

    # --- users (before the node starts: the index is the data directory's) -----------------
    local admin_pw viewer_pw worker_token deid_secret
    admin_pw=$(openssl rand -hex 16)
    viewer_pw=$(openssl rand -hex 16)
    worker_token=$(openssl rand -hex 24)
    deid_secret=$(openssl rand -hex 24)
    printf '%s\n' "${admin_pw}" | "${pacs}" user add admin --roles admin --password-stdin \
        --data-dir "${work}/data" >/dev/null || setup_failed "pacs user add admin"
    printf '%s\n' "${viewer_pw}" | "${pacs}" user add viewer --roles viewer --password-stdin \
        --data-dir "${work}/data" >/dev/null || setup_failed "pacs user add viewer"

    # --- the node --------------------------------------------------------------------------
    # the test OpenID provider first: it registers the console's redirect URI under the
    # node's address, and the node reads its discovery document at start
    for attempt in 1 2 3; do
        dimse_port=$(free_port)
        http_port=$(free_port)
        oidc_port=$(free_port)
        base=http://127.0.0.1:${http_port}
        issuer=http://127.0.0.1:${oidc_port}
        node "${here}/oidc-provider.mjs" "${oidc_port}" "${base}" >"${artifacts}/console-oidc-provider.log" 2>&1 &
        provider_pid=$!
        if ! wait_ready "${provider_pid}" "${issuer}/.well-known/openid-configuration"; then
            say "the OpenID provider did not start (attempt ${attempt}):"
            tail -n 5 "${artifacts}/console-oidc-provider.log"
            stop_pid "${provider_pid}"
            provider_pid=""
            continue
        fi
        PACS_WORKER_TOKEN=${worker_token} PACS_DEID_SECRET=${deid_secret} \
            "${pacs}" serve --bind 127.0.0.1 --aet PACS --dimse-port "${dimse_port}" \
            --http-port "${http_port}" --data-dir "${work}/data" --viewer-dir "${work}/viewer" \
            --series-quiet-secs 1 --ai-models-dir "${repo}/ai-worker/models" \
            --oidc-issuer "${issuer}" --oidc-audience pacs \
            >"${artifacts}/console-node.log" 2>&1 &
        node_pid=$!
        wait_ready "${node_pid}" "${base}/healthz" && break
        stop_pid "${node_pid}"
        stop_pid "${provider_pid}"
        node_pid=""
        provider_pid=""
        say "the node did not start (attempt ${attempt}):"
        tail -n 5 "${artifacts}/console-node.log"
    done
    [ -n "${node_pid}" ] || setup_failed "starting the node"
    say "node up: DIMSE 127.0.0.1:${dimse_port}, HTTP ${base} (pid ${node_pid}); OpenID provider ${issuer} (pid ${provider_pid})"
    local auth=(-u "admin:${admin_pw}")

    curl -fsS "${auth[@]}" -X PUT -H 'Content-Type: application/json' "${base}/api/ai/routes" \
        -d '[{"model": "ct-classical", "modality": ["CT"], "calling_ae": ["E2E-CT"]},
             {"model": "deepbrain", "modality": ["MR"], "body_part": ["BRAIN"], "calling_ae": ["E2E-MRI"]}]' >/dev/null \
        || setup_failed "PUT /api/ai/routes"

    # an association refused (wrong host for its AE title): the AE page lists it
    curl -fsS "${auth[@]}" -X POST -H 'Content-Type: application/json' "${base}/api/aes" \
        -d '{"title": "E2E-ELSEWHERE", "host": "192.0.2.1", "port": 104, "check_host": true}' >/dev/null \
        || setup_failed "POST /api/aes E2E-ELSEWHERE"
    if "${dcmtk}/echoscu" -aet E2E-ELSEWHERE -aec PACS 127.0.0.1 "${dimse_port}" 2>/dev/null; then
        setup_failed "echoscu as E2E-ELSEWHERE from 127.0.0.1 was accepted (its host is 192.0.2.1)"
    fi

    for ((i = 0; i < n; i++)); do
        "${dcmtk}/storescu" -R -aec PACS -aet E2E-MEAS 127.0.0.1 "${dimse_port}" \
            "${work}/trend${i}"/0/0/*.dcm "${work}/trend${i}/sr.dcm" \
            || setup_failed "storescu of trend study ${i}"
    done
    "${dcmtk}/storescu" -aec PACS -aet E2E-LIST 127.0.0.1 "${dimse_port}" "${work}"/more/*/0/*.dcm \
        || setup_failed "storescu of the 26 MR studies"
    "${dcmtk}/storescu" -aec PACS -aet E2E-CT 127.0.0.1 "${dimse_port}" "${ct_dir}"/*.dcm \
        || setup_failed "storescu of the CT study"

    # the CT series is complete after 1 s without instances: its job is queued, then cancelled
    local job_id=""
    for _ in $(seq 1 100); do
        job_id=$(curl -fsS "${auth[@]}" "${base}/api/ai/jobs?state=queued" \
            | node -e 'let s = ""; process.stdin.on("data", d => (s += d)).on("end", () => {
                const jobs = JSON.parse(s).filter(j => j.model === "ct-classical");
                if (jobs.length) console.log(jobs[0].id); });' 2>/dev/null)
        [ -n "${job_id}" ] && break
        sleep 0.3
    done
    [ -n "${job_id}" ] || setup_failed "no ct-classical job queued for the CT study within 30 s"
    curl -fsS "${auth[@]}" -X POST "${base}/api/ai/jobs/${job_id}/cancel" >/dev/null \
        || setup_failed "cancelling AI job ${job_id}"
    say "AI job ${job_id} queued and cancelled"

    # --- the AE the console registers --------------------------------------------------------
    for attempt in 1 2 3; do
        scp_port=$(free_port)
        "${dcmtk}/storescp" -v -aet E2E-SCP -od "${work}/scp" "${scp_port}" \
            >"${artifacts}/console-storescp.log" 2>&1 &
        scp_pid=$!
        for _ in $(seq 1 50); do
            (exec 3<>"/dev/tcp/127.0.0.1/${scp_port}") 2>/dev/null && break 2
            kill -0 "${scp_pid}" 2>/dev/null || break
            sleep 0.1
        done
        stop_pid "${scp_pid}"
        scp_pid=""
    done
    [ -n "${scp_pid}" ] || setup_failed "starting storescp"
    say "storescp E2E-SCP on 127.0.0.1:${scp_port} (pid ${scp_pid})"

    E2E_CONSOLE_BASE=${base} \
        E2E_CONSOLE_OIDC_ISSUER=${issuer} \
        E2E_CONSOLE_ADMIN_PASSWORD=${admin_pw} \
        E2E_CONSOLE_VIEWER_PASSWORD=${viewer_pw} \
        E2E_CONSOLE_CT_DIR=${ct_dir} \
        E2E_CONSOLE_UPLOAD_FILE=${work}/upload.dcm \
        E2E_CONSOLE_TREND_DIRS=${trend_dirs} \
        E2E_CONSOLE_TREND_VALUES=100:120:150 \
        E2E_CONSOLE_TRACKING_UID=${tracking_uid} \
        E2E_CONSOLE_JOB_ID=${job_id} \
        E2E_CONSOLE_SCP_PORT=${scp_port} \
        E2E_CONSOLE_SCP_DIR=${work}/scp \
        E2E_CONSOLE_NODE_LOG=${artifacts}/console-node.log \
        node "${here}/console.mjs"
    local rc=$?
    say "$(($(date +%s) - t0))s"
    if [ "${rc}" -ne 0 ]; then
        echo "--- last lines of ${artifacts}/console-node.log ---"
        tail -n 30 "${artifacts}/console-node.log"
    fi
    return "${rc}"
}

# run in a subshell: its trap and variables stay its own
(console_main)
console_rc=$?
console_counts=$(node -e 'try { const r = require(process.argv[1]); console.log(r.passed, r.failed); }
    catch { console.log("0 1"); }' "${E2E_ARTIFACTS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/e2e-artifacts}/console.result.json")
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # sourced by run.sh: counted like run_suite counts a script
    passed=$((passed + ${console_counts% *}))
    failed=$((failed + ${console_counts#* }))
    if [ "${console_rc}" -ne 0 ] && [ "${console_counts#* }" = 0 ]; then
        failed=$((failed + 1))
    fi
else
    exit "${console_rc}"
fi
