#!/usr/bin/env bash
# A Python venv with the real tus client `tuspy` from PyPI, for the resumable-upload tests
# (tests/resumable.rs drives it through the scripts in tests/tus/).
#
# Installs what it needs on a fresh Debian machine (python3-venv with apt-get, then the
# pinned tuspy into a venv that later runs reuse) and prints the venv's python on stdout;
# progress goes to stderr. Exits non-zero when the venv cannot be made: the tests then
# fail, they never skip.
#
# Knobs (environment): DEPOT_TUS_VENV (the venv's directory, default /var/tmp/depot-tus-venv).
set -euo pipefail

TUSPY_VERSION=1.1.0
VENV="${DEPOT_TUS_VENV:-/var/tmp/depot-tus-venv}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "tus-venv.sh: root (or sudo) is needed to run: $*" >&2; exit 1
  fi
}

installed() {
  "$VENV/bin/python" - "$TUSPY_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
import tusclient.client  # noqa: F401  (importable, not only listed)
sys.exit(0 if version("tuspy") == sys.argv[1] else 1)
PY
}

install_tuspy() {
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "tus-venv.sh: installing python3-venv" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  echo "tus-venv.sh: installing tuspy==$TUSPY_VERSION into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "tuspy==$TUSPY_VERSION" >&2
}

mkdir -p "$(dirname "$VENV")"
# One installer at a time (test binaries run in parallel); a venv with the pin is reused.
exec 9>"$VENV.lock"
flock 9
if ! installed; then
  install_tuspy
  if ! installed; then
    echo "tus-venv.sh: tuspy==$TUSPY_VERSION is not importable from $VENV after the install" >&2
    exit 1
  fi
fi
flock -u 9
echo "$VENV/bin/python"
