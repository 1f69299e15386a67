#!/usr/bin/env bash
# Runs the whole Dcache test suite: installs what the tests need when missing, builds with warnings as errors,
# runs every test project, and ends with one line: "tests: N passed, N failed, N skipped".
# Extra arguments go to `dotnet test` (e.g. --filter "FullyQualifiedName~Simulation").
set -uo pipefail
cd "$(dirname "$0")"

need_packages=()
# redis-cli and redis-benchmark drive the gateway in the integration tests.
command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null || need_packages+=(redis-tools)
# A real Redis is the reference the gateway's replies are compared with (RedisDifferentialTests).
command -v redis-server >/dev/null || need_packages+=(redis-server)
# A real Prometheus scrapes a cluster to check every dashboard query.
command -v prometheus >/dev/null || need_packages+=(prometheus)
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "installing: ${need_packages[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
  # Where systemd runs, the packages start services of their own (Redis on 6379, where `dcachectl dev` puts the
  # gateway; Prometheus on 9090); the tests start their own instances, so the ones just installed are stopped.
  if command -v systemctl >/dev/null; then
    for service in redis-server prometheus; do
      [[ " ${need_packages[*]} " == *" $service "* ]] && systemctl disable --now "$service" >/dev/null 2>&1
    done
  fi
fi

# The suite is bound by CPU on two cores, and most of that CPU goes into starting processes: the compiler, the test
# hosts, and the hundreds of nodes, gateways and dcachectl runs the tests start. Two runtime settings cut that cost by
# about a fifth (docs/benchmarks.md, "The test suite's CPU"): W^X (writable or executable, never both, for JIT code)
# costs a remap per method compiled, and tiered PGO instruments methods that short-lived processes never re-JIT.
# Neither changes what a program does; production keeps the runtime's defaults.
export DOTNET_EnableWriteXorExecute=0 DOTNET_TieredPGO=0

results=$(mktemp -d /tmp/dcache-test-results.XXXXXX)
trap 'rm -rf "$results"' EXIT

# The compiler runs as a server (one warm compiler for every project, not a cold process per project, which an
# environment's UseSharedCompilation=false asks for): the build takes half the time. The server is shut down right
# after, so that no process outlives the build.
dotnet build Dcache.sln -c Release -nologo -v q -p:UseSharedCompilation=true
built=$?
dotnet build-server shutdown --vbcscompiler >/dev/null 2>&1
if [ "$built" -ne 0 ]; then
  echo "tests: 0 passed, 1 failed, 0 skipped"
  exit 1
fi

# `dotnet test` runs two test projects at a time, in the order Dcache.sln lists them. Integration.Tests is the longest
# (about 13 of the suite's 15 minutes, its classes two at a time) and is listed first, so that it starts at once and
# the other projects run beside it; listed fifth, it started a minute late and ran on alone at the end.
dotnet test Dcache.sln -c Release --no-build -nologo \
  --logger "trx" --logger "console;verbosity=normal" --results-directory "$results" "$@"
status=$?

passed=0; failed=0; skipped=0
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)
  get() { echo "$counters" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"; }
  passed=$((passed + $(get passed)))
  failed=$((failed + $(get failed) + $(get error) + $(get timeout) + $(get aborted)))
  skipped=$((skipped + $(get notExecuted)))
done

# CI shows the end of the output: name the failed tests there, with the start of each one's message (an assertion's
# expected and actual values) and any seed the test printed, so that a failure seen only in CI can be replayed.
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  python3 - "$trx" <<'PY' 2>/dev/null || grep -o '<UnitTestResult [^>]*outcome="Failed"[^>]*>' "$trx" | sed -n 's/.*testName="\([^"]*\)".*/FAILED: \1/p'
import sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
for result in ET.parse(sys.argv[1]).getroot().iterfind(".//t:UnitTestResult", ns):
    if result.get("outcome") == "Failed":
        message = result.findtext(".//t:Message", default="", namespaces=ns).strip().splitlines()
        print(f"FAILED: {result.get('testName')}: {message[0] if message else ''}"[:400])
        for line in message[1:8]:
            print(f"  {line}"[:400])
        output = result.findtext(".//t:StdOut", default="", namespaces=ns).splitlines()
        for line in [line for line in output if "seed" in line.lower()][:3]:
            print(f"  output: {line.strip()}"[:400])
PY
done

# The suite has a 15-minute budget on a 2-core machine: name the slowest tests, so that a run that grew can be trimmed
# where it counts.
python3 - "$results"/*.trx <<'PY' 2>/dev/null
import sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
def seconds(duration):
    hours, minutes, rest = duration.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)
durations = []
for trx in sys.argv[1:]:
    for result in ET.parse(trx).getroot().iterfind(".//t:UnitTestResult", ns):
        if result.get("duration"):
            durations.append((seconds(result.get("duration")), result.get("testName")))
durations.sort(reverse=True)
print("slowest tests:")
for duration, name in durations[:10]:
    print(f"  {duration:6.1f} s  {name}"[:200])
PY

if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1 # the runner failed without a result file saying why (crash, build error)
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
