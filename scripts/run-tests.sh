#!/usr/bin/env bash
# Runs the test binaries that `cargo test` builds, several at once: the unit tests and the
# HTTP suite on the embedded default, the same HTTP suite on MongoDB + Redis + S3, and the
# backend-specific (ignored) tests. Most of the suite's wall time is spent waiting (servers
# restarting, janitor intervals, lease expiry), so running binaries side by side cuts the
# wall time to about half on two cores; each binary still runs its own tests 4 at a time.
#
# Usage: scripts/run-tests.sh   (after scripts/services.sh start all and its env)
# Environment: DEPOT_TEST_PARALLEL (binaries at once, default 3),
#   DEPOT_TEST_TIMEOUT (seconds one binary may run, default 1500).
# Every binary's output is printed when it ends (whole, on failure); the exit status is
# non-zero when any binary failed or timed out.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/depot-target}"
PARALLEL="${DEPOT_TEST_PARALLEL:-3}"
TIMEOUT="${DEPOT_TEST_TIMEOUT:-1500}"
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/depot-tests.XXXXXX")
trap 'rm -rf "$LOGS"' EXIT

# Build every test binary once and learn their paths: "kind name path" per line.
cargo test --locked --no-run --message-format=json-render-diagnostics \
  | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["target"]["kind"][0], m["target"]["name"], m["executable"])
' > "$LOGS/binaries"
[ -s "$LOGS/binaries" ] || { echo "run-tests: cargo built no test binaries" >&2; exit 1; }

# Jobs as "backend name path args...". Slow binaries first so they overlap the rest.
SLOW_FIRST=(retention listing attacks_uploads cli crash oidc resumable webhooks attacks_oidc_quota)
rank() {
  local i
  for i in "${!SLOW_FIRST[@]}"; do
    [ "${SLOW_FIRST[$i]}" = "$1" ] && { echo "$i"; return; }
  done
  echo 99
}
jobs_file="$LOGS/jobs"
: > "$jobs_file"
while read -r kind name path; do
  r=$(rank "$name")
  if [ "$kind" != test ]; then
    # Unit tests of the library and the binary: no backend.
    echo "$r embedded $kind-$name $path --test-threads=4" >> "$jobs_file"
  elif [ "$name" = backends ]; then
    echo "0 production $name $path --ignored --test-threads=2" >> "$jobs_file"
  else
    echo "$r embedded $name $path --test-threads=4" >> "$jobs_file"
    echo "$r production $name $path --test-threads=4" >> "$jobs_file"
  fi
done < "$LOGS/binaries"
sort -n -s -k1,1 "$jobs_file" -o "$jobs_file"

run_job() {
  local backend=$1 name=$2 path=$3
  shift 3
  local log="$LOGS/$backend-$name.log" start=$SECONDS rc=0
  DEPOT_TEST_BACKEND=$backend timeout --kill-after=30 "$TIMEOUT" "$path" "$@" > "$log" 2>&1 || rc=$?
  echo "$rc" > "$LOGS/$backend-$name.rc"
  local took=$((SECONDS - start))
  if [ "$rc" = 0 ]; then
    printf '[ok]   %-11s %-22s %4ss  %s\n' "$backend" "$name" "$took" "$(grep -h '^test result' "$log" | tail -1)"
  else
    [ "$rc" = 124 ] && echo "(timed out after ${TIMEOUT}s)" >> "$log"
    printf '[FAIL] %-11s %-22s %4ss  exit %s\n' "$backend" "$name" "$took" "$rc"
    sed 's/^/    | /' "$log"
  fi
}

echo "running $(wc -l < "$jobs_file") test binaries, $PARALLEL at a time"
while read -r _ backend name path args; do
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n || true; done
  # shellcheck disable=SC2086 # args are the test harness's flags, split on purpose
  run_job "$backend" "$name" "$path" $args &
done < "$jobs_file"
wait

# Doc tests are not among the binaries above.
cargo test --locked --doc -q > "$LOGS/doc.log" 2>&1 || { cat "$LOGS/doc.log"; exit 1; }

failed=$(grep -L '^0$' "$LOGS"/*.rc | sed 's#.*/##; s#\.rc$##' || true)
if [ -n "$failed" ]; then
  echo "failed test binaries:" $failed
  exit 1
fi
echo "all $(wc -l < "$jobs_file") test binaries passed"
