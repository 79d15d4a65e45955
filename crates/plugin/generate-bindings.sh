#!/usr/bin/env bash
# Regenerates src/bindings.rs from ../../wit (world lakebase:postgres/plugin) with the
# wit-bindgen CLI, version 0.57.1 (the one spin-sdk 7 re-exports). The wit-bindgen macro cannot
# be used here: for a world that imports and exports spin:postgres it does not give the exported
# row stream a payload type, and it would make the exported types distinct from the imported
# ones. The CLI's --merge-structurally-equal-types makes them the same types, so the host's row
# stream is returned to the caller as it is, without copying a row.
#
#   ./generate-bindings.sh           rewrite src/bindings.rs
#   ./generate-bindings.sh --check   fail if src/bindings.rs differs from what the CLI generates
#
# The CLI is installed into target/tools when it is not on the PATH (idempotent).
set -euo pipefail
cd "$(dirname "$0")"
version=0.57.1
tools="$(cd ../.. && pwd)/target/tools"
if command -v wit-bindgen >/dev/null && wit-bindgen --version | grep -q " $version"; then
    bin=wit-bindgen
else
    bin="$tools/bin/wit-bindgen"
    if ! { [ -x "$bin" ] && "$bin" --version | grep -q " $version"; }; then
        echo "==> installing wit-bindgen-cli $version into $tools"
        cargo install -q wit-bindgen-cli --version "$version" --locked --root "$tools"
    fi
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$bin" rust ../../wit \
    --world lakebase:postgres/plugin \
    --merge-structurally-equal-types \
    --runtime-path spin_sdk::wit_bindgen::rt \
    --with spin:key-value/key-value@3.0.0=spin_sdk::key_value::wit::key_value \
    --with spin:variables/variables@3.0.0=spin_sdk::variables::wit::variables \
    --generate-all \
    --format \
    --out-dir "$out"
if [ "${1:-}" = "--check" ]; then
    if ! diff -q "$out/plugin.rs" src/bindings.rs >/dev/null; then
        diff -u src/bindings.rs "$out/plugin.rs" | head -40
        echo "crates/plugin/src/bindings.rs is not what wit-bindgen $version generates from wit/: run crates/plugin/generate-bindings.sh" >&2
        exit 1
    fi
    echo "crates/plugin/src/bindings.rs matches wit-bindgen $version's output"
else
    cp "$out/plugin.rs" src/bindings.rs
fi
