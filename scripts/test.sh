#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need when missing.
#
# Today the suite needs only the Rust toolchain: SQLite is compiled in
# (rusqlite "bundled") and every server the tests use is the trailkeep
# binary itself, started on 127.0.0.1 by the tests. PostgreSQL and an S3
# server arrive with their issues; this script is where they get installed
# and started.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/trailkeep-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo not found; install the Rust toolchain (rustup) first" >&2
    exit 2
fi

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --no-fail-fast "$@"
else
    cargo test --no-fail-fast "$@"
fi
