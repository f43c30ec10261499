#!/usr/bin/env bash
# Run a throwaway PostgreSQL server (Debian's packages) on 127.0.0.1 for tests.
#
#   postgres.sh start DIR PORT   initdb DIR (once), start the server, wait until it accepts connections
#   postgres.sh stop DIR         stop the server started in DIR
#
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
# The database superuser is `postgres` with trust authentication on loopback only.
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bindir" ]; then
  echo "postgres.sh: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1
fi

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local dir=$1 port=$2
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  # fsync off: a test server's data is thrown away; durability is not what these tests measure.
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200" \
    >/dev/null || { tail -n 30 "$dir/server.log" >&2; exit 1; }
  echo "postgres.sh: PostgreSQL up on 127.0.0.1:$port (data in $dir)" >&2
}

stop() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
}

case "${1:-}" in
  start) start "${2:?data directory}" "${3:?port}" ;;
  stop) stop "${2:?data directory}" ;;
  *) echo "usage: postgres.sh start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
