#!/usr/bin/env bash
# Runs every check and test of the project. Installs what it needs first (idempotent):
# the wasm32-wasip2 target, PostgreSQL and Redis from Debian's packages, python3-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
# ring (TLS in the standard-WASI build) compiles C for wasm32 with clang.
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
if ((${#need_apt[@]})); then
    echo "==> installing ${need_apt[*]} from Debian's packages"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy

# Tests print their own messages; keep them free of backtraces.
unset RUST_BACKTRACE

echo "==> format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

echo "==> the library as a crate: docs without warnings, cargo publish --dry-run"
RUSTDOCFLAGS="-D warnings" cargo doc -q -p lakebase-spin --no-deps
cargo publish -q --dry-run -p lakebase-spin --allow-dirty

echo "==> structure: the core builds without spin-sdk; the library's tests build no wasmtime; one WIT tree"
cargo check -q -p lakebase-spin --no-default-features
if cargo tree -p lakebase-spin -e normal,dev --prefix none | grep -q '^wasmtime '; then
    echo "lakebase-spin's own dependencies (normal, dev) include wasmtime" >&2; exit 1
fi
dupes="$(git ls-files '*.wit' | xargs sha256sum | sort | uniq -w64 -D)"
if [ -n "$dupes" ]; then echo "WIT files committed twice with the same content:"$'\n'"$dupes" >&2; exit 1; fi
if [ -n "$(git ls-files '*.pyc' '*__pycache__*')" ]; then echo "generated Python files are committed" >&2; exit 1; fi

echo "==> generated code: the plugin's bindings match their generator"
./crates/plugin/generate-bindings.sh --check

echo "==> the components (release .wasm): app, plugin, Rust consumers, deny adapter; Python consumer"
cargo build --target wasm32-wasip2 --release \
    -p lakebase-notes -p lakebase-plugin -p lakebase-pg-consumer -p lakebase-deny-adapter \
    -p lakebase-credentials-consumer
./tests/python-consumer/build.sh

echo "==> the standard-WASI build (its own invocation: no spin-sdk may join it by feature unification)"
cargo build --target wasm32-wasip2 --release -p lakebase-notes-wasi

# The end-to-end scenarios run on the devhost and, when a real Spin is found ($SPIN, else `spin`
# on the PATH), on Spin too.
if [ -n "${SPIN:-}" ] && command -v "$SPIN" >/dev/null 2>&1; then
    case "$SPIN" in */*) SPIN="$(cd "$(dirname "$SPIN")" && pwd)/$(basename "$SPIN")" ;; *) SPIN="$(command -v "$SPIN")" ;; esac
    export SPIN
    spin_tier="Spin tier: $("$SPIN" --version) ($SPIN)"
elif [ -z "${SPIN:-}" ] && command -v spin >/dev/null 2>&1; then
    spin_tier="Spin tier: $(spin --version) ($(command -v spin))"
else
    unset SPIN
    spin_tier="Spin tier NOT run: no Spin CLI (set SPIN=/path/to/spin or put spin on the PATH); devhost tier only"
fi
# The standard-WASI scenarios run on `wasmtime serve` when one is found ($WASMTIME, else
# `wasmtime` on the PATH).
if [ -n "${WASMTIME:-}" ] && command -v "$WASMTIME" >/dev/null 2>&1; then
    case "$WASMTIME" in */*) WASMTIME="$(cd "$(dirname "$WASMTIME")" && pwd)/$(basename "$WASMTIME")" ;; *) WASMTIME="$(command -v "$WASMTIME")" ;; esac
    export WASMTIME
    wasmtime_tier="wasmtime tier: $("$WASMTIME" --version) ($WASMTIME)"
elif [ -z "${WASMTIME:-}" ] && command -v wasmtime >/dev/null 2>&1; then
    wasmtime_tier="wasmtime tier: $(wasmtime --version) ($(command -v wasmtime))"
else
    unset WASMTIME
    wasmtime_tier="wasmtime tier NOT run: no wasmtime (set WASMTIME=/path/to/wasmtime or put wasmtime on the PATH)"
fi
echo "==> tests ($spin_tier; $wasmtime_tier)"
cargo test --workspace

echo "==> the run command under Ctrl-C, in a pseudo-terminal (devhost, then as run.sh picks)"
RUN_HOST=devhost ./tests/run-ctrl-c.sh
if [ -n "${SPIN:-}" ] || command -v spin >/dev/null 2>&1; then ./tests/run-ctrl-c.sh; fi
echo "==> done. $spin_tier; $wasmtime_tier"
