#!/usr/bin/env bash
# Runs the app locally on the embedded default: a throwaway PostgreSQL, the emulated Databricks
# workspace in front of it, and the app's release .wasm on a real Spin when one is found ($SPIN,
# else `spin` on the PATH; `RUN_HOST=devhost` forces the devhost), else on the devhost. Ctrl-C,
# SIGTERM or a failing step stops all three and removes the temporary directory.
# Installs what it needs (wasm32-wasip2 target, PostgreSQL from Debian's packages) when missing.
#
# With real Databricks variables, use `spin build && spin up` instead (README).
set -euo pipefail
cd "$(dirname "$0")/.."
LISTEN="${LISTEN:-127.0.0.1:3000}"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

spin_bin=""
if [ "${RUN_HOST:-}" != "devhost" ]; then
    if [ -n "${SPIN:-}" ] && command -v "$SPIN" >/dev/null 2>&1; then
        spin_bin="$(command -v "$SPIN")"
    elif command -v spin >/dev/null 2>&1; then
        spin_bin="$(command -v spin)"
    fi
fi

# The same builds as the test command (then these are no-ops), and the two small helpers.
echo "==> building the app (.wasm), the emulator and the throwaway PostgreSQL helper"
cargo build -q --target wasm32-wasip2 --release -p lakebase-notes
cargo build -q -p lakebase-emulator -p lakebase-testkit --bins
if [ -z "$spin_bin" ]; then
    echo "==> building the devhost (no Spin found: set SPIN=/path/to/spin to run on Spin)"
    cargo build -q -p lakebase-devhost --bin devhost
fi

workdir="$(mktemp -d)"; chmod 755 "$workdir"
pids=()
pg_pid=""
cleaned=0
cleanup() {
    [ "$cleaned" = 1 ] && return
    cleaned=1
    trap '' INT TERM
    # The host and the emulator: each runs in a process group of its own (setsid below).
    for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
    # PostgreSQL stops when its helper's stdin closes; never kill the helper (the cluster
    # would be left running).
    exec 3>&- 2>/dev/null || true
    if [ -n "$pg_pid" ]; then wait "$pg_pid" 2>/dev/null || true; fi
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$workdir"
    echo "==> stopped: the app, the emulator and PostgreSQL; removed $workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Every child in a session of its own, so that the terminal's Ctrl-C reaches only this script,
# which then stops them in order.
mkfifo "$workdir/pg.in"
setsid ./target/debug/throwaway-pg < "$workdir/pg.in" > "$workdir/pg.json" &
pg_pid=$!
exec 3>"$workdir/pg.in"
for _ in $(seq 300); do [ -s "$workdir/pg.json" ] && break; sleep 0.1; done
[ -s "$workdir/pg.json" ] || { echo "PostgreSQL did not start" >&2; exit 1; }
pg_port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$workdir/pg.json")
pg_password=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["password"])' "$workdir/pg.json")

LAKEBASE_EMULATOR_PG_ADMIN_PASSWORD="$pg_password" setsid ./target/debug/lakebase-emulator \
    --listen 127.0.0.1:0 --pg-backend "127.0.0.1:$pg_port" --quiet > "$workdir/emu.json" &
pids+=($!)
for _ in $(seq 100); do [ -s "$workdir/emu.json" ] && break; sleep 0.1; done
[ -s "$workdir/emu.json" ] || { echo "the emulator did not start" >&2; exit 1; }
read -r http_url proxy_port client_id endpoint < <(python3 -c '
import json,sys; e=json.load(open(sys.argv[1]))
print(e["http_url"], e["pg_port"], e["client_ids"][0], e["endpoints"][0])' "$workdir/emu.json")

echo "==> PostgreSQL on 127.0.0.1:$pg_port, emulated workspace at $http_url (login proxy on port $proxy_port)"
export SPIN_VARIABLE_DATABRICKS_HOST="$http_url"
export SPIN_VARIABLE_DATABRICKS_CLIENT_ID="$client_id"
# The emulator's built-in service principal secret (a local test value, not a real secret).
export SPIN_VARIABLE_DATABRICKS_CLIENT_SECRET="dose-emulator-client-secret-0123456789"
export SPIN_VARIABLE_LAKEBASE_ENDPOINT="$endpoint"
export SPIN_VARIABLE_PGHOST=127.0.0.1 SPIN_VARIABLE_PGPORT="$proxy_port" SPIN_VARIABLE_PGSSLMODE=disable
if [ -n "$spin_bin" ]; then
    echo "==> serving on Spin: $("$spin_bin" --version) ($spin_bin)"
    RUST_BACKTRACE=0 setsid "$spin_bin" up --listen "$LISTEN" --state-dir "$workdir/state" &
else
    echo "==> serving on the devhost (a stand-in for Spin)"
    setsid ./target/debug/devhost up --listen "$LISTEN" --state-dir "$workdir/state" &
fi
host_pid=$!
pids+=($host_pid)
for _ in $(seq 300); do
    curl -s -o /dev/null "http://$LISTEN/" && break
    kill -0 "$host_pid" 2>/dev/null || { echo "the host exited" >&2; exit 1; }
    sleep 0.1
done
cat <<EOT

The app is up. Try:
  curl http://$LISTEN/health
  curl -X POST http://$LISTEN/notes -H 'content-type: application/json' -d '{"text":"hello"}'
  curl http://$LISTEN/notes
Ctrl-C stops the app, the emulator and PostgreSQL.
EOT
wait "$host_pid"
