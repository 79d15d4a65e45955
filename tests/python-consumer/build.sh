#!/usr/bin/env bash
# Builds the Python consumer: a Spin HTTP component (exports wasi:http/handler@0.3.0, imports
# spin:postgres/postgres@4.2.0) made with componentize-py from PyPI, installed into a venv under
# target/. Idempotent. Output: target/python-consumer/py-consumer.wasm
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../target/python-consumer"
COMPONENTIZE_PY_VERSION=0.25.1
mkdir -p "$out"
# A venv that was moved (its scripts name the old path) is made anew.
if ! "$out/venv/bin/pip" --version >/dev/null 2>&1; then rm -rf "$out/venv"; python3 -m venv "$out/venv"; fi
if ! "$out/venv/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
    "$out/venv/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
# Rebuild only when a source changed.
wasm="$out/py-consumer.wasm"
root_wit="$here/../../wit/deps/spin-postgres@4.2.0"
if [ -f "$wasm" ] && [ -z "$(find "$here/src" "$here/wit" "$root_wit" -newer "$wasm" -type f | head -1)" ]; then
    exit 0
fi
# The WIT: this component's world and WASI deps, plus spin:postgres from the repository's one
# WIT tree (not a copy of it).
rm -rf "$out/wit"
cp -r "$here/wit" "$out/wit"
cp -r "$root_wit" "$out/wit/deps/"
cd "$here"
VIRTUAL_ENV="$out/venv" "$out/venv/bin/componentize-py" -d "$out/wit" -w py-consumer \
    componentize -p src app -o "$wasm.tmp"
mv "$wasm.tmp" "$wasm"
