#!/usr/bin/env bash
# What authentication costs: a QIDO-RS study list and a WADO-RS frame request, anonymous and
# with an OpenID Connect bearer JWT (RS256, the provider's keys already cached), interleaved on
# the same node in the same run (bench/auth_latency.py).
#
#   bench/auth.sh [RUNS]      (default 2000)
#
# The identity provider is static files (discovery and JWKS) served by python3 -m http.server;
# its RSA key is made here by openssl and the token signed with it. The node runs with
# --insecure-allow-anonymous so that the same node answers both callers.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-2000}
export TCP_NODELAY=1
STORESCU=${DCMTK_BIN:-/usr/bin}/storescu
WORK=$(mktemp -d /tmp/pacs-bench.XXXXXX)
PACS=target/release/pacs
. bench/lib.sh
trap bench_cleanup EXIT

echo "building release binaries..."
cargo build --release --quiet --bin pacs
$PACS synth --studies 20 --slices 1 --modality CT --seed 11 --out "$WORK/list" >/dev/null
$PACS synth --studies 1 --slices 20 --modality CT --seed 77 --out "$WORK/series" >/dev/null

# the provider: an RSA key, discovery and JWKS as files
idp_port=$(free_port)
issuer="http://127.0.0.1:$idp_port"
mkdir -p "$WORK/idp/.well-known"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/key.pem" 2>/dev/null
token=$(python3 - "$WORK" "$issuer" <<'PY'
import base64, json, subprocess, sys, time
work, issuer = sys.argv[1], sys.argv[2]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
modulus = subprocess.run(["openssl", "rsa", "-noout", "-modulus", "-in", f"{work}/key.pem"],
                         capture_output=True, text=True, check=True).stdout
n = bytes.fromhex(modulus.strip().split("=", 1)[1])
json.dump({"issuer": issuer, "jwks_uri": f"{issuer}/jwks"},
          open(f"{work}/idp/.well-known/openid-configuration", "w"))
json.dump({"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig",
                     "n": b64(n), "e": "AQAB"}]}, open(f"{work}/idp/jwks", "w"))
now = int(time.time())
header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench"}).encode())
claims = b64(json.dumps({"iss": issuer, "aud": "pacs", "sub": "bench", "roles": ["viewer"],
                         "iat": now, "nbf": now, "exp": now + 3600}).encode())
signing_input = f"{header}.{claims}".encode()
signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{work}/key.pem"],
                           input=signing_input, capture_output=True, check=True).stdout
print(f"{header}.{claims}.{b64(signature)}")
PY
)
(cd "$WORK/idp" && exec python3 -m http.server "$idp_port" --bind 127.0.0.1 >/dev/null 2>&1) &
PIDS+=($!)
for _ in $(seq 50); do curl -sf "$issuer/jwks" >/dev/null && break; sleep 0.1; done

start_node "$WORK/node" --oidc-issuer "$issuer" --oidc-audience pacs --insecure-allow-anonymous
find "$WORK/list" "$WORK/series" -name '*.dcm' | xargs "$STORESCU" -aet BENCH -aec PACS 127.0.0.1 "$DIMSE_PORT"
read -r study series instance < <(curl -s "http://127.0.0.1:$HTTP_PORT/dicom-web/studies?PatientID=SYN-77-0" | python3 -c '
import json, sys, urllib.request
s = json.load(sys.stdin)[0]["0020000D"]["Value"][0]
port = sys.argv[1]
get = lambda p: json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/dicom-web{p}"))
se = get(f"/studies/{s}/series")[0]["0020000E"]["Value"][0]
i = get(f"/studies/{s}/series/{se}/instances?limit=1")[0]["00080018"]["Value"][0]
print(s, se, i)' "$HTTP_PORT")
echo
echo "== authentication overhead, $RUNS interleaved runs each (node $(git rev-parse --short HEAD))"
python3 bench/auth_latency.py "$HTTP_PORT" "$RUNS" "$token" \
  "qido_study_list=/dicom-web/studies?PatientID=SYN-11-*&includefield=00081030" \
  "wado_frame=/dicom-web/studies/$study/series/$series/instances/$instance/frames/1"
