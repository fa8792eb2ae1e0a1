#!/usr/bin/env bash
# The README's demo: a throwaway MariaDB, credproxy in front of it with an RDS-format secret
# file, and the mariadb CLI logging in through it without a password. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/run-all.sh --deps-only
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)" --target credproxy >/dev/null

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work=$(mktemp -d /tmp/credproxy-demo.XXXXXX)
proxy_pid=
cleanup() {
    if [ -n "$proxy_pid" ]; then
        kill "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
    fi
    bash tests/mariadb.sh stop "$work/db" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== a throwaway MariaDB with a user 'app' whose password only the secret file knows"
bash tests/mariadb.sh start "$work/db" "$(free_port)"

echo "== the secret, in the shape Secrets Manager stores for RDS (password masked here)"
(umask 077 && cp "$work/db/secret.json" "$work/secret.json")
sed 's/"password": "[^"]*"/"password": "********"/' "$work/secret.json"

port=$(free_port)
echo "== credproxy --secret-file $work/secret.json --listen 127.0.0.1:$port"
build/proxy/credproxy --secret-file "$work/secret.json" --listen "127.0.0.1:$port" \
    2>"$work/credproxy.log" &
proxy_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$proxy_pid" 2>/dev/null || { cat "$work/credproxy.log" >&2; exit 1; }
    sleep 0.1
done

echo "== mariadb -h 127.0.0.1 -P $port -u anyone -e 'SELECT CURRENT_USER(), VERSION()'   (no password)"
mariadb --no-defaults -h 127.0.0.1 -P "$port" -u anyone --table -e 'SELECT CURRENT_USER(), VERSION()'

echo "== credproxy's log"
cat "$work/credproxy.log"
