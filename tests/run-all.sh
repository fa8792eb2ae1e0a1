#!/usr/bin/env bash
# The test command. On Debian 12 as root it installs the packages that are missing, builds,
# starts a throwaway MariaDB (tests/mariadb.sh), runs every ctest, and stops the server.
#
#   tests/run-all.sh              normal build (build/), then the sanitizer build (build-asan/)
#   tests/run-all.sh --quick      normal build only
#   tests/run-all.sh --sanitize   sanitizer build only (ASan + UBSan, -DCREDPROXY_SANITIZE=ON)
#   tests/run-all.sh --deps-only  install the packages and stop
#   tests/run-all.sh [...] -- ARGS  passes ARGS to ctest, e.g. -- -R integration_test_basic
#
# CREDPROXY_BUILD_DIR names the build directory (default build; the sanitizer one gets -asan).
# Exits non-zero when any build or test failed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(libevent-dev libssl-dev libcurl4-openssl-dev libcjson-dev libmariadb-dev
    mariadb-server mariadb-client sysbench haproxy python3-pymysql python3-botocore awscli
    cmake gcc make pkg-config clang-format openssl
    nodejs npm default-jdk-headless libmariadb-java golang-go golang-github-go-sql-driver-mysql-dev)
# The drivers of tests/integration/test_drivers.py: Connector/J, node (mysql2 comes from the npm
# registry at test time) and Go's go-sql-driver/mysql.

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

normal=1 sanitize=1 deps_only=0
ctest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) sanitize=0 ;;
    --sanitize) normal=0 sanitize=1 ;;
    --deps-only) deps_only=1 ;;
    --) shift; ctest_args=("$@"); break ;;
    *) usage ;;
    esac
    shift
done

install_deps() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        # A nodejs from elsewhere (e.g. NodeSource) carries its own npm and conflicts with
        # Debian's; any npm on PATH will do.
        [ "$p" = npm ] && command -v npm >/dev/null && continue
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "run-all.sh: missing packages (install them as root): ${missing[*]}" >&2
        exit 1
    fi
    echo "run-all.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
}

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

DB_DIR= DB_READY=0
cleanup() {
    if [ -n "$DB_DIR" ]; then
        bash tests/mariadb.sh stop "$DB_DIR" || true
        rm -rf "$DB_DIR"
    fi
}

# Starts the MariaDB fixture once, on first use, and exports its env.sh.
start_db() {
    [ "$DB_READY" = 1 ] && return 0
    [ -n "$DB_DIR" ] || DB_DIR=$(mktemp -d /tmp/credproxy-test.XXXXXX)
    bash tests/mariadb.sh start "$DB_DIR" "$(free_port)" || return 1
    # shellcheck source=/dev/null
    . "$DB_DIR/env.sh"
    DB_READY=1
}

# run_suite NAME BUILD_DIR [CMAKE ARGS...]: configure, build, ctest; returns ctest's status.
run_suite() {
    local name=$1 dir=$2
    shift 2
    echo "==== $name: configure and build in $dir"
    cmake -S . -B "$dir" "$@" || return 1
    cmake --build "$dir" -j "$(nproc)" || return 1
    start_db || return 1
    echo "==== $name: ctest"
    ctest --test-dir "$dir" --output-on-failure "${ctest_args[@]}"
}

install_deps
[ "$deps_only" = 1 ] && exit 0
trap cleanup EXIT
trap 'exit 130' INT TERM

BUILD=${CREDPROXY_BUILD_DIR:-build}
status=0
summary=()
if [ "$normal" = 1 ]; then
    if run_suite normal "$BUILD"; then r=PASS; else r=FAIL status=1; fi
    summary+=("normal build ($BUILD/): $r")
fi
if [ "$sanitize" = 1 ]; then
    # A leak stack stops at the first frame in libevent or OpenSSL; for whole stacks (and a run
    # about six times slower) set ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0.
    if ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_suite sanitize "$BUILD-asan" -DCREDPROXY_SANITIZE=ON; then r=PASS; else r=FAIL status=1; fi
    summary+=("sanitizer build ($BUILD-asan/): $r")
fi
printf '==== %s\n' "${summary[@]}"
exit $status
