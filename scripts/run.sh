#!/usr/bin/env bash
# Runs the app locally on the embedded default: a throwaway PostgreSQL, the emulated Databricks
# workspace in front of it, and the app's release .wasm on the devhost. Ctrl-C stops everything.
# Installs what it needs (wasm32-wasip2 target, PostgreSQL from Debian's packages) when missing.
#
# With a real Spin and real Databricks variables, use `spin build && spin up` instead (README).
set -euo pipefail
cd "$(dirname "$0")/.."
LISTEN="${LISTEN:-127.0.0.1:3000}"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

echo "==> building the app (.wasm), the devhost and the emulator"
cargo build --target wasm32-wasip2 --release -p lakebase-notes
cargo build -p lakebase-devhost -p lakebase-emulator -p lakebase-testkit --bins

workdir="$(mktemp -d)"; chmod 755 "$workdir"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    exec 3>&- 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

# PostgreSQL: lives while fd 3 (its stdin) is open.
mkfifo "$workdir/pg.in"
./target/debug/throwaway-pg < "$workdir/pg.in" > "$workdir/pg.json" &
pids+=($!)
exec 3>"$workdir/pg.in"
for _ in $(seq 100); do [ -s "$workdir/pg.json" ] && break; sleep 0.1; done
pg_port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$workdir/pg.json")
pg_password=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["password"])' "$workdir/pg.json")

LAKEBASE_EMULATOR_PG_ADMIN_PASSWORD="$pg_password" ./target/debug/lakebase-emulator \
    --listen 127.0.0.1:0 --pg-backend "127.0.0.1:$pg_port" --quiet > "$workdir/emu.json" &
pids+=($!)
for _ in $(seq 100); do [ -s "$workdir/emu.json" ] && break; sleep 0.1; done
read -r http_url proxy_port client_id endpoint < <(python3 -c '
import json,sys; e=json.load(open(sys.argv[1]))
print(e["http_url"], e["pg_port"], e["client_ids"][0], e["endpoints"][0])' "$workdir/emu.json")

echo "==> PostgreSQL on 127.0.0.1:$pg_port, emulated workspace at $http_url (login proxy on port $proxy_port)"
# The emulator's built-in service principal secret (a local test value, not a real secret).
SPIN_VARIABLE_DATABRICKS_CLIENT_SECRET="dose-emulator-client-secret-0123456789" ./target/debug/devhost up \
    --listen "$LISTEN" --state-dir "$workdir/state" \
    --variable "databricks_host=$http_url" \
    --variable "databricks_client_id=$client_id" \
    --variable "lakebase_endpoint=$endpoint" \
    --variable "pghost=127.0.0.1" --variable "pgport=$proxy_port" --variable "pgsslmode=disable" &
pids+=($!)
sleep 1
cat <<EOT

The app is up. Try:
  curl http://$LISTEN/health
  curl -X POST http://$LISTEN/notes -H 'content-type: application/json' -d '{"text":"hello"}'
  curl http://$LISTEN/notes
Ctrl-C stops the app, the emulator and PostgreSQL.
EOT
wait "${pids[2]}"
