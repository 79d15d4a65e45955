#!/usr/bin/env bash
# The load command: builds the app (.wasm) and the devhost, then runs tests/e2e/examples/load.rs, which
# starts a throwaway PostgreSQL, the emulated workspace and N host processes (the devhost or a
# real Spin: $SPIN, else `spin` on the PATH; or `wasmtime serve` of the standard-WASI build) on
# one key-value store, and prints a table.
# Options: ./scripts/load.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v redis-server >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql redis-server >/dev/null
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
unset RUST_BACKTRACE
cargo build -q --target wasm32-wasip2 --release -p lakebase-notes
# The WASIp2 build for `--flavour p2` (its own invocation: spin-sdk 7 must not join it).
cargo build -q --target wasm32-wasip2 --release -p lakebase-notes-p2
# The standard-WASI build for `--hosts wasmtime` (its own invocation: no spin-sdk joins it).
cargo build -q --target wasm32-wasip2 --release -p lakebase-notes-wasi
cargo build -q -p lakebase-devhost --bin devhost
exec cargo run -q -p lakebase-e2e --example load -- "$@"
