#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests.
#   scripts/pg.sh start DIR   installs PostgreSQL from Debian's packages if
#                             missing, runs initdb in DIR, starts the server
#                             on a free loopback port and prints its URL
#   scripts/pg.sh stop DIR    stops it and removes DIR
#   scripts/pg.sh pause DIR   stops the server, keeping DIR (tests of an outage)
#   scripts/pg.sh resume DIR  starts it again on the same port
# As root, the cluster runs as the postgres user (PostgreSQL refuses root).
set -euo pipefail
cmd=${1:?start or stop}
dir=${2:?directory}

pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case $cmd in
start)
  if [ -z "$(pgbin)" ]; then
    echo "installing PostgreSQL from Debian's packages" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 ||
      { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
  fi
  bin=$(pgbin)
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
  as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 20000))
    if as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 -c fsync=on -c synchronous_commit=on" >/dev/null; then
      echo "$port" > "$dir/port"
      echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
      exit 0
    fi
  done
  echo "PostgreSQL did not start; see $dir/server.log" >&2
  cat "$dir/server.log" >&2 || true
  exit 1
  ;;
pause)
  as_pg "$(pgbin)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  ;;
resume)
  port=$(cat "$dir/port")
  as_pg "$(pgbin)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 -c fsync=on -c synchronous_commit=on" >/dev/null
  ;;
stop)
  bin=$(pgbin)
  if [ -n "$bin" ] && [ -d "$dir/data" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
esac
