#!/usr/bin/env bash
# The main job, end to end on one machine: a provisioning server on its embedded SQLite
# defaults, a partner with a customer account, and an agent that enrolls into it with the
# customer's registration code. Everything lives in a new temp directory; the server and
# the agent stop when the script ends, the directory stays, and the last lines say how to
# look around in it.
#
#   scripts/demo.sh                 # builds, then runs on 127.0.0.1:8443
#   LISTEN=127.0.0.1:0 scripts/demo.sh   # any free port
#   CONTERA_BIN_DIR=target/debug scripts/demo.sh   # use already built binaries
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

LISTEN=${LISTEN:-127.0.0.1:8443}
# The web console listens beside it: port 8444, or any free port when LISTEN asks for one.
if [ "${LISTEN##*:}" = 0 ]; then default_console=${LISTEN%:*}:0; else default_console=${LISTEN%:*}:8444; fi
CONSOLE_LISTEN=${CONSOLE_LISTEN:-$default_console}
# Prometheus metrics (plain HTTP, loopback): port 9464, or any free port likewise.
if [ "${LISTEN##*:}" = 0 ]; then default_metrics=127.0.0.1:0; else default_metrics=127.0.0.1:9464; fi
METRICS_LISTEN=${METRICS_LISTEN:-$default_metrics}
if [ -z "${CONTERA_BIN_DIR:-}" ]; then
  step "Building contera-provisioning and contera-agent (cargo build --bins): about 5 minutes the first time, seconds after that"
  cargo build --bins
  CONTERA_BIN_DIR=${CARGO_TARGET_DIR:-target}/debug
fi
# Absolute, so the commands printed at the end work from any directory.
CONTERA_BIN_DIR=$(cd "$CONTERA_BIN_DIR" && pwd)
server_bin=$CONTERA_BIN_DIR/contera-provisioning
agent_bin=$CONTERA_BIN_DIR/contera-agent

work=$(mktemp -d "${TMPDIR:-/tmp}/contera-demo.XXXXXX")
pids=()
cleanup() {
  local status=$? i
  # The agent first (it tells the server goodbye), then the server.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ] && [ -d "$work" ]; then
    echo "demo failed; its files and logs stay in $work (server.log, agent.log)" >&2
  fi
}
trap cleanup EXIT

step "Starting contera-provisioning (data in $work/server)"
# Its stdout line "contera-provisioning listening on URL" comes once the database and TLS
# material are ready, so admin commands started after it never race their creation.
"$server_bin" serve --data-dir "$work/server" --listen "$LISTEN" --console-listen "$CONSOLE_LISTEN" \
  --metrics-listen "$METRICS_LISTEN" --heartbeat-interval 2 >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
pids+=("$server_pid")
ready=
for _ in $(seq 600); do
  if grep -q 'listening on https://' "$work/server.out" 2>/dev/null; then ready=1; break; fi
  kill -0 "$server_pid" 2>/dev/null || break # exited: no need to wait
  sleep 0.05
done
url=$(sed -n 's/^contera-provisioning listening on //p' "$work/server.out")
if [ -z "$ready" ] || [ -z "$url" ]; then
  cat "$work/server.log" >&2
  echo "server did not start" >&2
  if grep -qi 'address already in use' "$work/server.log"; then
    echo "hint: $LISTEN is taken by another program; for any free port run: LISTEN=127.0.0.1:0 scripts/demo.sh" >&2
    rm -rf "$work" # nothing happened in it
  fi
  exit 1
fi
url=${url/127.0.0.1/localhost}
console_url=$(sed -n 's/^contera-provisioning console on //p' "$work/server.out")
console_url=${console_url/127.0.0.1/localhost}
metrics_url=$(sed -n 's/^contera-provisioning metrics on //p' "$work/server.out")
echo "server at $url; agents trust $work/server/tls/ca.pem; web console at $console_url; metrics at $metrics_url"

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

step "The recorder shows online in Store 12 (at its first heartbeat, right after enrolling)"
for _ in $(seq 100); do
  admin recorders list | grep -q online && break
  sleep 0.1
done
admin recorders list
"$agent_bin" --config "$work/agent.toml" status

listen_again=${LISTEN%:*}:${url##*:} # the same port, which agent.toml names
step "Done. The server and the agent stop now; everything stays in $work"
cat <<EOF
  server data dir:  $work/server  (database contera.db, TLS material in tls/)
  server log:       $work/server.log
  agent config:     $work/agent.toml  (key and state in $work/agent/state)
  agent log:        $work/agent.log

Look around (nothing needs to run; the recorder now shows offline, with offline_reason
shutdown in --json, since the agent said goodbye when it stopped):
  recorders:        $server_bin --data-dir $work/server recorders list
  audit log:        $server_bin --data-dir $work/server audit
  accounts:         $server_bin --data-dir $work/server accounts list
  agent status:     $agent_bin --config $work/agent.toml status
  run both again:   $server_bin serve --data-dir $work/server --listen $listen_again --console-listen $CONSOLE_LISTEN &
                    $agent_bin --config $work/agent.toml run
  remove it all:    rm -rf $work
EOF
