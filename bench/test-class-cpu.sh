#!/usr/bin/env bash
# Runs test classes one at a time, each in its own cpuacct cgroup, and prints each one's wall time and the CPU time of
# everything it started (test host, nodes, gateways, dcachectl): where the suite's CPU goes, class by class.
# usage: [KNOBS="NAME=VALUE ..."] bench/test-class-cpu.sh PROJECT CLASS... (after `dotnet build Dcache.sln -c Release`)
# Needs root and cgroup v1's cpuacct (/sys/fs/cgroup/cpuacct); KNOBS are set in the environment of the run.
set -uo pipefail
cd "$(dirname "$0")/.."
project=$1; shift
cgroup=/sys/fs/cgroup/cpuacct/dcache-test-class-cpu
mkdir -p "$cgroup"
log=$(mktemp -d /tmp/dcache-test-class-cpu.XXXXXX)
trap 'rm -rf "$log"; rmdir "$cgroup" 2>/dev/null' EXIT
for class in "$@"; do
  before=$(cat "$cgroup/cpuacct.usage"); start=$(date +%s.%N)
  # shellcheck disable=SC2086 # KNOBS is a list of NAME=VALUE words
  bash -c 'echo $$ > "$1/tasks"; shift; exec "$@"' _ "$cgroup" env ${KNOBS:-} dotnet test "tests/$project" -c Release \
    --no-build -nologo --filter "FullyQualifiedName~.$class." > "$log/$class" 2>&1
  status=$?
  end=$(date +%s.%N); after=$(cat "$cgroup/cpuacct.usage")
  printf "%-32s wall %6.1f s  cpu %6.1f s  exit %d  %s\n" "$class" "$(echo "$end - $start" | bc)" \
    "$(echo "($after - $before) / 1000000000" | bc -l)" "$status" "$(grep -o 'Passed: *[0-9]*\|Failed: *[0-9]*' "$log/$class" | tr -s ' \n' '  ')"
done
