#!/usr/bin/env bash
# Cost per command of a local Dcache cluster (3 nodes + gateway, `dcachectl dev`) under redis-benchmark load:
# ops/s, and — less sensitive to whatever else the machine runs than ops/s — CPU time and context switches per
# command summed over the node and gateway processes, with each process's CPU ticks.
# Compare two builds by running it on each tree, alternating (A B A B).
# Usage: bench/cost-per-command.sh [TREE (default: this checkout, built in Release)] [LABEL] [REQUESTS (default 30000)]
#        TESTS="set 1;get 1;set 16;get 16" selects tests (command and pipeline depth); WARM=N requests per warm-up test;
#        CLIENTS=N measured clients (default 50).
#        Environment variables reach the nodes and the gateway (dcachectl dev passes its environment on), e.g.
#        DOTNET_gcServer=0 bench/cost-per-command.sh to try a runtime setting.
set -euo pipefail
tree=$(cd "${1:-$(dirname "$0")/..}" && pwd); label=${2:-$(basename "$tree")}; n=${3:-30000}
command -v redis-benchmark >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools >/dev/null; }
ctl="$tree/src/Ctl/bin/Release/net10.0/dcachectl.dll"
[ -f "$ctl" ] || dotnet build "$tree/Dcache.sln" -c Release -nologo -v q >/dev/null

work=$(mktemp -d /tmp/dcache-cost.XXXXXX)
base=$(( 20000 + RANDOM % 7000 )); gateway=$(( base + 3000 ))
dotnet "$ctl" dev --data "$work/data" --base-port "$base" --gateway-port "$gateway" >"$work/dev.log" 2>&1 &
dev=$!
stop() {
  kill -TERM "$dev" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$dev" 2>/dev/null || break; sleep 0.1; done
  pkill -KILL -P "$dev" 2>/dev/null || true; kill -KILL "$dev" 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
for _ in $(seq 1 300); do redis-cli -p "$gateway" PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
# Warm up (JIT tiering, connections, the log's first pages) before anything is measured: every test shape once, so
# the code of each (pipelined batches too) has reached its final tier. With less, the first measured test paid for
# JIT compilation (the tiering thread showed in profiles of the measured window).
for warm in "set 1" "get 1" "set 16" "get 16"; do
  read -r command pipeline <<< "$warm"
  redis-benchmark -h 127.0.0.1 -p "$gateway" -c 50 -n "${WARM:-30000}" -d 100 -r 100000 -P "$pipeline" -t "$command" -q >/dev/null 2>&1
done

ticks() { for p in $(pgrep -P "$dev"); do awk '{printf "%d ", $14+$15}' "/proc/$p/stat"; done; }
switches() { for p in $(pgrep -P "$dev"); do cat /proc/"$p"/task/*/status 2>/dev/null; done | awk '/ctxt_switches/ {n+=$2} END {print n+0}'; }
hz=$(getconf CLK_TCK)

IFS=";" read -ra tests <<< "${TESTS:-set 1;get 1;set 16;get 16}"
for test in "${tests[@]}"; do
  read -r command pipeline <<< "$test"
  t0=$(ticks); s0=$(switches)
  csv=$(redis-benchmark -h 127.0.0.1 -p "$gateway" -c "${CLIENTS:-50}" -n "$n" -d 100 -r 100000 -P "$pipeline" -t "$command" --csv -q 2>&1 | grep -v '"test"' | tail -1)
  t1=$(ticks); s1=$(switches)
  python3 - "$label" "$command" "$pipeline" "$n" "$hz" "$csv" "$t0" "$t1" "$s0" "$s1" <<'PY'
import sys
label, command, pipeline, n, hz, csv, t0, t1, s0, s1 = sys.argv[1:]
n, hz = int(n), int(hz)
rps = float(csv.split(",")[1].strip('"'))
per = [b - a for a, b in zip(map(int, t0.split()), map(int, t1.split()))]
cpu_us = sum(per) / hz * 1e6 / n
print(f"{label} {command.upper():3} -P {pipeline:>2} {rps:9.0f} ops/s  cpu {cpu_us:6.1f} us/command  "
      f"context switches {(int(s1) - int(s0)) / n:5.1f}/command  ticks per process (nodes, gateway): {' '.join(map(str, per))}")
PY
done
