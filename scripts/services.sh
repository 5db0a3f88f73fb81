# Sourced by scripts/run, scripts/test and scripts/bench: makes sure PostgreSQL and Redis
# answer on 127.0.0.1, starting them (and installing them with apt-get) only when needed.
# Uses what is already running when something is: CI machines come with both.

set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=6379

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  log "installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q "$@" >/dev/null 2>&1 || {
    as_root apt-get update -q >/dev/null
    as_root apt-get install -y -q "$@" >/dev/null
  }
}

ensure_postgres() {
  if port_open "$PG_PORT"; then return; fi
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql postgresql-client
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  # A developer machine: let local TCP connections in without a password, as the
  # default DATABASE_URL expects (postgres://postgres@127.0.0.1:5432/estate).
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    log "allowing trusted local TCP connections in $hba"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster "$version" main restart
  for _ in $(seq 1 50); do port_open "$PG_PORT" && return; sleep 0.2; done
  log "PostgreSQL did not come up on port $PG_PORT"; exit 1
}

ensure_redis() {
  if port_open "$REDIS_PORT"; then return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/estate.log
  for _ in $(seq 1 50); do port_open "$REDIS_PORT" && return; sleep 0.2; done
  log "Redis did not come up on port $REDIS_PORT"; exit 1
}

ensure_psql() {
  command -v psql >/dev/null || apt_install postgresql-client
}

# Creates the database named in DATABASE_URL when it does not exist yet.
ensure_database() {
  ensure_psql
  local url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/estate}"
  local name="${url##*/}"; name="${name%%\?*}"
  local server="${url%/*}/postgres"
  if [ "$(psql "$server" -Atc "SELECT 1 FROM pg_database WHERE datname = '$name'")" != "1" ]; then
    log "creating database $name"
    psql "$server" -qc "CREATE DATABASE \"$name\""
  fi
}

ensure_cargo() {
  if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null || { log "cargo not found: install Rust from https://rustup.rs"; exit 1; }
}

ensure_services() {
  ensure_cargo
  ensure_postgres
  ensure_redis
}

# The SMTP server the tests send mail to: aiosmtpd (from PyPI), writing each message into a
# maildir the tests read. Reused when one already listens on the port.
SMTP_TEST_PORT="${SMTP_TEST_PORT:-2525}"
export TEST_SMTP_URL="smtp://127.0.0.1:$SMTP_TEST_PORT"
export TEST_MAILDIR="${TEST_MAILDIR:-${TMPDIR:-/tmp}/estate-test-mail}"

ensure_test_smtp() {
  if port_open "$SMTP_TEST_PORT"; then return; fi
  command -v python3 >/dev/null || apt_install python3 python3-pip
  if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
    log "installing aiosmtpd (the tests' SMTP server) with pip"
    python3 -m pip install -q --user aiosmtpd 2>/dev/null \
      || python3 -m pip install -q --user --break-system-packages aiosmtpd
  fi
  mkdir -p "$TEST_MAILDIR"/{cur,new,tmp}
  log "starting the test SMTP server on port $SMTP_TEST_PORT (mail in $TEST_MAILDIR)"
  nohup python3 -m aiosmtpd -n -l "127.0.0.1:$SMTP_TEST_PORT" \
    -c aiosmtpd.handlers.Mailbox "$TEST_MAILDIR" >"${TMPDIR:-/tmp}/estate-test-smtp.log" 2>&1 &
  for _ in $(seq 1 50); do port_open "$SMTP_TEST_PORT" && return; sleep 0.2; done
  log "the test SMTP server did not come up on port $SMTP_TEST_PORT"; exit 1
}
