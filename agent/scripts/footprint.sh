#!/usr/bin/env bash
# The agent's footprint, as docs/BENCHMARKS.md reports it: stripped release binary size,
# and idle RSS and thread count of an enrolled agent heartbeating against a real server
# on loopback (random port, temp dir), read from /proc after it settles.
#
#   cargo build --release -p contera-agent -p contera-provisioning
#   agent/scripts/footprint.sh [BIN_DIR] [SETTLE_SECS]
#
# BIN_DIR defaults to ${CARGO_TARGET_DIR:-target}/release; SETTLE_SECS to 40 (past the
# blocking pool's 10 s idle timeout). The server asks for a heartbeat every 5 s, so the
# agent has sent several by then.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin_dir=${1:-${CARGO_TARGET_DIR:-target}/release}
settle=${2:-40}
server_bin=$bin_dir/contera-provisioning
agent_bin=$bin_dir/contera-agent

work=$(mktemp -d "${TMPDIR:-/tmp}/contera-footprint.XXXXXX")
pids=()
cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

cp "$agent_bin" "$work/contera-agent.stripped"
strip "$work/contera-agent.stripped"
echo "binary: $(stat -c %s "$agent_bin") bytes; stripped: $(stat -c %s "$work/contera-agent.stripped") bytes"

"$server_bin" serve --data-dir "$work/server" --listen 127.0.0.1:0 --console-listen 127.0.0.1:0 \
  --heartbeat-interval 5   >"$work/server.out" 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 600); do grep -q 'listening on https://' "$work/server.out" 2>/dev/null && break; sleep 0.05; done
url=$(sed -n 's/^contera-provisioning listening on //p' "$work/server.out")
url=${url/127.0.0.1/localhost}
admin() { "$server_bin" --data-dir "$work/server" "$@"; }
code=$(admin accounts create --name "Footprint" --kind customer --json |
  sed -n 's/^  "registration_code": "\(.*\)",\{0,1\}$/\1/p')

cat >"$work/agent.toml" <<TOML
[server]
url = "$url"
ca_file = "$work/server/tls/ca.pem"

[agent]
state_dir = "$work/agent/state"
control_socket = "$work/agent/control.sock"

[recorder]
serial = "FOOTPRINT-0001"
model = "NV-16"
TOML
"$agent_bin" --config "$work/agent.toml" run 2>"$work/agent.log" &
agent_pid=$!
pids+=("$agent_pid")
for _ in $(seq 200); do [ -S "$work/agent/control.sock" ] && break; sleep 0.05; done
"$agent_bin" --config "$work/agent.toml" enroll --yes --code "$code" >/dev/null
sleep "$settle"
"$agent_bin" --config "$work/agent.toml" status | head -3
grep -E '^(VmRSS|VmHWM|Threads):' "/proc/$agent_pid/status"
# Where the resident pages are: the binary's own (file) against the heap (anon).
grep -E '^(Rss|Pss_Anon|Pss_File|Anonymous):' "/proc/$agent_pid/smaps_rollup"
if [ -n "${FOOTPRINT_MAPS:-}" ]; then
  awk '/^[0-9a-f]+-[0-9a-f]+ /{name=$6} /^Rss:/{if ($2 > 100) print $2 " kB " name}' "/proc/$agent_pid/smaps"
fi
