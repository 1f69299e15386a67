#!/usr/bin/env bash
# Cost per command of a local Dcache cluster (3 nodes + gateway, `dcachectl dev`) under redis-benchmark load:
# ops/s, and — less sensitive to whatever else the machine runs than ops/s — CPU time and context switches per
# command summed over the node and gateway processes, with each process's CPU ticks; then, per process (leader,
# followers, gateway), managed bytes allocated per command and GC pause time, read off each process's /metrics
# (.NET's System.Runtime meter; builds before it was exported print "-").
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
# The gateway answers PING before the nodes have elected a leader; on a loaded machine that takes long enough for
# the first redis-benchmark to meet errors (and exit non-zero), so wait for a write to go through.
for _ in $(seq 1 300); do redis-cli -p "$gateway" SET cost-per-command-ready 1 2>/dev/null | grep -q OK && break; sleep 0.1; done
# Warm up (JIT tiering, connections, the log's first pages) before anything is measured: every test shape once, so
# the code of each (pipelined batches too) has reached its final tier. With less, the first measured test paid for
# JIT compilation (the tiering thread showed in profiles of the measured window).
for warm in "set 1" "get 1" "set 16" "get 16"; do
  read -r command pipeline <<< "$warm"
  redis-benchmark -h 127.0.0.1 -p "$gateway" -c 50 -n "${WARM:-30000}" -d 100 -r 100000 -P "$pipeline" -t "$command" -q >/dev/null 2>&1
done

ticks() { for p in $(pgrep -P "$dev"); do awk '{printf "%d ", $14+$15}' "/proc/$p/stat"; done; }
rss() { for p in $(pgrep -P "$dev"); do awk '/^VmRSS/ {printf "%d ", $2 / 1024}' "/proc/$p/status"; done; }
switches() { for p in $(pgrep -P "$dev"); do cat /proc/"$p"/task/*/status 2>/dev/null; done | awk '/ctxt_switches/ {n+=$2} END {print n+0}'; }
hz=$(getconf CLK_TCK)
# Each process's /metrics, in the order leader, followers (by id), gateway: "port:allocated-bytes:gc-pause-seconds".
gc_stats() {
  local leader="" followers="" id port health
  for id in 1 2 3; do
    port=$(( base + 1000 + id - 1 ))
    health=$(curl -s --max-time 5 "http://127.0.0.1:$port/health" || true)
    case "$health" in *'"role":"Leader"'*) leader="$leader $port" ;; *) followers="$followers $port" ;; esac
  done
  for port in $leader $followers $(( base + 2000 )); do
    { curl -s --max-time 5 "http://127.0.0.1:$port/metrics" || true; } | awk -v port="$port" '
      /^dotnet_gc_heap_total_allocated_bytes_total/ {a=$NF}
      /^dotnet_gc_pause_time_seconds_total/ {p=$NF}
      END {printf "%s:%s:%s ", port, (a == "" ? "-" : a), (p == "" ? "-" : p)}'
  done
  echo
}

IFS=";" read -ra tests <<< "${TESTS:-set 1;get 1;set 16;get 16}"
for test in "${tests[@]}"; do
  read -r command pipeline <<< "$test"
  sleep 0.5; g0=$(gc_stats)  # the exporter caches a scrape for up to 300 ms
  t0=$(ticks); s0=$(switches)
  csv=$(redis-benchmark -h 127.0.0.1 -p "$gateway" -c "${CLIENTS:-50}" -n "$n" -d 100 -r 100000 -P "$pipeline" -t "$command" --csv -q 2>&1 | grep -v '"test"' | tail -1)
  t1=$(ticks); s1=$(switches)
  sleep 0.5; g1=$(gc_stats)
  echo "$label ${command^^} -P $pipeline resident MiB per process (nodes, gateway): $(rss)"
  python3 - "$label" "$command" "$pipeline" "$n" "$hz" "$csv" "$t0" "$t1" "$s0" "$s1" "$g0" "$g1" <<'PY'
import sys
label, command, pipeline, n, hz, csv, t0, t1, s0, s1, g0, g1 = sys.argv[1:]
n, hz = int(n), int(hz)
fields = [f.strip('"') for f in csv.split(",")]
rps = float(fields[1])
# Newer redis-benchmark CSVs carry latency columns: avg, min, p50, p95, p99, max (ms).
tail = f"  p50 {fields[4]} p99 {fields[6]} max {fields[7]} ms" if len(fields) >= 8 else ""
per = [b - a for a, b in zip(map(int, t0.split()), map(int, t1.split()))]
cpu_us = sum(per) / hz * 1e6 / n
print(f"{label} {command.upper():3} -P {pipeline:>2} {rps:9.0f} ops/s  cpu {cpu_us:6.1f} us/command  "
      f"context switches {(int(s1) - int(s0)) / n:5.1f}/command  ticks per process (nodes, gateway): {' '.join(map(str, per))}{tail}")
# The leader is looked up before and after: a process whose role changed during the test is marked with "?".
before = [x.split(":") for x in g0.split()]
after = {port: (a, p) for port, a, p in (x.split(":") for x in g1.split())}
roles = ["leader"] + ["follower"] * (len(before) - 2) + ["gateway"]
cells = []
for role, (port, a0, p0) in zip(roles, before):
    a1, p1 = after.get(port, ("-", "-"))
    moved = "" if [x.split(":")[0] for x in g1.split()] == [x[0] for x in before] else "?"
    if "-" in (a0, a1, p0, p1):
        cells.append(f"{role}{moved} -")
    else:
        cells.append(f"{role}{moved} {(float(a1) - float(a0)) / n:6.0f} B (GC pause {(float(p1) - float(p0)) * 1e3:5.0f} ms)")
print(f"{label} {command.upper():3} -P {pipeline:>2} allocated per command: {',  '.join(cells)}")
PY
done
