#!/usr/bin/env bash
# Runs the FAPI guard in real Envoy in front of a sample API, with a local token issuer, and
# prints ready-to-paste requests (one allowed, some denied). The guard is ONE plugin, the one
# module fapi_guard.wasm as the chain plugin (envoy/render.py). The policy picks the sample API
# and the chain's steps: a `fhir` section -> the sample FHIR API behind token -> DPoP -> FHIR
# scope (root id fapi_guard); none (a plain REST API) -> a JSON REST echo API under the policy's
# routes (scripts/rest_echo_server.py) behind token -> DPoP (fapi_guard:token,dpop), with
# requests built from the routes' scopes and claims (scripts/demo_requests.py).
#
#   scripts/demo.sh                                  # demo policy, demo keys
#   scripts/demo.sh --policy my-policy.json --jwks my-jwks.json   # your policy and keys
#   scripts/demo.sh --gateway                        # two proxies: edge gateway -> sidecar
#
# The policy runs unchanged: the sample FHIR API serves its `fhir.base_path`, and every
# `jwks_uri` (any scheme, any path) is answered from 127.0.0.1:8082 over plain HTTP with the
# JWKS file (--jwks, or the demo JWKS), so any client can test with its own keys. With your
# own keys the demo cannot sign tokens: it prints how to mint them, or, with
# --token FILE [--dpop-key JWK], prints requests that use your token (and proofs by your key).
# Ports: Envoy 10000 (admin 9901), sample API 8080, JWKS 8082. Ctrl-C stops everything.
# --gateway adds the edge gateway envoy/gateway-edge.yaml on 8443 (admin 9902; TLS with
# client certificates from tools/dev_pki.py in run/pki) in front of the sidecar, which then
# runs policies/demo-fhir-api-gateway.json (or --policy) and trusts the gateway's XFCC.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

POLICY=""
JWKS=""
GATEWAY=0
TOKEN_FILE=""
DPOP_KEY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --policy) POLICY=$2; shift 2 ;;
    --jwks) JWKS=$2; shift 2 ;;
    --gateway) GATEWAY=1; shift ;;
    --token) TOKEN_FILE=$2; shift 2 ;;
    --dpop-key) DPOP_KEY=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$POLICY" ]; then
  if [ "$GATEWAY" = 1 ]; then POLICY=policies/demo-fhir-api-gateway.json; else POLICY=policies/demo-fhir-api.json; fi
fi
[ -f "$POLICY" ] || { echo "demo.sh: --policy $POLICY: no such file" >&2; exit 2; }

bash scripts/bootstrap.sh
echo "[demo] building the guard (fapi_guard.wasm, wasm32-wasip1) and the local issuer"
bash scripts/build-wasm.sh --quiet
cargo build --release -p fapi-guard-issuer -p fapi-guard --quiet
ISSUER=target/release/guard-issuer

RUN=run/demo
mkdir -p "$RUN"
"$ISSUER" demo-setup --dir "$RUN" >/dev/null
SIGNING_KEY=$RUN/signing-key.json

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "[demo] nothing listens on 127.0.0.1:$1" >&2; return 1
}

# What the printed requests are built from: the policy as written.
eval "$(.venv/bin/python scripts/demo_requests.py "$POLICY")"
if [ "$SIGN_ALG" != ES256 ]; then
  # The policy does not accept the demo's ES256 key (token.allowed_algs): sign with one it does.
  SIGNING_KEY=$RUN/signing-key-$SIGN_ALG.json
  [ -f "$SIGNING_KEY" ] || "$ISSUER" keygen --alg "$SIGN_ALG" --kid "demo-$SIGN_ALG" --out "$SIGNING_KEY"
  "$ISSUER" jwks "$SIGNING_KEY" --out "$RUN/jwks.json"
fi
if [ -n "$JWKS" ]; then cp "$JWKS" "$RUN/jwks.json"; fi
if [ "$REST" = 1 ] && [ "$GATEWAY" = 1 ]; then
  echo "demo.sh: --gateway runs the FHIR sample; $POLICY has no \`fhir\` section (run it without --gateway)" >&2; exit 2
fi
.venv/bin/python scripts/demo_jwks_server.py --port 8082 --file "$RUN/jwks.json" >"$RUN/jwks-server.log" 2>&1 &
PIDS+=($!)
if [ "$REST" = 1 ]; then
  .venv/bin/python scripts/rest_echo_server.py --port 8080 --policy "$POLICY" >"$RUN/rest-api.log" 2>&1 &
else
  .venv/bin/python tests/fhir_upstream/server.py --port 8080 --base "${BASE:-/}" >"$RUN/fhir-api.log" 2>&1 &
fi
PIDS+=($!)
wait_port 8082; wait_port 8080

# Behind the gateway the sidecar takes the client certificate from the gateway's XFCC; on this
# plain-HTTP loopback hop that needs ALWAYS_FORWARD_ONLY (in Istio the hop is mesh mTLS and
# the sidecar's APPEND_FORWARD keeps it). docs/platform-guide.md, "Local two-proxy topology".
SIDECAR_ARGS=()
if [ "$GATEWAY" = 1 ]; then SIDECAR_ARGS=(--forward-client-cert ALWAYS_FORWARD_ONLY); fi
.venv/bin/python envoy/render.py --policy "$POLICY" --listen-port 10000 --upstream-port 8080 \
  --admin-port 9901 --jwks-address 127.0.0.1:8082 --jwks-plain ${SIDECAR_ARGS[@]+"${SIDECAR_ARGS[@]}"} --out "$RUN/envoy.yaml"
.venv/bin/envoy -c "$RUN/envoy.yaml" --use-dynamic-base-id -l warning --component-log-level wasm:info \
  >"$RUN/envoy.log" 2>&1 &
ENVOY_PID=$!
PIDS+=("$ENVOY_PID")
# Envoy that refuses its configuration exits: say why, from its log, not "nothing listens".
envoy_failed() {
  echo "[demo] Envoy did not start; from $RUN/envoy.log:" >&2
  { grep -E "\[(critical|error)\]" "$RUN/envoy.log" || tail -n 20 "$RUN/envoy.log"; } | tail -n 8 | sed 's/^/[demo]   /' >&2
  exit 1
}
for _ in $(seq 1 150); do
  if (exec 3<>/dev/tcp/127.0.0.1/10000) 2>/dev/null; then break; fi
  kill -0 "$ENVOY_PID" 2>/dev/null || envoy_failed
  sleep 0.1
done
(exec 3<>/dev/tcp/127.0.0.1/10000) 2>/dev/null || envoy_failed
# Ready means the keys are in: until the first JWKS fetch lands the token filter answers 503
# (fail closed, Retry-After), so wait for Envoy's `fapi_guard.token.jwks.fetch_ok` counter
# (inline keys need no fetch: then the counter never moves and this gives up after 10 s).
.venv/bin/python - <<'PY' || true
import re, time, urllib.request
for _ in range(100):
    try:
        body = urllib.request.urlopen("http://127.0.0.1:9901/stats?filter=fapi_guard.token.jwks.fetch_ok",
                                      timeout=1).read().decode()
        if re.search(r"fetch_ok: [1-9]", body):
            break
    except OSError:
        pass
    time.sleep(0.1)
PY

if [ "$GATEWAY" = 1 ]; then
  # The committed gateway config as it is (it reads its certificates from run/pki).
  X5T=$(.venv/bin/python tools/dev_pki.py --dir run/pki)
  .venv/bin/envoy -c envoy/gateway-edge.yaml --use-dynamic-base-id -l warning >"$RUN/gateway.log" 2>&1 &
  PIDS+=($!)
  wait_port 8443
fi

BIND=(--dpop-key "$RUN/dpop-key.json")
if [ "$SCHEME" = Bearer ]; then BIND=(); fi
if [ "$REST" = 1 ]; then
  # The route's scopes and claims (scripts/demo_requests.py); then one without its scopes and
  # one for another audience (the denied requests).
  eval "CLAIMS=($RCLAIMS)"
  mint() {  # OUT AUD SCOPE
    "$ISSUER" token --key "$SIGNING_KEY" --iss "$ISS" --aud "$2" --sub demo-client --client-id demo-client \
      --scope "$3" ${CLAIMS[@]+"${CLAIMS[@]}"} ${BIND[@]+"${BIND[@]}"} --ttl 3600 --out "$1"
  }
  mint "$RUN/token" "$AUD" "$RSCOPE"
  mint "$RUN/token-other-aud" "other-api" "$RSCOPE"
  if [ -n "$RSCOPE_DENIED" ]; then mint "$RUN/token-no-scope" "$AUD" "$RSCOPE_DENIED"; fi
else
"$ISSUER" token --key "$SIGNING_KEY" --iss "$ISS" --aud "$AUD" --sub demo-user --client-id demo-app \
  --scope "openid launch/patient patient/*.rs" --claim "$PCLAIM=pat-anna" ${BIND[@]+"${BIND[@]}"} \
  --ttl 3600 --out "$RUN/token"
fi

if [ "$GATEWAY" = 1 ]; then
  # RFC 8705 §3 + RFC 9449 §6: bound to the DPoP key and to the client certificate.
  "$ISSUER" token --key "$SIGNING_KEY" --iss "$ISS" --aud "$AUD" --sub demo-user --client-id demo-app \
    --scope "openid launch/patient patient/*.rs" --claim patient=pat-anna --dpop-key "$RUN/dpop-key.json" \
    --x5t-s256 "$X5T" --ttl 3600 --out "$RUN/token-mtls"
  G=https://127.0.0.1:8443/api/fhir
  TLS="--cacert run/pki/ca.pem"
  CERT="--cert run/pki/client.pem --key run/pki/client-key.pem"
  T=$RUN/token-mtls
  cat <<TXT

FAPI guard demo (two proxies) is running:
  client --TLS + client cert--> edge gateway :8443 (envoy/gateway-edge.yaml: strips /api, internal :authority, XFCC)
         --> sidecar :10000 (token -> DPoP -> FHIR scope) --> FHIR API :8080
Policy: $POLICY   Logs: $RUN/envoy.log $RUN/gateway.log   Stats: curl -s localhost:9901/stats | grep fapi_guard
PKI: run/pki (tools/dev_pki.py); client certificate x5t#S256 $X5T
A token for patient pat-anna bound to the DPoP key and the client certificate (1 h) is in $T.
Proofs name the public URI ($G/...), not the one the sidecar sees. Each request makes a fresh proof.

# allowed: pat-anna reads her own record through the gateway, with her client certificate (200)
curl -i $TLS $CERT -H "Authorization: DPoP \$(cat $T)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu $G/Patient/pat-anna --token \$(cat $T))" \\
  $G/Patient/pat-anna

# denied: the same without the client certificate (401 mtls_cert_missing)
curl -i $TLS -H "Authorization: DPoP \$(cat $T)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu $G/Patient/pat-anna --token \$(cat $T))" \\
  $G/Patient/pat-anna

# denied: another patient's record (403)
curl -i $TLS $CERT -H "Authorization: DPoP \$(cat $T)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu $G/Patient/pat-bjorn --token \$(cat $T))" \\
  $G/Patient/pat-bjorn

# denied: another patient's Observation by id, decided on the response body (403, body withheld)
curl -i $TLS $CERT -H "Authorization: DPoP \$(cat $T)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu $G/Observation/obs-bjorn-hb --token \$(cat $T))" \\
  $G/Observation/obs-bjorn-hb

# denied: a proof for the internal URI the sidecar sees, not the public one (401 dpop_htu_mismatch)
curl -i $TLS $CERT -H "Authorization: DPoP \$(cat $T)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu http://fhir-api.fhir.svc.cluster.local:8080/fhir/Patient/pat-anna --token \$(cat $T))" \\
  $G/Patient/pat-anna

# public: the CapabilityStatement through the gateway (200)
curl -s $TLS $G/metadata | head -c 200; echo

Press Ctrl-C to stop.
TXT
  wait
  exit 0
fi

U=http://127.0.0.1:10000$BASE
T=$RUN/token
KEY=$RUN/dpop-key.json
OWN_KEYS=0
if [ -n "$JWKS" ]; then OWN_KEYS=1; fi
if [ -n "$TOKEN_FILE" ]; then T=$TOKEN_FILE; OWN_KEYS=0; fi
if [ -n "$DPOP_KEY" ]; then KEY=$DPOP_KEY; fi

auth_args() {  # the curl headers for METHOD URL [TOKEN_FILE]
  local t=${3:-$T}
  if [ "$SCHEME" = Bearer ]; then
    echo "-H \"Authorization: Bearer \$(cat $t)\""
  else
    echo "-H \"Authorization: DPoP \$(cat $t)\" \\
  -H \"DPoP: \$($ISSUER dpop --key $KEY --htm $1 --htu $2 --token \$(cat $t))\""
  fi
}

if [ "$REST" = 1 ]; then
  R=http://127.0.0.1:10000$RPATH
  BODY=""
  case "$RMETHOD" in POST|PUT|PATCH) BODY=" -H 'content-type: application/json' -d '{}'" ;; esac
  XH=""
  if [ -n "$RHEADERS" ]; then XH=" $RHEADERS"; fi
  if [ "$OWN_KEYS" = 1 ]; then
    cat <<TXT

FAPI guard demo is running with YOUR policy and JWKS: Envoy :10000 -> token -> DPoP -> REST echo API :8080
Policy: $POLICY   JWKS: $JWKS (answered at every jwks_uri)   Logs: $RUN/envoy.log
The demo cannot sign tokens your JWKS accepts, so there are no ready-made requests. Mint them:

  access token (RFC 9068, typ at+jwt, signed by a key in your JWKS with its kid):
    iss=$ISS  aud=$AUD  client_id, jti, iat, exp (sub unless token.require_sub is false)
    scope="$RSCOPE"  $RCLAIMS_TEXT
    cnf.jkt = RFC 7638 thumbprint of your DPoP public key$( [ "$SCHEME" = Bearer ] && echo " (not needed: this policy is Bearer-only)")
  DPoP proof per request (RFC 9449): htm=$RMETHOD  htu=$R  ath=base64url(SHA-256(token))

  curl -i -X $RMETHOD -H "Authorization: $SCHEME <token>" -H "DPoP: <proof>"$XH$BODY $R

Or pass your token: scripts/demo.sh --policy $POLICY --jwks $JWKS --token token.txt --dpop-key dpop-private-jwk.json
(the demo then prints requests with your token and proofs made with your DPoP key).

Press Ctrl-C to stop.
TXT
    wait
    exit 0
  fi
  cat <<TXT

FAPI guard demo is running: Envoy :10000 -> token -> DPoP -> REST echo API :8080 (a policy without \`fhir\`)
Policy: $POLICY   Logs: $RUN/envoy.log $RUN/rest-api.log   Stats: curl -s localhost:9901/stats | grep fapi_guard
Token: $T (scope "$RSCOPE"$( [ -n "$RCLAIMS_TEXT" ] && echo "; $RCLAIMS_TEXT")). Each request makes a fresh proof.
What the policy means: target/release/fapi-guard check $POLICY

# allowed: $RMETHOD $RPATH with the scopes and claims the route needs (200)
curl -i -X $RMETHOD $(auth_args "$RMETHOD" "$R")$XH$BODY \\
  $R
TXT
  if [ -z "$TOKEN_FILE" ] && [ -n "$RSCOPE_DENIED" ]; then cat <<TXT

# denied: a token without the route's scopes (403 authz_missing_scope)
curl -i -X $RMETHOD $(auth_args "$RMETHOD" "$R" "$RUN/token-no-scope")$XH$BODY \\
  $R
TXT
  fi
  if [ -z "$TOKEN_FILE" ]; then cat <<TXT

# denied: a token for another audience (401 wrong_audience)
curl -i -X $RMETHOD $(auth_args "$RMETHOD" "$R" "$RUN/token-other-aud")$XH$BODY \\
  $R
TXT
  fi
  cat <<TXT

# denied: no token at all (401 with a challenge)
curl -i -X $RMETHOD$XH$BODY $R
TXT
  if [ -n "$PUBLIC_PATH" ]; then cat <<TXT

# public: $PUBLIC_METHOD $PUBLIC_PATH needs no token (200)
curl -s -X $PUBLIC_METHOD http://127.0.0.1:10000$PUBLIC_PATH; echo
TXT
  fi
  cat <<TXT

Press Ctrl-C to stop.
TXT
  wait
  exit 0
fi

if [ "$OWN_KEYS" = 1 ]; then
  cat <<TXT

FAPI guard demo is running with YOUR policy and JWKS: Envoy :10000 -> token -> DPoP -> FHIR scope -> FHIR API :8080$BASE
Policy: $POLICY   JWKS: $JWKS (answered at every jwks_uri)   Logs: $RUN/envoy.log
The demo cannot sign tokens your JWKS accepts, so there are no ready-made requests. Mint them:

  access token (RFC 9068, typ at+jwt, signed by a key in your JWKS with its kid):
    iss=$ISS  aud=$AUD  sub, client_id, jti, iat, exp
    scope="patient/*.rs"  $PCLAIM=pat-anna (or pat-bjorn: the sample API's two patients)
    cnf.jkt = RFC 7638 thumbprint of your DPoP public key$( [ "$SCHEME" = Bearer ] && echo " (not needed: this policy is Bearer-only)")
  DPoP proof per request (RFC 9449): htm=GET  htu=$U/Patient/pat-anna  ath=base64url(SHA-256(token))

  curl -i -H "Authorization: $SCHEME <token>" -H "DPoP: <proof>" $U/Patient/pat-anna

Or pass your token: scripts/demo.sh --policy $POLICY --jwks $JWKS --token token.txt --dpop-key dpop-private-jwk.json
(the demo then prints requests with your token and proofs made with your DPoP key).
Why a request is refused (same checks, offline):
  target/release/fapi-guard explain --policy $POLICY --jwks $JWKS --authority 127.0.0.1:10000 \\
    --request "GET $BASE/Patient/pat-anna" --header "Authorization: $SCHEME <token>" --header "DPoP: <proof>"

Press Ctrl-C to stop.
TXT
  wait
  exit 0
fi

cat <<TXT

FAPI guard demo is running: Envoy :10000 -> token -> DPoP -> FHIR scope -> FHIR API :8080$BASE
Policy: $POLICY   Logs: $RUN/envoy.log   Stats: curl -s localhost:9901/stats | grep fapi_guard
A token for patient pat-anna (1 h) is in $T. Each request makes a fresh proof.
Why a request gets its answer: target/release/fapi-guard explain --policy $POLICY --jwks $RUN/jwks.json \\
  --authority 127.0.0.1:10000 --request "GET $BASE/Patient/pat-bjorn" --header "Authorization: $SCHEME \$(cat $T)" ...

# allowed: pat-anna reads her own record (200)
curl -i $(auth_args GET "$U/Patient/pat-anna") \\
  $U/Patient/pat-anna
TXT
if [ "$SCHEME" = DPoP ]; then cat <<TXT

# denied: no DPoP proof (401 invalid_dpop_proof)
curl -i -H "Authorization: DPoP \$(cat $T)" $U/Patient/pat-anna
TXT
fi
cat <<TXT

# denied: another patient's record (403)
curl -i $(auth_args GET "$U/Patient/pat-bjorn") \\
  $U/Patient/pat-bjorn

# denied: another patient's Observation by id, decided on the response body (403, body withheld)
curl -i $(auth_args GET "$U/Observation/obs-bjorn-hb") \\
  $U/Observation/obs-bjorn-hb

# denied: no token at all (401 with a challenge); public: the CapabilityStatement (200)
curl -i $U/Patient/pat-anna
curl -s $U/metadata | head -c 200; echo

Press Ctrl-C to stop.
TXT
wait
