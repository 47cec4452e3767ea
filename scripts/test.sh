#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need when missing,
# starts it on 127.0.0.1, runs the tests, and stops it again.
#
# - PostgreSQL (Debian's `postgresql` package): a throwaway cluster in a
#   temporary directory on a free port; its URL goes to the tests as
#   TEST_POSTGRES_URL. Set TEST_POSTGRES_URL yourself to use another server.
# - SQLite is compiled in; every other server the tests need (trailkeep
#   itself, SSE upstreams) is started by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/trailkeep-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo not found; install the Rust toolchain (rustup) first" >&2
    exit 2
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

start_postgres() {
    if [ -n "${TEST_POSTGRES_URL:-}" ]; then
        return
    fi
    local bin
    bin=$(pg_bin)
    if [ -z "$bin" ]; then
        echo "scripts/test.sh: installing PostgreSQL from Debian's packages" >&2
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
        bin=$(pg_bin)
    fi
    PG_DIR=$(mktemp -d /tmp/trailkeep-pg.XXXXXX)
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # initdb refuses to run as root: use the postgres account then.
    local run=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$PG_DIR"
        run=(runuser -u postgres --)
    fi
    "${run[@]}" "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; exit 2; }
    "${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null \
        || { cat "$PG_DIR/server.log" >&2; exit 2; }
    PG_STOP=("${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -m fast stop)
    export TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
    echo "scripts/test.sh: PostgreSQL on 127.0.0.1:$port" >&2
}

stop_all() {
    if [ -n "${PG_STOP+x}" ]; then
        "${PG_STOP[@]}" >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
}
trap stop_all EXIT

start_postgres

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --no-fail-fast "$@"
else
    cargo test --no-fail-fast "$@"
fi
