#!/usr/bin/env bash
# The main job, end to end on one machine: a provisioning server on its embedded SQLite
# defaults, a partner with a customer account, and an agent that enrolls into it with the
# customer's registration code. Everything lives in a temp directory and stops on exit.
#
#   scripts/demo.sh                 # builds, then runs on 127.0.0.1:8443
#   LISTEN=127.0.0.1:0 scripts/demo.sh   # any free port
#   CONTERA_BIN_DIR=target/debug scripts/demo.sh   # use already built binaries
set -euo pipefail
cd "$(dirname "$0")/.."

LISTEN=${LISTEN:-127.0.0.1:8443}
if [ -z "${CONTERA_BIN_DIR:-}" ]; then
  cargo build --quiet --bins
  CONTERA_BIN_DIR=${CARGO_TARGET_DIR:-target}/debug
fi
server_bin=$CONTERA_BIN_DIR/contera-provisioning
agent_bin=$CONTERA_BIN_DIR/contera-agent

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "Starting contera-provisioning (data in $work/server)"
"$server_bin" serve --data-dir "$work/server" --listen "$LISTEN" --heartbeat-interval 2 \
  >"$work/server.out" 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 200); do
  grep -q 'listening on' "$work/server.out" 2>/dev/null && break
  sleep 0.05
done
url=$(sed -n 's/^contera-provisioning listening on //p' "$work/server.out")
[ -n "$url" ] || { cat "$work/server.log"; echo "server did not start" >&2; exit 1; }
url=${url/127.0.0.1/localhost}
echo "server at $url; agents trust $work/server/tls/ca.pem"

admin() { "$server_bin" --data-dir "$work/server" "$@"; }
json_field() { sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}$/\1/p"; }

step "Creating a partner and a customer account"
partner=$(admin accounts create --name "Acme Integrators" --kind partner --json | json_field id)
customer_json=$(admin accounts create --name "Store 12" --kind customer --parent "$partner" --json)
code=$(echo "$customer_json" | json_field registration_code)
admin accounts list
echo "registration code of Store 12: $code"

step "Starting contera-agent"
cat >"$work/agent.toml" <<TOML
[server]
url = "$url"
ca_file = "$work/server/tls/ca.pem"

[agent]
state_dir = "$work/agent/state"
control_socket = "$work/agent/control.sock"

[recorder]
serial = "DEMO-0001"
model = "NV-16"
TOML
"$agent_bin" --config "$work/agent.toml" run 2>"$work/agent.log" &
pids+=($!)
for _ in $(seq 200); do [ -S "$work/agent/control.sock" ] && break; sleep 0.05; done

step "Installer types the code: contera-agent enroll --code $code"
"$agent_bin" --config "$work/agent.toml" enroll --code "$code"

step "The recorder shows online in Store 12"
for _ in $(seq 100); do
  admin recorders list | grep -q online && break
  sleep 0.1
done
admin recorders list
"$agent_bin" --config "$work/agent.toml" status

echo
echo "Done. Logs: server and agent stop now; run with your own data dir to keep them:"
echo "  $server_bin serve --data-dir DIR --listen 127.0.0.1:8443"
