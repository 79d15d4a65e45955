#!/usr/bin/env bash
# Regenerates src/bindings.rs from ../../wit (world lakebase:postgres/plugin) with the
# wit-bindgen CLI (`cargo install wit-bindgen-cli --version 0.57.1 --locked`, the version that
# spin-sdk 7 re-exports). The wit-bindgen macro cannot be used here: for a world that imports and
# exports spin:postgres it does not give the exported row stream a payload type, and it would
# make the exported types distinct from the imported ones. The CLI's
# --merge-structurally-equal-types makes them the same types, so the host's row stream is
# returned to the caller as it is, without copying a row.
set -euo pipefail
cd "$(dirname "$0")"
wit-bindgen rust ../../wit \
    --world lakebase:postgres/plugin \
    --merge-structurally-equal-types \
    --runtime-path spin_sdk::wit_bindgen::rt \
    --with spin:key-value/key-value@3.0.0=spin_sdk::key_value::wit::key_value \
    --with spin:variables/variables@3.0.0=spin_sdk::variables::wit::variables \
    --generate-all \
    --format \
    --out-dir target-bindings
mv target-bindings/plugin.rs src/bindings.rs
rmdir target-bindings
