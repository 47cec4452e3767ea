#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need when missing,
# starts it on 127.0.0.1, runs the tests, and stops it again.
#
# - PostgreSQL (Debian's `postgresql` package): a throwaway cluster in a
#   temporary directory on a free port; its URL goes to the tests as
#   TEST_POSTGRES_URL. Set TEST_POSTGRES_URL yourself to use another server.
# - moto server (PyPI `moto[server]`): the S3 API, which answers a second
#   create-only PUT with 412; bucket `trailkeep-test`, and
#   `trailkeep-test-lock` with Object Lock enabled; TEST_S3_ENDPOINT.
# - Azurite (npm `azurite`, installed under ~/.cache/trailkeep-tools):
#   Azure Blob; container `trailkeep-test`; AZURITE_BLOB_STORAGE_URL.
# - promtool (Debian `prometheus`): checks deploy/'s alert rules and lints
#   /metrics (tests/operations.rs).
# - schemathesis (PyPI), into $TOOLS/venv: tests/openapi.rs runs it against
#   a local server (TEST_SCHEMATHESIS).
# - duckdb (with its httpfs extension from PyPI's duckdb-ext-httpfs),
#   pyspark and sqlglot (PyPI), into $TOOLS/venv, and a Java
#   runtime for Spark (Debian's `default-jre-headless`): tests/warehouse.rs
#   runs `trailkeep ddl`'s DuckDB and Spark SQL in those engines and parses
#   the Athena, BigQuery and Trino SQL with sqlglot (TEST_DUCKDB_PYTHON,
#   TEST_PYSPARK_PYTHON, TEST_SQLGLOT_PYTHON: a Python that imports each).
# - GCS has no local emulator that honours create-only preconditions: the
#   tests start their own fake of the XML API subset object_store uses.
# - chromium and chromedriver (Debian's `chromium`, `chromium-driver`, with
#   `fonts-liberation` for legible screenshots): tests/ui.rs drives the web
#   console in a headless browser (TEST_CHROMEDRIVER, TEST_CHROMIUM) and
#   saves screenshots under artifacts/ui-screenshots/.
# - Go (Debian's `golang-go`) with golang.org/x/mod (Debian's
#   `golang-golang-x-mod-dev`, in GOPATH /usr/share/gocode; nothing is
#   downloaded): tests/console_events.rs checks the console's evidence file
#   with Go's sumdb/note and sumdb/tlog (TEST_GO, TEST_GO_GOPATH).
# - SQLite is compiled in; every other server the tests need (trailkeep
#   itself, SSE upstreams, fault-injecting proxies) is started by the tests.
# - Node.js >= 20 and npm (the machine's, else Debian's `nodejs`, `npm`):
#   after the cargo tests, `npm ci` and `npm test` in clients/node run the
#   Node client's suite against the trailkeep binary cargo just built.
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
    # TLS: a throwaway CA and a server certificate for IP 127.0.0.1 (the
    # sslmode tests), plus an unrelated CA that must be refused.
    command -v openssl >/dev/null 2>&1 || { as_root apt-get update -qq; DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq openssl >/dev/null; }
    local tls="$PG_DIR/tls"
    mkdir -p "$tls"
    (
        cd "$tls"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=trailkeep test CA" 2>/dev/null
        openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other-ca.crt -days 2 -subj "/CN=unrelated CA" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext 2>/dev/null
        chmod 600 server.key
    )
    [ "$(id -u)" = 0 ] && chown -R postgres: "$tls"
    "${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=300 -c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key" start >/dev/null \
        || { cat "$PG_DIR/server.log" >&2; exit 2; }
    PG_STOP=("${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -m fast stop)
    export TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
    export TEST_POSTGRES_CA="$tls/ca.crt" TEST_POSTGRES_OTHER_CA="$tls/other-ca.crt"
    echo "scripts/test.sh: PostgreSQL on 127.0.0.1:$port" >&2
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
    for _ in $(seq 1 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "scripts/test.sh: $2 did not start on port $1" >&2
    cat "$3" >&2
    exit 2
}

TOOLS="${TRAILKEEP_TOOLS:-$HOME/.cache/trailkeep-tools}"
PIDS=()

start_moto() {
    if [ -n "${TEST_S3_ENDPOINT:-}" ]; then
        return
    fi
    if ! command -v moto_server >/dev/null 2>&1 && [ ! -x "$TOOLS/venv/bin/moto_server" ]; then
        echo "scripts/test.sh: installing moto[server] from PyPI into $TOOLS/venv" >&2
        python3 -m venv "$TOOLS/venv" >/dev/null
        "$TOOLS/venv/bin/pip" install -q 'moto[server]>=5,<6' boto3
    fi
    local moto py=python3 port log
    moto=$(command -v moto_server || echo "$TOOLS/venv/bin/moto_server")
    [ -x "$TOOLS/venv/bin/python3" ] && [ "$moto" = "$TOOLS/venv/bin/moto_server" ] && py="$TOOLS/venv/bin/python3"
    port=$(free_port)
    log=$(mktemp /tmp/trailkeep-moto.XXXXXX)
    "$moto" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    PIDS+=($!)
    wait_port "$port" "moto server" "$log"
    "$py" scripts/test_servers.py s3 "http://127.0.0.1:$port" trailkeep-test
    export TEST_S3_ENDPOINT="http://127.0.0.1:$port" TEST_S3_BUCKET=trailkeep-test TEST_S3_LOCK_BUCKET=trailkeep-test-lock
    export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
    echo "scripts/test.sh: moto S3 on 127.0.0.1:$port" >&2
}

AZURITE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

start_azurite() {
    if [ -n "${AZURITE_BLOB_STORAGE_URL:-}" ]; then
        return
    fi
    local bin="$TOOLS/azurite/node_modules/.bin/azurite-blob" port log
    if [ ! -x "$bin" ]; then
        if ! command -v npm >/dev/null 2>&1; then
            echo "scripts/test.sh: installing Node.js and npm from Debian's packages" >&2
            as_root apt-get update -qq
            DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
        fi
        echo "scripts/test.sh: installing azurite from npm into $TOOLS/azurite" >&2
        mkdir -p "$TOOLS/azurite"
        (cd "$TOOLS/azurite" && npm install --no-audit --no-fund -s azurite@3 >/dev/null)
    fi
    port=$(free_port)
    log=$(mktemp /tmp/trailkeep-azurite.XXXXXX)
    "$bin" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence --disableTelemetry \
        --skipApiVersionCheck --loose >"$log" 2>&1 &
    PIDS+=($!)
    wait_port "$port" "azurite" "$log"
    python3 scripts/test_servers.py azure "http://127.0.0.1:$port" devstoreaccount1 "$AZURITE_KEY" trailkeep-test
    export AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$port" TEST_AZURE_CONTAINER=trailkeep-test
    echo "scripts/test.sh: Azurite blob on 127.0.0.1:$port" >&2
}

install_schemathesis() {
    if [ -n "${TEST_SCHEMATHESIS:-}" ]; then
        return
    fi
    if [ ! -x "$TOOLS/venv/bin/schemathesis" ]; then
        echo "scripts/test.sh: installing schemathesis from PyPI into $TOOLS/venv" >&2
        [ -x "$TOOLS/venv/bin/pip" ] || python3 -m venv "$TOOLS/venv" >/dev/null
        "$TOOLS/venv/bin/pip" install -q 'schemathesis>=4.3,<5'
    fi
    export TEST_SCHEMATHESIS="$TOOLS/venv/bin/schemathesis"
}

# The warehouse engines of tests/warehouse.rs: DuckDB and Spark run the
# definitions `trailkeep ddl` prints, sqlglot parses the other dialects.
install_warehouse_tools() {
    local py="$TOOLS/venv/bin/python3" missing=()
    [ -x "$TOOLS/venv/bin/pip" ] || python3 -m venv "$TOOLS/venv" >/dev/null
    # DuckDB pinned to the version whose httpfs extension PyPI carries
    # (duckdb-ext-httpfs: DuckDB's signed build, checked at LOAD; the
    # extension must match DuckDB exactly, and this machine cannot download
    # extensions from DuckDB's own repository): the s3:// test needs it.
    "$py" -c 'import duckdb, duckdb_ext; assert duckdb.__version__ == "1.4.4"' 2>/dev/null \
        || missing+=('duckdb==1.4.4' 'duckdb-ext-httpfs==1.4.4.20260205')
    "$py" -c 'import sqlglot' 2>/dev/null || missing+=('sqlglot>=30,<31')
    "$py" -c 'import pyspark' 2>/dev/null || missing+=('pyspark>=4,<5')
    if [ ${#missing[@]} -gt 0 ]; then
        echo "scripts/test.sh: installing ${missing[*]} from PyPI into $TOOLS/venv" >&2
        "$TOOLS/venv/bin/pip" install -q "${missing[@]}"
    fi
    # Spark 4 runs on Java 17 or later.
    if ! command -v java >/dev/null 2>&1; then
        echo "scripts/test.sh: installing a Java runtime for Spark (Debian's default-jre-headless)" >&2
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends default-jre-headless >/dev/null
    fi
    export TEST_DUCKDB_PYTHON="${TEST_DUCKDB_PYTHON:-$py}"
    export TEST_PYSPARK_PYTHON="${TEST_PYSPARK_PYTHON:-$py}"
    export TEST_SQLGLOT_PYTHON="${TEST_SQLGLOT_PYTHON:-$py}"
}

# promtool (Debian's `prometheus` package): tests/operations.rs checks the
# alert rules in deploy/ (check rules, test rules) and lints /metrics.
install_promtool() {
    if ! command -v promtool >/dev/null 2>&1; then
        echo "scripts/test.sh: installing promtool (Debian's prometheus package)" >&2
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
        # The package enables its own server; tests need only promtool.
        as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
}

# Debian's chromium and its chromedriver: tests/ui.rs starts chromedriver
# and, through it, a headless chromium (--no-sandbox: CI runs as root).
# Nothing downloads a browser.
install_chromium() {
    if [ -n "${TEST_CHROMEDRIVER:-}" ] && [ -n "${TEST_CHROMIUM:-}" ]; then
        return
    fi
    if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
        echo "scripts/test.sh: installing chromium and chromium-driver from Debian's packages" >&2
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
            chromium chromium-driver fonts-liberation >/dev/null
    fi
    export TEST_CHROMEDRIVER="${TEST_CHROMEDRIVER:-$(command -v chromedriver)}"
    export TEST_CHROMIUM="${TEST_CHROMIUM:-$(command -v chromium)}"
}

# Go and golang.org/x/mod from Debian: an outside check of the evidence
# files (tests/data/go/evidence_check.go), built in GOPATH mode.
install_go_checker() {
    if [ -n "${TEST_GO:-}" ]; then
        return
    fi
    if ! command -v go >/dev/null 2>&1 || [ ! -d /usr/share/gocode/src/golang.org/x/mod/sumdb/tlog ]; then
        echo "scripts/test.sh: installing golang-go and golang-golang-x-mod-dev from Debian's packages" >&2
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
            golang-go golang-golang-x-mod-dev >/dev/null
    fi
    export TEST_GO="${TEST_GO:-$(command -v go)}"
    export TEST_GO_GOPATH="${TEST_GO_GOPATH:-/usr/share/gocode}"
}

stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "${PG_STOP+x}" ]; then
        "${PG_STOP[@]}" >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
}
trap stop_all EXIT

start_postgres
start_moto
start_azurite
install_schemathesis
install_warehouse_tools
install_promtool
install_chromium
install_go_checker

# The Node client's suite (clients/node, `node --test`): against the
# trailkeep binary the cargo run below builds, on Node.js >= 20 (its global
# fetch and AbortSignal.any). Skipped, saying so, when only Node < 20 can be
# had (Debian 12's own nodejs is 18), except under CI, where that fails.
# (Called in an `||` list, where `set -e` does not apply: every step is
# chained with && instead.)
node_tests() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "scripts/test.sh: installing Node.js and npm from Debian's packages" >&2
        as_root apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null \
            || return 1
    fi
    local major
    major=$(node -p 'process.versions.node.split(".")[0]') || return 1
    if [ "$major" -lt 20 ]; then
        echo "scripts/test.sh: SKIPPED clients/node: it needs Node.js >= 20, this machine has $(node --version)" >&2
        # CI must run every suite: a skip there is a failure.
        [ -z "${CI:-}" ]
        return
    fi
    (cd clients/node \
        && npm ci --no-audit --no-fund --loglevel=error \
        && TRAILKEEP_BIN="$CARGO_TARGET_DIR/debug/trailkeep" npm test)
}

# `testing`: crash-test failpoints in the binary; `bench`: the bench
# commands compile and their help is tested. A release build has neither.
status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --no-fail-fast --features testing,bench "$@" || status=$?
else
    cargo test --no-fail-fast --features testing,bench "$@" || status=$?
fi

# A filtered run (arguments for cargo) is about the Rust tests: the Node
# suite runs with the whole suite only (or: cd clients/node && npm test,
# with TRAILKEEP_BIN set). It runs even when a cargo test failed, so one
# run shows both; either failing fails the script.
if [ $# -eq 0 ]; then
    node_tests || { echo "scripts/test.sh: the Node client's tests (clients/node) failed" >&2; status=1; }
fi
exit "$status"
