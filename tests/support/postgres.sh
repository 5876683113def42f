# Starts a throwaway PostgreSQL cluster on 127.0.0.1 and exports CALLGATE_TEST_POSTGRES_URL, an admin URL
# the tests use to create one database each. Sourced by tests/run.sh; usable by hand:
#   source tests/support/postgres.sh && postgres_start
PG_PORT="${CALLGATE_TEST_PG_PORT:-55432}"
PG_DIR="${CALLGATE_TEST_PG_DIR:-/tmp/callgate-test-pg}"

postgres_bin() {
  local v
  v=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
  echo "/usr/lib/postgresql/$v/bin"
}

# PostgreSQL refuses to run as root, so the cluster belongs to the postgres system user when we are root.
pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_start() {
  local bin
  bin=$(postgres_bin)
  export CALLGATE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:${PG_PORT}/postgres"
  if pg_as_owner "$bin/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1; then
    # Someone else's cluster (another run on this machine): use it, and leave it running afterwards.
    PG_STARTED_HERE=0
    return 0
  fi
  PG_STARTED_HERE=1
  rm -rf "$PG_DIR"
  mkdir -p "$PG_DIR"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DIR"
  pg_as_owner "$bin/initdb" -D "$PG_DIR" -U postgres --auth=trust -E UTF8 >/dev/null
  pg_as_owner "$bin/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=${PG_PORT} -c unix_socket_directories=${PG_DIR} -c max_connections=200 -c fsync=off" \
    start >/dev/null
}

postgres_stop() {
  [ "${PG_STARTED_HERE:-0}" = 1 ] || return 0
  pg_as_owner "$(postgres_bin)/pg_ctl" -D "$PG_DIR" -m fast stop >/dev/null 2>&1 || true
}
