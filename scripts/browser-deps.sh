#!/usr/bin/env bash
# What the browser tests (tests/browser_cors.rs) need, from a fresh Debian machine: a real
# headless browser (Debian's `chromium`, with apt-get when it is missing) and the real tus
# client for browsers (`tus-js-client` from npm, pinned by tests/browser/package-lock.json,
# installed with `npm ci` into a cache directory that later runs reuse).
#
# Prints two lines on stdout:
#   chromium=<path of the chromium binary>
#   tus_js=<path of tus-js-client's browser bundle, dist/tus.min.js>
# Progress goes to stderr. Exits non-zero when anything is missing after the install: the
# tests then fail, they never skip.
#
# Knobs (environment): DEPOT_BROWSER_DEPS (the cache directory, default
# /var/tmp/depot-browser-deps).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SPEC="$ROOT/tests/browser"
CACHE="${DEPOT_BROWSER_DEPS:-/var/tmp/depot-browser-deps}"
BUNDLE="$CACHE/node_modules/tus-js-client/dist/tus.min.js"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "browser-deps.sh: root (or sudo) is needed to run: $*" >&2; exit 1
  fi
}

apt_install() {
  echo "browser-deps.sh: installing $* with apt-get" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

chromium_path() { command -v chromium 2>/dev/null || true; }

# The lock file's digest: the cache is current when it was installed from this very lock.
lock_digest() { sha256sum "$SPEC/package-lock.json" | cut -d' ' -f1; }

tus_installed() {
  [ -s "$BUNDLE" ] && [ -f "$CACHE/.installed" ] && [ "$(cat "$CACHE/.installed")" = "$(lock_digest)" ]
}

install_tus() {
  if ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
  echo "browser-deps.sh: installing tus-js-client (tests/browser/package-lock.json) into $CACHE" >&2
  rm -rf "$CACHE/node_modules" "$CACHE/.installed"
  mkdir -p "$CACHE"
  cp "$SPEC/package.json" "$SPEC/package-lock.json" "$CACHE/"
  (cd "$CACHE" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  lock_digest >"$CACHE/.installed"
}

mkdir -p "$(dirname "$CACHE")"
# One installer at a time (test binaries run in parallel); what is installed is reused.
exec 9>"$CACHE.lock"
flock 9
if [ -z "$(chromium_path)" ]; then
  # fonts-liberation: a page renders text without a fallback font warning on a bare machine.
  apt_install chromium fonts-liberation
fi
CHROMIUM="$(chromium_path)"
if [ -z "$CHROMIUM" ] || ! "$CHROMIUM" --version >/dev/null 2>&1; then
  echo "browser-deps.sh: chromium is not runnable after the install" >&2
  exit 1
fi
if ! tus_installed; then
  install_tus
  if ! tus_installed; then
    echo "browser-deps.sh: $BUNDLE is missing after the install" >&2
    exit 1
  fi
fi
flock -u 9
echo "chromium=$CHROMIUM"
echo "tus_js=$BUNDLE"
