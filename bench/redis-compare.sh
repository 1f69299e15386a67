#!/usr/bin/env bash
# Dcache vs Redis, one run, same machine, same loopback, same load (issue 5):
# redis-benchmark with 50 clients, 100-byte values, 100,000 random keys, -P 1 and -P 16, SET and GET, against
#   1. Redis 7 (Debian's redis-server) without persistence,
#   2. Redis 7 with appendfsync always,
#   3. a local 3-node Dcache cluster (each node fsyncs, `dcachectl dev`) through its gateway: linearizable GET and SET,
#      reads routed to the leader (dev's setting: its nodes share this machine's cores),
#   4. the same cluster through a gateway whose reads are READONLY (local, possibly stale), also routed to the leader,
#   5. the same cluster through a gateway with the default read routing (linearizable reads spread over the members).
# Prints ops/s, p50 and p99 for each, then the Dcache/Redis ratios the issue sets targets for.
# Usage: bench/redis-compare.sh [requests per -P 1 test, default 200000]
#        A -P 16 test sends PIPELINED_FACTOR (default 10) times as many, so that it too lasts seconds: Dcache needs
#        about a second of load to reach its steady rate (connections, thread pool, GC budgets), and a -P 16 test of
#        the -P 1 count lasted a quarter of a second, mostly that ramp. Each test's duration is printed beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-200000}
pipelined_requests=$(( requests * ${PIPELINED_FACTOR:-10} ))
clients=50; size=100; keyspace=100000

for tool in redis-server redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "installing redis-server and redis-tools"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null; { command -v systemctl >/dev/null && systemctl disable --now redis-server >/dev/null 2>&1; } || true; break; }
done

work=$(mktemp -d /tmp/dcache-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 2
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_ping() { for _ in $(seq 1 200); do redis-cli -p "$1" PING 2>/dev/null | grep -q PONG && return 0; sleep 0.1; done; echo "port $1 does not answer PING" >&2; return 1; }

declare -A rps p50 p99 seconds
run() { # label port pipeline [tests, default set,get]
  local label=$1 port=$2 pipeline=$3 tests=${4:-set,get} out n
  n=$([ "$pipeline" -gt 1 ] && echo "$pipelined_requests" || echo "$requests")
  out=$(redis-benchmark -h 127.0.0.1 -p "$port" -c $clients -n "$n" -d $size -r $keyspace -P "$pipeline" -t "$tests" --csv -q 2>&1)
  while IFS=, read -r test r _avg _min p50v _p95 p99v _max; do
    test=${test//\"/}; [ "$test" = "SET" ] || [ "$test" = "GET" ] || continue
    rps["$label $test P$pipeline"]=${r//\"/}; p50["$label $test P$pipeline"]=${p50v//\"/}; p99["$label $test P$pipeline"]=${p99v//\"/}
    seconds["$label $test P$pipeline"]=$(python3 -c "print(f'{$n / float(${r//\"/}):.1f}')")
  done <<< "$out"
}

echo "== Redis, no persistence"
port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --dir "$work" >"$work/redis1.log" 2>&1 & pids+=($!)
wait_ping "$port"; run redis "$port" 1; run redis "$port" 16
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true

echo "== Redis, appendfsync always"
port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always --daemonize no --dir "$work" >"$work/redis2.log" 2>&1 & pids+=($!)
wait_ping "$port"; run redis-aof "$port" 1; run redis-aof "$port" 16
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true

echo "== Dcache, 3 nodes + gateway"
dotnet build Dcache.sln -c Release -nologo -v q >/dev/null
gw=$(free_port); gw_local=$(free_port); gw_spread=$(free_port)
# dev derives ports from the base (nodes base..base+2, health base+1000.., gateway health base+2000): pick it below
# the ephemeral range so none of them can collide with a client's port.
base=$(( 20000 + RANDOM % 7000 ))
dotnet src/Ctl/bin/Release/net10.0/dcachectl.dll dev --data "$work/dcache" --base-port "$base" --gateway-port "$gw" >"$work/dcache.log" 2>&1 & pids+=($!)
wait_ping "$gw" || { tail -20 "$work/dcache.log"; exit 1; }
gateway() { # port http-port extra settings...
  local port=$1 http=$2; shift 2
  dotnet src/Gateway/bin/Release/net10.0/Dcache.Gateway.dll --Dcache:Gateway:Port="$port" --Dcache:Gateway:HttpUrl="http://127.0.0.1:$http" \
    --Dcache:Gateway:Cluster:Nodes="http://127.0.0.1:$base,http://127.0.0.1:$((base+1)),http://127.0.0.1:$((base+2))" \
    --Dcache:Gateway:Cluster:ClusterId=dcache-dev --Dcache:Gateway:Cluster:ClusterSecret=dev-secret "$@" >"$work/gateway-$port.log" 2>&1 & pids+=($!)
  wait_ping "$port"
}
gateway "$gw_local" $((base + 2001)) --Dcache:Gateway:LocalReads=true --Dcache:Gateway:Cluster:ReadRouting=Leader
gateway "$gw_spread" $((base + 2002)) --Dcache:Gateway:Cluster:ReadRouting=Members
# Warm the gateways and the cluster up (JIT tiering, connections, the log's first pages) before measuring, at both
# pipeline depths.
for port in "$gw" "$gw_local" "$gw_spread"; do
  redis-benchmark -h 127.0.0.1 -p "$port" -c $clients -n 20000 -d $size -r $keyspace -t set,get -q >/dev/null 2>&1
  redis-benchmark -h 127.0.0.1 -p "$port" -c $clients -n 200000 -d $size -r $keyspace -P 16 -t set,get -q >/dev/null 2>&1
done
run dcache "$gw" 1; run dcache "$gw" 16
run dcache-readonly "$gw_local" 1; run dcache-readonly "$gw_local" 16
run dcache-spread "$gw_spread" 1 get; run dcache-spread "$gw_spread" 16 get

echo
printf '%-18s %-4s %4s %12s %9s %9s %9s\n' system test P ops/s p50_ms p99_ms seconds
for label in redis redis-aof dcache dcache-readonly dcache-spread; do
  for p in 1 16; do for t in SET GET; do
    k="$label $t P$p"; [ -n "${rps[$k]:-}" ] && printf '%-18s %-4s %4s %12s %9s %9s %9s\n' "$label" "$t" "$p" "${rps[$k]}" "${p50[$k]}" "${p99[$k]}" "${seconds[$k]}"
  done; done
done

ratio() { python3 -c "print(f'{float($1)/float($2):.2f}')"; }
echo
echo "ratios (target):"
echo "  linearizable GET -P1 / Redis GET -P1:          $(ratio "${rps[dcache GET P1]}" "${rps[redis GET P1]}")  (>= 0.4)"
echo "    the same, reads spread over the members:     $(ratio "${rps[dcache-spread GET P1]}" "${rps[redis GET P1]}")"
echo "  READONLY GET -P1 / Redis GET -P1:              $(ratio "${rps[dcache-readonly GET P1]}" "${rps[redis GET P1]}")  (>= 0.6)"
echo "  SET -P1 / Redis appendfsync-always SET -P1:    $(ratio "${rps[dcache SET P1]}" "${rps[redis-aof SET P1]}")  (>= 0.5)"
echo "  GET -P16 / Redis GET -P16:                     $(ratio "${rps[dcache GET P16]}" "${rps[redis GET P16]}")  (>= 0.25)"
echo "    the same, reads spread over the members:     $(ratio "${rps[dcache-spread GET P16]}" "${rps[redis GET P16]}")"
echo "  SET -P16 / Redis SET -P16:                     $(ratio "${rps[dcache SET P16]}" "${rps[redis SET P16]}")  (>= 0.25)"
