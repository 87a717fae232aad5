#!/usr/bin/env bash
# Fuzzes a live Depot against openapi/openapi.yaml with Schemathesis (PyPI).
#
# Starts the already-built debug binary ($CARGO_TARGET_DIR/debug/depot, default
# /var/tmp/depot-target; this script builds nothing) on a free loopback port with a
# throwaway data dir and an admin token, seeds the product `demo` (versions v1.0.0 and
# v0.9.0) and the product `scratch` that the spec's examples name, then runs Schemathesis
# with the admin token on positive and negative input (examples, coverage and fuzzing
# phases). Checks: no 5xx; response bodies, status codes, content types and headers as
# documented; schema-violating input refused; unknown methods answered 405; no
# operation that needs a token works without one. Exits non-zero on any failure.
# About a minute on 2 cores with the default budget.
#
# Installs what it needs on a fresh Debian machine (python3-venv, then Schemathesis into
# a venv that later runs reuse).
#
# Knobs (environment): DEPOT_ST_MAX_EXAMPLES (generated cases per operation, default
# 100), DEPOT_ST_SEED (reproduce a run), DEPOT_ST_CHECKS (a comma-separated list
# of Schemathesis checks instead of the ones above), DEPOT_ST_VENV (the venv's
# directory), DEPOT_ST_REPORT_DIR (keep the JUnit report there).
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
VENV="${DEPOT_ST_VENV:-/var/tmp/depot-st-venv}"
TARGET="${CARGO_TARGET_DIR:-/var/tmp/depot-target}"
BIN="$TARGET/debug/depot"
MAX_EXAMPLES="${DEPOT_ST_MAX_EXAMPLES:-100}"
# The four the test gate is about, and four more that hold for Depot: headers as
# documented, schema-violating input refused, unknown methods answered 405, and no
# operation that needs a token working without one.
CHECKS="${DEPOT_ST_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection,unsupported_method,ignored_auth}"

if [ ! -x "$BIN" ]; then
  echo "schemathesis.sh: no $BIN; build it first (cargo build)" >&2
  exit 2
fi

install_schemathesis() {
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "schemathesis.sh: installing python3-venv" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
}

# One installer at a time; a venv with the pinned version is reused.
exec 9>"$VENV.lock"
flock 9
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "version $ST_VERSION"; then
  install_schemathesis
fi
flock -u 9

WORK=$(mktemp -d /tmp/depot-schemathesis.XXXXXX)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ADMIN="$(python3 -c 'import secrets, string; a = string.ascii_letters + string.digits; print("depot_" + "".join(secrets.choice(a) for _ in range(43)))')"
URL="http://127.0.0.1:$PORT"

DEPOT_LISTEN="127.0.0.1:$PORT" \
  DEPOT_DATA_DIR="$WORK/data" \
  DEPOT_ADMIN_TOKEN="$ADMIN" \
  DEPOT_MAX_UPLOAD_BYTES=1048576 \
  DEPOT_SHUTDOWN_GRACE_SECONDS=2 \
  DEPOT_JANITOR_INTERVAL_SECONDS=3600 \
  NO_COLOR=1 \
  "$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

server_log() {
  echo "--- server log (last 50 lines) ---" >&2
  tail -n 50 "$WORK/server.log" >&2 || true
}

for _ in $(seq 1 100); do
  if python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$URL/livez" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "schemathesis.sh: depot exited during start-up" >&2
    server_log
    exit 1
  fi
  sleep 0.2
done

# The data the spec's examples point at, made with Depot's own client.
export DEPOT_URL="$URL" DEPOT_TOKEN="$ADMIN"
printf 'demo artifact v1.0.0\n' >"$WORK/v1.0.0.txt"
printf 'demo artifact v0.9.0\n' >"$WORK/v0.9.0.txt"
"$BIN" product create demo >/dev/null
"$BIN" product create scratch >/dev/null
"$BIN" push demo v1.0.0 "$WORK/v1.0.0.txt" >/dev/null
"$BIN" push demo v0.9.0 "$WORK/v0.9.0.txt" >/dev/null
unset DEPOT_URL DEPOT_TOKEN

# Values only a live server knows (a valid signed URL, tokens to fetch, prune and grant),
# mixed into the generated input by a Schemathesis config: generated values still come
# up, these make part of the cases reach real data.
# tus bodies are raw bytes: Schemathesis sends them like application/octet-stream.
cat >"$WORK/hooks.py" <<'PY'
import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
PY
python3 - "$URL" "$ADMIN" "$WORK/hooks.py" >"$WORK/schemathesis.toml" <<'PY'
import json
import sys
import urllib.parse
import urllib.request

url, admin, hooks = sys.argv[1], sys.argv[2], sys.argv[3]


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("X-Api-Token", admin)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read().decode()


def token(name):
    raw = call("PUT", "/register", {"name": name})
    return [raw, json.loads(call("GET", "/fetch/" + raw))["id"]]


signed = urllib.parse.urlsplit(json.loads(call("GET", "/product/presign/demo/v1.0.0"))["url"])
query = dict(urllib.parse.parse_qsl(signed.query))
dictionaries = {
    "demo-product": ["demo"],
    "demo-version": ["v1.0.0", "latest"],
    "old-version": ["v0.9.0"],
    "scratch-product": ["scratch"],
    "signed-product": ["demo"],
    "signed-version": ["v1.0.0"],
    "signed-expires": [int(query["expires"])],
    "signed-signature": [query["signature"]],
    "fetch-token": token("schemathesis-fetch"),
    "prune-token": token("schemathesis-prune"),
    "grantee-token": token("schemathesis-grantee"),
}


def bind(name, probability):
    return "{ dictionary = %s, probability = %s }" % (json.dumps(name), probability)


operations = {
    "/product/fetch/{product}": {"path.product": bind("demo-product", 0.5)},
    "/product/versions/{product}": {"path.product": bind("demo-product", 0.5)},
    "/product/download/{product}/{version}": {
        "path.product": bind("demo-product", 0.7),
        "path.version": bind("demo-version", 0.7),
    },
    "/product/presign/{product}/{version}": {
        "path.product": bind("demo-product", 0.7),
        "path.version": bind("demo-version", 0.7),
    },
    "/signed/{product}/{version}": {
        "path.product": bind("signed-product", 0.8),
        "path.version": bind("signed-version", 0.8),
        "query.expires": bind("signed-expires", 0.8),
        "query.signature": bind("signed-signature", 0.8),
    },
    "/product/delete/{product}": {"path.product": bind("scratch-product", 0.3)},
    "/product/delete/{product}/{version}": {
        "path.product": bind("demo-product", 0.5),
        "path.version": bind("old-version", 0.3),
    },
    "/fetch/{token}": {"path.token": bind("fetch-token", 0.5)},
    "/prune/{token}": {"path.token": bind("prune-token", 0.3)},
    "/product/modify/{action}": {
        "body.product": bind("demo-product", 0.5),
        "body.token": bind("grantee-token", 0.5),
    },
    "/product/upload": {"body.product": bind("demo-product", 0.5)},
}

print("hooks = %s" % json.dumps(hooks))
print()
# Input that breaks the schema is refused; tus adds 412 (wrong Tus-Resumable), 415 (a
# PATCH body of another type) and 413 (a length past the limit) to the usual answers.
print("[checks.negative_data_rejection]")
print('expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "412", "413", "415", "422", "428", "429", "5xx"]')
print()
print("[dictionaries]")
for name, values in dictionaries.items():
    print("%s = { values = %s }" % (json.dumps(name), json.dumps(values)))
for path, parameters in operations.items():
    print()
    print("[[operations]]")
    print("include-path = %s" % json.dumps(path))
    print("parameters = { %s }" % ", ".join("%s = %s" % (json.dumps(k), v) for k, v in parameters.items()))

# tus requests are mostly headers, and Schemathesis counts one extra, unknown header as
# schema-violating input that must be refused; but HTTP lets any header through (tus
# clients and proxies add their own), so such cases are not generated for these. Every
# other mutation of the documented headers still is.
for path, method in [("/uploads", "POST"), ("/uploads/{id}", "HEAD"), ("/uploads/{id}", "PATCH"), ("/uploads/{id}", "DELETE")]:
    print()
    print("[[operations]]")
    print("include-path = %s" % json.dumps(path))
    print("include-method = %s" % json.dumps(method))
    print("generation = { allow-extra-parameters = false }")

PY

# One worker: Schemathesis' generator parses source with `ast` from every worker thread,
# and CPython before 3.11.8 (Debian 12 ships 3.11.2) corrupts its recursion counter when
# two threads do that at once ("AST constructor recursion depth mismatch").
ARGS=(
  --config-file "$WORK/schemathesis.toml"
  run "$PWD/openapi/openapi.yaml"
  --url "$URL"
  --header "X-Api-Token: $ADMIN"
  --checks "$CHECKS"
  --mode all
  --phases "examples,coverage,fuzzing"
  --max-examples "$MAX_EXAMPLES"
  --workers 1
  --request-timeout 10
  --no-color
)
if [ -n "${DEPOT_ST_REPORT_DIR:-}" ]; then
  mkdir -p "$DEPOT_ST_REPORT_DIR"
  ARGS+=(--report junit --report-dir "$(cd "$DEPOT_ST_REPORT_DIR" && pwd)")
fi
if [ -n "${DEPOT_ST_SEED:-}" ]; then
  ARGS+=(--seed "$DEPOT_ST_SEED")
fi

echo "schemathesis $ST_VERSION against $URL (max $MAX_EXAMPLES examples per operation)"
status=0
# From the scratch dir: Schemathesis keeps a `.schemathesis` replay store in its cwd.
(cd "$WORK" && "$VENV/bin/schemathesis" "${ARGS[@]}") || status=$?

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "schemathesis.sh: depot died during the run" >&2
  server_log
  exit 1
fi
if [ "$status" -ne 0 ]; then
  server_log
  echo "schemathesis.sh: FAILED (schemathesis exit $status)" >&2
  exit "$status"
fi
echo "schemathesis.sh: passed"
