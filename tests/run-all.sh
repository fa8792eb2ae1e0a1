#!/usr/bin/env bash
# The test command. On Debian 12 as root it installs the packages that are missing, builds,
# starts a throwaway MariaDB (tests/mariadb.sh), runs the tests, and stops the server.
#
#   tests/run-all.sh              every stage below, in this order
#   tests/run-all.sh --quick      normal build only (build/): every ctest
#   tests/run-all.sh --sanitize   ASan + UBSan build (build-asan/): every ctest
#   tests/run-all.sh --tsan       ThreadSanitizer build (build-tsan/): ctest -L tsan
#   tests/run-all.sh --fuzz       libFuzzer build with clang (build-fuzz/): ctest -L fuzz
#   tests/run-all.sh --deps-only  install the packages and stop
#   tests/run-all.sh [...] -- ARGS  passes ARGS to ctest, e.g. -- -R integration_test_basic
#
# --sanitize, --tsan and --fuzz combine (e.g. --tsan --fuzz). CREDPROXY_BUILD_DIR names the
# normal build directory (default build; the others get -asan, -tsan, -fuzz). docs/testing.md
# explains each stage. Exits non-zero when any build or test failed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(libevent-dev libssl-dev libcurl4-openssl-dev libcjson-dev libmariadb-dev
    mariadb-server mariadb-client sysbench haproxy python3-pymysql python3-botocore awscli
    cmake gcc make pkg-config clang-format openssl clang binutils
    nodejs npm default-jdk-headless libmariadb-java golang-go golang-github-go-sql-driver-mysql-dev
    libpam-modules dpkg-dev man-db python3-yaml prometheus chromium strace)
# clang brings libFuzzer (the fuzz stage), binutils readelf (hardening_check). The drivers of
# tests/integration/test_drivers.py: Connector/J, node (mysql2 comes from the npm registry at
# test time) and Go's go-sql-driver/mysql. libpam-modules has pam_exec, which test_iam.py uses
# with mariadb-server's auth_pam plugin to check IAM auth tokens.
# dpkg-dev has dpkg-shlibdeps (cpack's Depends for the .deb of test_package.py), man-db formats
# credproxy(8) there, python3-yaml parses the Kubernetes manifests (test_kubernetes.py).
# strace counts the system calls of a churned client connection (test_churn_syscalls.py).
# prometheus brings promtool (test_admin.py checks /metrics with it; the server the package
# also ships is stopped and disabled right after the install, see install_deps); chromium
# renders the /status page headless in test_admin.py.

usage() {
    sed -n '2,17s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

stages=() deps_only=0
ctest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) stages+=(normal) ;;
    --sanitize) stages+=(sanitize) ;;
    --tsan) stages+=(tsan) ;;
    --fuzz) stages+=(fuzz) ;;
    --deps-only) deps_only=1 ;;
    --) shift; ctest_args=("$@"); break ;;
    *) usage ;;
    esac
    shift
done
[ ${#stages[@]} -gt 0 ] || stages=(normal sanitize tsan fuzz)

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
    # prometheus is installed for promtool only: its server (which listens on every address)
    # must not be left running or enabled.
    if printf '%s\n' "${missing[@]}" | grep -qx prometheus; then
        if [ -d /run/systemd/system ]; then
            systemctl disable --now prometheus.service >/dev/null 2>&1 || true
        elif [ -x /etc/init.d/prometheus ]; then
            /etc/init.d/prometheus stop >/dev/null 2>&1 || true
            update-rc.d prometheus disable >/dev/null 2>&1 || true
        fi
    fi
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

# run_suite NAME BUILD_DIR DB CTEST_ARGS... -- CMAKE ARGS...: configure, build, (start the
# database when DB is 1), ctest; returns ctest's status.
run_suite() {
    local name=$1 dir=$2 db=$3 extra=()
    shift 3
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        extra+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    echo "==== $name: configure and build in $dir ($(date +%T))"
    cmake -S . -B "$dir" "$@" || return 1
    cmake --build "$dir" -j "$(nproc)" || return 1
    if [ "$db" = 1 ]; then start_db || return 1; fi
    echo "==== $name: ctest ${extra[*]} ($(date +%T))"
    ctest --test-dir "$dir" --output-on-failure "${extra[@]}" "${ctest_args[@]}"
}

install_deps
[ "$deps_only" = 1 ] && exit 0
trap cleanup EXIT
trap 'exit 130' INT TERM

BUILD=${CREDPROXY_BUILD_DIR:-build}
status=0
summary=()
for stage in "${stages[@]}"; do
    start=$SECONDS rc=0
    case $stage in
    normal)
        dir=$BUILD what="normal build"
        run_suite normal "$dir" 1 -- || rc=$? ;;
    sanitize)
        # A leak stack stops at the first frame in libevent or OpenSSL; for whole stacks (and a
        # run about six times slower) set ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0.
        dir=$BUILD-asan what="sanitizer build (ASan+UBSan)"
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            run_suite sanitize "$dir" 1 -- -DCREDPROXY_SANITIZE=ON || rc=$? ;;
    tsan)
        # Every race is reported (halt_on_error=0) and makes the process exit 66, which the
        # integration harness treats as a failure; tests/tsan.supp says why each entry is there.
        dir=$BUILD-tsan what="ThreadSanitizer build (ctest -L tsan)"
        TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=0:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp} \
            run_suite tsan "$dir" 1 -L tsan -- -DCREDPROXY_SANITIZE=thread || rc=$? ;;
    fuzz)
        # clang's libFuzzer; needs no database. Each target fuzzes for CREDPROXY_FUZZ_SECONDS.
        dir=$BUILD-fuzz what="fuzz build (clang, ctest -L fuzz)"
        CC=clang run_suite fuzz "$dir" 0 -L fuzz -j "$(nproc)" -- -DCREDPROXY_FUZZ=ON || rc=$? ;;
    esac
    if [ $rc = 0 ]; then r=PASS; else r=FAIL status=1; fi
    summary+=("$what ($dir/): $r in $(((SECONDS - start) / 60))m$(((SECONDS - start) % 60))s")
done
printf '==== %s\n' "${summary[@]}"
exit $status
