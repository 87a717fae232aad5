#!/usr/bin/env bash
# Validates the deployment files without a Docker engine or a cluster:
#   1. every YAML file under deploy/ and minio-compose.yml parses;
#   2. every DEPOT_* name in minio-compose.yml, deploy/k8s/*.yaml and deploy/Dockerfile is a
#      known setting (KNOWN_SETTINGS below: keep it in step with the server's config);
#   3. the k8s objects refer to each other (ConfigMap/Secret names, Service selector,
#      probe paths, shutdown grace < terminationGracePeriodSeconds);
#   4. `docker compose -f minio-compose.yml config` when the Compose plugin (or the older
#      docker-compose) is installed; skipped otherwise.
# Exits non-zero on any failure. PyYAML comes from a venv it creates if needed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

KNOWN_SETTINGS="DEPOT_LISTEN DEPOT_DATA_DIR DEPOT_ADMIN_TOKEN DEPOT_MAX_UPLOAD_BYTES
DEPOT_MONGO_URL DEPOT_MONGO_DB DEPOT_REDIS_URL DEPOT_CACHE_TTL_SECONDS DEPOT_S3_BUCKET
DEPOT_S3_ENDPOINT DEPOT_S3_REGION DEPOT_S3_PUBLIC_ENDPOINT DEPOT_S3_FORCE_PATH_STYLE
DEPOT_S3_PREFIX DEPOT_S3_CREATE_BUCKET DEPOT_S3_PART_SIZE DEPOT_S3_PARTS_IN_FLIGHT
DEPOT_DOWNLOAD_MODE DEPOT_PRESIGN_TTL_SECONDS DEPOT_SIGNING_KEY
DEPOT_JANITOR_INTERVAL_SECONDS DEPOT_JANITOR_GRACE_SECONDS DEPOT_LOG_FORMAT
DEPOT_SHUTDOWN_GRACE_SECONDS DEPOT_PUBLIC_URL
DEPOT_HEADER_TIMEOUT_SECONDS DEPOT_KEEPALIVE_TIMEOUT_SECONDS DEPOT_MAX_CONNECTIONS
DEPOT_REQUEST_TIMEOUT_SECONDS"

VENV="${DEPOT_DEPLOY_VENV:-/var/tmp/depot-pyvenv-deploy}"
if ! "$VENV/bin/python" -c 'import yaml' >/dev/null 2>&1; then
  echo "check-deploy: creating venv $VENV with pyyaml"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check pyyaml
fi

status=0

KNOWN_SETTINGS="$KNOWN_SETTINGS" "$VENV/bin/python" - <<'PY' || status=1
import glob, os, re, sys
import yaml

failures = []
def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")

# 1. YAML parses
yaml_files = sorted(
    set(glob.glob("deploy/**/*.yaml", recursive=True))
    | set(glob.glob("deploy/**/*.yml", recursive=True))
    | {"minio-compose.yml"}
)
docs = {}
for path in yaml_files:
    if not os.path.exists(path):
        fail(f"{path}: missing")
        continue
    try:
        with open(path) as f:
            docs[path] = [d for d in yaml.safe_load_all(f) if d is not None]
        print(f"ok   yaml {path}")
    except yaml.YAMLError as e:
        fail(f"{path}: YAML error: {e}")

# 2. DEPOT_* names are known settings
known = set(os.environ["KNOWN_SETTINGS"].split())
scan = ["minio-compose.yml", "deploy/Dockerfile"] + sorted(glob.glob("deploy/k8s/*.yaml"))
for path in scan:
    if not os.path.exists(path):
        fail(f"{path}: missing")
        continue
    with open(path) as f:
        names = set(re.findall(r"\bDEPOT_[A-Z0-9_]+\b", f.read()))
    unknown = sorted(names - known)
    if unknown:
        fail(f"{path}: unknown DEPOT_* settings: {', '.join(unknown)}")
    else:
        print(f"ok   settings {path} ({len(names)} DEPOT_* names)")

# 3. k8s cross-references
before = len(failures)
objs = [d for p, ds in docs.items() if p.startswith("deploy/k8s/") for d in ds if isinstance(d, dict)]
by_kind = {}
for o in objs:
    by_kind.setdefault(o.get("kind"), []).append(o)
names = lambda kind: {o["metadata"]["name"] for o in by_kind.get(kind, [])}
deployments = by_kind.get("Deployment", [])
if not deployments:
    fail("deploy/k8s: no Deployment")
cm_data = {}
for cm in by_kind.get("ConfigMap", []):
    for k, v in (cm.get("data") or {}).items():
        if not isinstance(v, str):
            fail(f"ConfigMap {cm['metadata']['name']}: value of {k} is not a string (quote it)")
        cm_data[k] = v
for dep in deployments:
    dname = dep["metadata"]["name"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"].get("labels", {})
    sel = dep["spec"]["selector"].get("matchLabels", {})
    if any(labels.get(k) != v for k, v in sel.items()):
        fail(f"Deployment {dname}: selector does not match the pod labels")
    for c in pod["spec"]["containers"]:
        for ref in c.get("envFrom", []):
            if "configMapRef" in ref and ref["configMapRef"]["name"] not in names("ConfigMap"):
                fail(f"Deployment {dname}: ConfigMap {ref['configMapRef']['name']} not defined")
            if "secretRef" in ref and ref["secretRef"]["name"] not in names("Secret"):
                fail(f"Deployment {dname}: Secret {ref['secretRef']['name']} not defined")
        for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            got = c.get(probe, {}).get("httpGet", {}).get("path")
            if got != path:
                fail(f"Deployment {dname}: {probe} path is {got!r}, expected {path!r}")
    tgp = pod["spec"].get("terminationGracePeriodSeconds", 30)
    grace = cm_data.get("DEPOT_SHUTDOWN_GRACE_SECONDS")
    if grace is not None and int(grace) >= int(tgp):
        fail(f"Deployment {dname}: DEPOT_SHUTDOWN_GRACE_SECONDS={grace} not below terminationGracePeriodSeconds={tgp}")
    for svc in by_kind.get("Service", []):
        ssel = svc["spec"].get("selector", {})
        if ssel and all(labels.get(k) == v for k, v in ssel.items()):
            break
    else:
        fail(f"Deployment {dname}: no Service selects its pods")
if len(failures) == before:
    print("ok   k8s cross-references")

sys.exit(1 if failures else 0)
PY

# 4. Compose's own validation (needs only the CLI, not an engine).
export DEPOT_ADMIN_TOKEN="${DEPOT_ADMIN_TOKEN:-x}"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  compose=()
fi
if [ ${#compose[@]} -gt 0 ]; then
  if "${compose[@]}" -f minio-compose.yml config -q; then
    echo "ok   ${compose[*]} -f minio-compose.yml config"
  else
    echo "FAIL ${compose[*]} -f minio-compose.yml config"
    status=1
  fi
else
  echo "skip compose config (no docker compose plugin or docker-compose)"
fi

if [ "$status" -ne 0 ]; then
  echo "check-deploy: FAILED"
  exit 1
fi
echo "check-deploy: all checks passed"
