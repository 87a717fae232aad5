#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine:
#   lint, unit tests, the HTTP suite on the embedded default, the same HTTP suite on
#   MongoDB (SecantusDB) + Redis + S3 (SeaweedFS), the backend-specific tests, and the
#   deployment-file checks. Real servers are installed and started by scripts/services.sh
#   on loopback, non-default ports, and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

# One shared target dir keeps rebuilds of a fresh clone incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/depot-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n==> %s\n' "$*"; }

step "format and lint"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

step "start real backends (Redis, SecantusDB, SeaweedFS)"
# Stop at the end only what this run started: a developer's running instance stays up.
if scripts/services.sh status >/dev/null 2>&1; then
  scripts/services.sh start all
else
  scripts/services.sh start all
  trap 'scripts/services.sh stop all >/dev/null 2>&1 || true' EXIT
fi
eval "$(scripts/services.sh env)"

step "protocol clients the tests drive (tuspy from PyPI; chromium and tus-js-client from npm)"
# The tests call these too (each serialized by its own lock); doing it once up front keeps
# the install out of the tests' time and fails early on a machine that cannot install.
scripts/tus-venv.sh >/dev/null
scripts/browser-deps.sh >/dev/null

step "unit tests; the HTTP suite on the embedded default and on MongoDB + Redis + S3; backend-specific tests (outages, two replicas, multipart, janitor)"
# scripts/run-tests.sh runs the test binaries side by side (most of their time is waiting).
scripts/run-tests.sh

step "Schemathesis against the OpenAPI spec (live embedded server, positive and negative input)"
scripts/schemathesis.sh

step "deployment files"
scripts/check-deploy.sh

echo
echo "all test stages passed"
