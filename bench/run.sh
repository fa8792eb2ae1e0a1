#!/usr/bin/env bash
# credproxy benchmark: the one command.
#
#   bench/run.sh            full run (about 25 minutes on 2 cores); writes bench/results/latest.md
#   bench/run.sh --quick    smoke run, every workload at tiny durations (1-2 minutes), for CI;
#                           writes bench/results/quick.md
#   Both also write PNG charts next to the report (qps.png, ... or quick-qps.png, ...).
#
# Other flags go to bench/driver.py (--rounds N, --duration S, --workers N, --only LIST,
# --keep, --strict, --out FILE); see `bench/driver.py --help` and docs/bench.md.
#
# It installs what is missing (Debian packages), builds credproxy and the bench programs in
# build-release/ (CMAKE_BUILD_TYPE=Release, separate from the debug/ASan trees), then lets
# the driver start MariaDB on a temporary datadir, HAProxy and credproxy, and run the
# workloads. Nothing is left running afterwards.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$ROOT/build-release"

# Debian packages the benchmark needs: the load tools and servers, credproxy's build deps, and
# matplotlib for the report's PNG charts (the driver skips the charts, with a note, without it).
PACKAGES=(sysbench haproxy mariadb-server mariadb-client libmariadb-dev cmake pkg-config gcc make
          libevent-dev libssl-dev libcurl4-openssl-dev libcjson-dev python3 openssl
          python3-matplotlib)
# bench/syscalls.py: syscall counts per query and per connection of a running proxy.
PACKAGES+=(strace)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/run.sh: installing ${missing[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench/run.sh: not root; install them first: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 10,000 idle clients through a proxy that opens one upstream connection per client need
# 20,000+ fds in the proxy. Raise the hard limit where we may (root outside a restrictive
# sandbox), then the soft one to it; the driver caps the idle count by what it got.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

echo "bench/run.sh: building credproxy (Release) in $BUILD" >&2
mkdir -p "$BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$BUILD/configure.log" 2>&1 || {
    cat "$BUILD/configure.log" >&2
    exit 1
}
cmake --build "$BUILD" -j"$(nproc)" --target credproxy bench_churn bench_churn_proto >/dev/null

exec /usr/bin/python3 "$ROOT/bench/driver.py" --build-dir "$BUILD" "$@"
