#!/usr/bin/env bash
# A three-site Tessera cluster as separate processes on loopback, against a real Kafka broker
# process (Tansu): starts the broker, replays a simulated fleet into each site's own topic,
# starts `tessera node` for deploy/cluster/site-{a,b,c}.toml (one Raft group, federated Flight
# SQL), runs a Flight SQL query across the sites, and stops everything (nodes on SIGTERM, each
# must exit 0).
#
#   deploy/local-cluster.sh                 build tessera, run, stop
#   KEEP_RUNNING=1 deploy/local-cluster.sh  leave the cluster running until Ctrl-C
#
# Needs tansu (scripts/setup.sh --with-broker installs it). TESSERA_BIN: the tessera program
# to run (default: built with cargo). Ports (below the kernel's ephemeral range, so that no
# outgoing connection holds one): Kafka 19092, Raft 7071-7073, SQL 15061-15063,
# metrics 9471-9473.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

if [[ -z "${TESSERA_BIN:-}" ]]; then
  (cd "$repo" && cargo build --locked -q -p tessera-cli --bin tessera)
  TESSERA_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/tessera"
fi
command -v tansu >/dev/null || { echo "local-cluster: tansu not found; run scripts/setup.sh --with-broker" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/tessera-local-cluster.XXXXXX")"
broker_pid=""
node_pids=()
sites=(site-a site-b site-c)

stop_all() {
  local status=0
  for pid in "${node_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in "${!node_pids[@]}"; do
    if wait "${node_pids[$i]}"; then
      echo "local-cluster: ${sites[$i]} stopped cleanly"
    else
      status=$?
      echo "local-cluster: ${sites[$i]} exited with $status; its log:" >&2
      tail -20 "$work/${sites[$i]}.log" >&2
    fi
  done
  node_pids=()
  if [[ -n "$broker_pid" ]]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=""
  fi
  rm -rf "$work"
  return "$status"
}
trap 'stop_all || true' EXIT

wait_for_port() { # host port what
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "local-cluster: $3 did not open $1:$2" >&2
  return 1
}

http_status() { # port path
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  read -r line <&3 || true
  exec 3>&-
  echo "$line" | awk '{print $2}'
}

echo "local-cluster: Kafka broker (Tansu) on 127.0.0.1:19092"
# Own sessions (setsid): a Ctrl-C at the terminal reaches this script alone, which then stops
# each process once, in order.
setsid tansu broker --listener-url tcp://127.0.0.1:19092 --advertised-listener-url tcp://127.0.0.1:19092 \
  --storage-engine memory://tansu/ >"$work/broker.log" 2>&1 &
broker_pid=$!
wait_for_port 127.0.0.1 19092 "the broker"

echo "local-cluster: replaying 10 minutes of a 150-motor fleet into telemetry.site-{a,b,c}"
"$TESSERA_BIN" simulate --brokers 127.0.0.1:19092 --topic telemetry --per-site-topics --partitions 3 \
  --motors 150 --sites 3 --duration 10m --fast --seed 7

cd "$work"
for i in "${!sites[@]}"; do
  site="${sites[$i]}"
  setsid "$TESSERA_BIN" node --config "$repo/deploy/cluster/$site.toml" >"$work/$site.log" 2>&1 &
  node_pids+=($!)
  echo "local-cluster: $site started (pid $!): Raft 127.0.0.1:$((7071 + i)), SQL 127.0.0.1:$((15061 + i)), metrics http://127.0.0.1:$((9471 + i))/metrics"
done
for i in "${!sites[@]}"; do
  for _ in $(seq 600); do
    [[ "$(http_status $((9471 + i)) /readyz 2>/dev/null)" == "200" ]] && break
    kill -0 "${node_pids[$i]}" 2>/dev/null || { echo "local-cluster: ${sites[$i]} died:" >&2; tail -20 "$work/${sites[$i]}.log" >&2; exit 1; }
    sleep 0.2
  done
  [[ "$(http_status $((9471 + i)) /readyz)" == "200" ]] || { echo "local-cluster: ${sites[$i]} not ready" >&2; exit 1; }
done
echo "local-cluster: all three sites ready (a Raft leader is elected)"

# The fleet (every site's part, computed at its site) beside site a's own windows.
query="SELECT 'fleet' AS scope, count(DISTINCT motor_id) AS motors, count(*) AS windows FROM fleet.motor_windows UNION ALL SELECT 'site-a', count(DISTINCT motor_id), count(*) FROM motor_windows ORDER BY scope"
echo "local-cluster: tessera sql --at 127.0.0.1:15061 --user analyst \"$query\""
answer=""
for _ in $(seq 120); do
  answer="$("$TESSERA_BIN" sql --at 127.0.0.1:15061 --user analyst --password analyst-password "$query" 2>&1)" || true
  # 150 motors over three sites: the fleet row must count all of them.
  grep -Eq "^\| fleet +\| 150 " <<<"$answer" && break
  sleep 1
done
echo "$answer"
grep -Eq "^\| fleet +\| 150 " <<<"$answer" || { echo "local-cluster: the query did not see all three sites' motors" >&2; exit 1; }

if [[ -n "${KEEP_RUNNING:-}" ]]; then
  echo "local-cluster: running; Ctrl-C stops everything"
  trap 'exit 0' INT TERM
  while true; do sleep 1; done
fi
trap - EXIT
stop_all
echo "local-cluster: done"
