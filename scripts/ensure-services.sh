#!/usr/bin/env bash
# Makes sure the services the integration tests talk to are installed and answering:
#   PostgreSQL  127.0.0.1:5432  user postgres, no password (trust)
#   Redis       127.0.0.1:6379
#   NATS        127.0.0.1:4222  with JetStream
#
# Idempotent: a service that already answers is left exactly as it is (never stopped or
# restarted). A missing binary is installed from Debian's packages (apt-get update runs
# once, only when something is missing); a service that does not answer is started and
# waited for (bounded). Needs root for the install/start branches (CI and dev machines
# run as root). Exits non-zero with a message naming the service that could not be had.
#
# Environment:
#   ENSURE_SERVICES_TIMEOUT  seconds to wait for each service to answer (default 30)
set -euo pipefail

TIMEOUT="${ENSURE_SERVICES_TIMEOUT:-30}"
PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
NATS_HOST=127.0.0.1
NATS_PORT=4222
NATS_STORE_DIR=/var/lib/nats-server
NATS_LOG=/var/log/nats-server.log
# start-stop-daemon --exec alone would match ANY running nats-server (say one on another port
# that a test started) and then start nothing; the pidfile ties the check to the one started here.
NATS_PIDFILE=/run/nats-server-ensure-services.pid

log() { printf 'ensure-services: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- apt helpers
APT_UPDATED=0
apt_install() {
  if [[ "$(id -u)" -ne 0 ]]; then
    die "need to install $* but not running as root"
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [[ "$APT_UPDATED" -eq 0 ]]; then
    log "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

# wait_for NAME CHECK_FUNCTION: polls CHECK_FUNCTION once a second for up to $TIMEOUT s.
wait_for() {
  local name="$1" check="$2" i
  for ((i = 0; i < TIMEOUT; i++)); do
    if "$check"; then
      return 0
    fi
    sleep 1
  done
  "$check" || die "$name did not answer within ${TIMEOUT}s"
}

# ---------------------------------------------------------------- PostgreSQL
pg_answers() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

# Passwordless login as postgres over TCP (what TEST_DATABASE_URL uses).
pg_login_ok() {
  PGCONNECT_TIMEOUT=3 psql -w -X -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres \
    -c 'SELECT 1' >/dev/null 2>&1
}

# Newest installed major version that has a configured cluster directory, e.g. "15".
pg_version() {
  local v
  v="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)"
  printf '%s' "$v"
}

pg_server_installed() {
  command -v pg_ctlcluster >/dev/null 2>&1 &&
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# Puts trust lines for 127.0.0.1/32 and ::1/128 at the top of pg_hba.conf (the first matching
# line wins, so this overrides the packaged scram-sha-256/md5 lines). Runs at most once per
# cluster (marker comment); the file is backed up first.
pg_ensure_trust() {
  local ver="$1" hba
  hba="/etc/postgresql/$ver/main/pg_hba.conf"
  [[ -f "$hba" ]] || die "PostgreSQL $ver: $hba not found"
  if grep -q 'ensure-services.sh: trust' "$hba"; then
    return 0
  fi
  log "PostgreSQL $ver: adding trust for 127.0.0.1/32 and ::1/128 to $hba"
  cp -p "$hba" "$hba.bak-ensure-services"
  {
    echo '# ensure-services.sh: trust for local TCP so tests log in as postgres without a password'
    echo 'host    all             all             127.0.0.1/32            trust'
    echo 'host    all             all             ::1/128                 trust'
    cat "$hba.bak-ensure-services"
  } >"$hba"
  chown --reference="$hba.bak-ensure-services" "$hba" 2>/dev/null || true
  chmod --reference="$hba.bak-ensure-services" "$hba" 2>/dev/null || true
}

ensure_postgres() {
  local fresh=0 ver
  if ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1 || ! pg_server_installed; then
    log "PostgreSQL: server or client missing, installing"
    apt_install postgresql postgresql-client
    fresh=1
  fi

  ver="$(pg_version)"
  if [[ -z "$ver" ]]; then
    # Package present but no cluster (e.g. create_main_cluster = false): make one.
    ver="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)"
    [[ -n "$ver" ]] || die "PostgreSQL: no server version found under /usr/lib/postgresql"
    log "PostgreSQL $ver: creating cluster main"
    pg_createcluster "$ver" main
    fresh=1
  elif [[ ! -d "/etc/postgresql/$ver/main" ]]; then
    log "PostgreSQL $ver: creating cluster main"
    pg_createcluster "$ver" main
    fresh=1
  fi

  if [[ "$fresh" -eq 1 ]]; then
    pg_ensure_trust "$ver"
  fi

  if pg_answers; then
    log "PostgreSQL $ver: already answering on $PG_HOST:$PG_PORT"
    if [[ "$fresh" -eq 1 ]]; then
      # Started by the package's postinst before pg_hba.conf was changed: reload (no restart).
      pg_ctlcluster --skip-systemctl-redirect "$ver" main reload ||
        log "PostgreSQL $ver: reload failed (continuing)"
    fi
  else
    log "PostgreSQL $ver: not answering, starting cluster main"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start ||
      log "PostgreSQL $ver: pg_ctlcluster start failed (waiting anyway; see /var/log/postgresql/)"
    wait_for "PostgreSQL ($PG_HOST:$PG_PORT)" pg_answers
    log "PostgreSQL $ver: answering on $PG_HOST:$PG_PORT"
  fi

  if ! pg_login_ok; then
    # Answers but wants a password: an existing install whose pg_hba.conf is not trust.
    log "PostgreSQL $ver: passwordless TCP login as postgres refused, switching local TCP to trust"
    pg_ensure_trust "$ver"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main reload ||
      log "PostgreSQL $ver: reload failed"
    local i
    for ((i = 0; i < 5; i++)); do
      pg_login_ok && break
      sleep 1
    done
    pg_login_ok || die "PostgreSQL: cannot log in as postgres on $PG_HOST:$PG_PORT without a password"
  fi
}

# ---------------------------------------------------------------- Redis
redis_answers() {
  [[ "$(timeout 3 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]
}

ensure_redis() {
  local pkgs=()
  command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || pkgs+=(redis-tools)
  if [[ "${#pkgs[@]}" -gt 0 ]]; then
    log "Redis: missing ${pkgs[*]}, installing"
    apt_install "${pkgs[@]}"
  fi

  if redis_answers; then
    log "Redis: already answering on $REDIS_HOST:$REDIS_PORT"
    return 0
  fi
  log "Redis: not answering, starting redis-server"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log ||
    log "Redis: redis-server failed to start (waiting anyway; see /var/log/redis/ci.log)"
  wait_for "Redis ($REDIS_HOST:$REDIS_PORT)" redis_answers
  log "Redis: answering on $REDIS_HOST:$REDIS_PORT"
}

# ---------------------------------------------------------------- NATS
# The first line a NATS server sends is `INFO {...}`; JetStream shows as "jetstream":true.
NATS_INFO=""
nats_info() {
  NATS_INFO="$(timeout 3 bash -c "exec 3<>/dev/tcp/$NATS_HOST/$NATS_PORT && head -n 1 <&3" 2>/dev/null || true)"
}
nats_answers() {
  nats_info
  [[ "$NATS_INFO" == INFO* ]]
}

nats_check_jetstream() {
  if [[ "$NATS_INFO" != *'"jetstream":true'* ]]; then
    die "NATS answers on $NATS_HOST:$NATS_PORT but without JetStream (restart it with -js; not done here)"
  fi
}

ensure_nats() {
  if [[ ! -x /usr/sbin/nats-server ]]; then
    log "NATS: /usr/sbin/nats-server missing, installing"
    apt_install nats-server
  fi

  if nats_answers; then
    log "NATS: already answering on $NATS_HOST:$NATS_PORT"
    nats_check_jetstream
    return 0
  fi
  log "NATS: not answering, starting nats-server with JetStream"
  mkdir -p "$NATS_STORE_DIR"
  start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$NATS_PIDFILE" \
    --exec /usr/sbin/nats-server -- \
    -a "$NATS_HOST" -p "$NATS_PORT" -js -sd "$NATS_STORE_DIR" -l "$NATS_LOG" ||
    log "NATS: start-stop-daemon failed (waiting anyway; see $NATS_LOG)"
  wait_for "NATS ($NATS_HOST:$NATS_PORT)" nats_answers
  nats_check_jetstream
  log "NATS: answering on $NATS_HOST:$NATS_PORT (JetStream on)"
}

ensure_postgres
ensure_redis
ensure_nats
log "all services up"
