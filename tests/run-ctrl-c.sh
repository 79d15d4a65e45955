#!/usr/bin/env bash
# Tests the run command as a user runs it: ./scripts/run.sh in a pseudo-terminal (tmux), one
# request, then Ctrl-C (SIGINT to the foreground process group). Passes when the app answered,
# and afterwards no PostgreSQL, emulator or host process of that run is left and its temporary
# directory is gone. RUN_HOST=devhost|spin picks the host (default: as run.sh decides).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v tmux >/dev/null || {
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq tmux >/dev/null
}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
session="lakebase-run-test-$$"
log="$(mktemp)"
fail() { echo "run-ctrl-c: FAIL: $*"; echo "--- screen:"; cat "$log"; tmux kill-session -t "$session" 2>/dev/null || true; exit 1; }

tmux new-session -d -s "$session" -x 200 -y 50 \
    "env LISTEN=127.0.0.1:$port RUN_HOST=${RUN_HOST:-} SPIN=${SPIN:-} ./scripts/run.sh 2>&1 | tee -i $log; sleep 2"
for _ in $(seq 600); do
    grep -q "The app is up" "$log" 2>/dev/null && break
    sleep 0.5
done
grep -q "The app is up" "$log" || fail "the app did not come up"
workdir=$(grep -o 'removed [^ ]*' "$log" | head -1 || true)
pg_port=$(grep -o 'PostgreSQL on 127.0.0.1:[0-9]*' "$log" | grep -o '[0-9]*$')
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")
[ "$status" = 200 ] || fail "GET /health answered $status"

tmux send-keys -t "$session" C-c
for _ in $(seq 60); do
    grep -q "==> stopped" "$log" && break
    sleep 0.5
done
grep -q "==> stopped" "$log" || fail "no orderly stop after Ctrl-C"
sleep 1
workdir=$(grep -o 'removed [^ ]*' "$log" | sed 's/removed //')
left=""
pgrep -f "postgres.*port=$pg_port " >/dev/null && left="$left postgres"
pgrep -f "lakebase-emulator.*--pg-backend 127.0.0.1:$pg_port" >/dev/null && left="$left emulator"
pgrep -f "up --listen 127.0.0.1:$port" >/dev/null && left="$left host"
[ -z "$left" ] || fail "left running after Ctrl-C:$left"
[ ! -e "$workdir" ] || fail "$workdir was not removed"
python3 -c 'import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) else 1)' "$pg_port" \
    || fail "PostgreSQL still listens on $pg_port"
tmux kill-session -t "$session" 2>/dev/null || true
rm -f "$log"
echo "run-ctrl-c: ok: the app answered 200, Ctrl-C stopped PostgreSQL, the emulator and the host, and removed $workdir"
