#!/usr/bin/env bash
# A throwaway MariaDB server for the integration tests.
#
#   tests/mariadb.sh start DIR PORT   datadir DIR/data, TCP 127.0.0.1:PORT, socket DIR/mysqld.sock
#   tests/mariadb.sh stop DIR         clean shutdown, removes the pid file
#
# start also writes, under DIR:
#   tls/ca.pem, tls/server-{cert,key}.pem   a test CA and the server's certificate
#                                           (CN=localhost, SAN DNS:localhost, IP:127.0.0.1)
#   tls/proxy-{cert,key}.pem                 a certificate for credproxy's frontend TLS, same CA
#   secret.json          user app (ALL on app.*), RDS secret format, mode 600
#   secret-tls.json      user app_tls, REQUIRE SSL
#   secret-ed25519.json  user app_ed, ed25519 plugin (absent when the plugin is not available)
#   env.sh               exports CREDPROXY_TEST_DIR, CREDPROXY_TEST_MYSQL_PORT,
#                        CREDPROXY_TEST_MYSQL_SOCKET
# root@localhost logs in through the unix socket (unix_socket plugin), so tests
# running as root can ALTER USER to rotate passwords.
#
# Both commands are idempotent: start on a running server only rewrites env.sh, stop on a
# stopped one does nothing. start after stop on the same port keeps the users, passwords and
# secret files (a server restart); a first start or a new port provisions fresh passwords.
set -euo pipefail

die() {
    echo "mariadb.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start DIR PORT | stop DIR" >&2
    exit 2
}

# Runs the mariadb client as root on the server's unix socket, reading SQL from stdin.
root_sql() {
    mariadb --no-defaults --socket="$DIR/mysqld.sock" --user=root --batch --skip-column-names "$@"
}

server_alive() {
    [ -f "$DIR/mysqld.pid" ] && kill -0 "$(cat "$DIR/mysqld.pid")" 2>/dev/null
}

ping_server() {
    mariadb-admin --no-defaults --socket="$DIR/mysqld.sock" --user=root \
        --connect-timeout=2 ping >/dev/null 2>&1
}

# Test CA, server certificate and the proxy's frontend certificate; kept across restarts.
make_tls() {
    local t="$DIR/tls"
    [ -f "$t/proxy-cert.pem" ] && return 0
    mkdir -p "$t"
    (
        cd "$t"
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=credproxy test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout ca-key.pem -out ca.pem 2>/dev/null
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
            "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >leaf.ext
        local name
        for name in server proxy; do
            openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
                -keyout "$name-key.pem" -out "$name.csr" 2>/dev/null
            openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
                -days 3650 -extfile leaf.ext -out "$name-cert.pem" 2>/dev/null
            rm -f "$name.csr"
        done
        chmod 644 ca.pem server-cert.pem proxy-cert.pem
    )
}

write_config() {
    cat >"$DIR/my.cnf" <<EOF
[mariadbd]
user = root
datadir = $DIR/data
socket = $DIR/mysqld.sock
pid-file = $DIR/mysqld.pid
log-error = $DIR/mysqld.err
port = $PORT
bind-address = 127.0.0.1
skip-name-resolve
max_connections = 500
max_allowed_packet = 64M
local_infile = 1
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
ssl-ca = $DIR/tls/ca.pem
ssl-cert = $DIR/tls/server-cert.pem
ssl-key = $DIR/tls/server-key.pem
innodb_buffer_pool_size = 64M
innodb_log_file_size = 32M
innodb_flush_log_at_trx_commit = 2
innodb_doublewrite = 0
innodb_use_native_aio = 0
performance_schema = OFF
# For test_iam.py, which installs auth_pam at run time: PAM users then ask clients for
# mysql_clear_password, as RDS's IAM plugin does (loose-: no error while it is not installed).
loose-pam_use_cleartext_plugin = ON
EOF
}

# A random password with punctuation, but none of ' " \ so it needs no escaping in SQL or JSON.
new_password() {
    printf '%s%s' "$(openssl rand -hex 12)" '!#%&*-_=+.:;,~^'
}

# write_secret FILE USER PASSWORD: an RDS-format secret, mode 600, written without exposing
# the password on any command line (printf is a shell builtin).
write_secret() {
    local tmp="$1.tmp"
    (
        umask 077
        printf '{"username": "%s", "password": "%s", "engine": "mariadb", "host": "127.0.0.1", "port": %d, "dbname": "app"}\n' \
            "$2" "$3" "$PORT" >"$tmp"
    )
    mv -f "$tmp" "$1"
}

# Creates the database and users with fresh passwords, then writes the secret files.
provision() {
    local pw_app pw_tls pw_ed have_ed
    pw_app=$(new_password)
    pw_tls=$(new_password)
    pw_ed=$(new_password)
    root_sql <<EOF
CREATE DATABASE IF NOT EXISTS app CHARACTER SET utf8mb4;
CREATE OR REPLACE USER 'app'@'127.0.0.1' IDENTIFIED BY '$pw_app';
CREATE OR REPLACE USER 'app'@'localhost' IDENTIFIED BY '$pw_app';
GRANT ALL ON app.* TO 'app'@'127.0.0.1', 'app'@'localhost';
CREATE OR REPLACE USER 'app_tls'@'127.0.0.1' IDENTIFIED BY '$pw_tls' REQUIRE SSL;
CREATE OR REPLACE USER 'app_tls'@'localhost' IDENTIFIED BY '$pw_tls' REQUIRE SSL;
GRANT ALL ON app.* TO 'app_tls'@'127.0.0.1', 'app_tls'@'localhost';
EOF
    write_secret "$DIR/secret.json" app "$pw_app"
    write_secret "$DIR/secret-tls.json" app_tls "$pw_tls"

    have_ed=$(echo "SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME='ed25519'" | root_sql)
    if [ "$have_ed" = 0 ]; then
        echo "INSTALL SONAME 'auth_ed25519'" | root_sql 2>>"$DIR/setup.log" && have_ed=1
    fi
    if [ "$have_ed" != 0 ]; then
        root_sql <<EOF
CREATE OR REPLACE USER 'app_ed'@'127.0.0.1' IDENTIFIED VIA ed25519 USING PASSWORD('$pw_ed');
CREATE OR REPLACE USER 'app_ed'@'localhost' IDENTIFIED VIA ed25519 USING PASSWORD('$pw_ed');
GRANT ALL ON app.* TO 'app_ed'@'127.0.0.1', 'app_ed'@'localhost';
EOF
        write_secret "$DIR/secret-ed25519.json" app_ed "$pw_ed"
    else
        rm -f "$DIR/secret-ed25519.json"
        echo "mariadb.sh: the auth_ed25519 plugin is not available; no app_ed user" >&2
    fi
}

write_env() {
    cat >"$DIR/env.sh" <<EOF
export CREDPROXY_TEST_DIR='$DIR'
export CREDPROXY_TEST_MYSQL_PORT='$PORT'
export CREDPROXY_TEST_MYSQL_SOCKET='$DIR/mysqld.sock'
EOF
}

start() {
    if server_alive; then
        [ "$(cat "$DIR/port" 2>/dev/null)" = "$PORT" ] ||
            die "a server already runs in $DIR on port $(cat "$DIR/port" 2>/dev/null)"
        ping_server || die "the server in $DIR runs but does not answer"
        write_env
        return 0
    fi
    rm -f "$DIR/mysqld.pid" "$DIR/mysqld.sock"
    # A restart on the same port keeps the users and secret files; anything else provisions.
    local keep=0
    [ -d "$DIR/data/mysql" ] && [ -f "$DIR/secret.json" ] &&
        [ "$(cat "$DIR/port" 2>/dev/null)" = "$PORT" ] && keep=1
    make_tls
    write_config
    echo "$PORT" >"$DIR/port"
    if [ ! -d "$DIR/data/mysql" ]; then
        rm -rf "$DIR/data"
        mariadb-install-db --defaults-file="$DIR/my.cnf" --auth-root-authentication-method=socket \
            --skip-test-db >"$DIR/install.log" 2>&1 ||
            die "mariadb-install-db failed; see $DIR/install.log"
    fi
    setsid mariadbd --defaults-file="$DIR/my.cnf" </dev/null >>"$DIR/mysqld.out" 2>&1 &
    local pid=$! i
    for ((i = 0; i < 600; i++)); do
        ping_server && break
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$DIR/mysqld.err" >&2 || true
            die "mariadbd exited during start-up; see $DIR/mysqld.err"
        fi
        sleep 0.1
    done
    ping_server || die "mariadbd did not answer within 60s; see $DIR/mysqld.err"
    [ "$keep" = 1 ] || provision
    write_env
    echo "mariadb.sh: MariaDB $(echo 'SELECT VERSION()' | root_sql) on 127.0.0.1:$PORT and $DIR/mysqld.sock"
}

stop() {
    [ -f "$DIR/mysqld.pid" ] || return 0
    local pid i
    pid=$(cat "$DIR/mysqld.pid")
    if kill -0 "$pid" 2>/dev/null; then
        mariadb-admin --no-defaults --socket="$DIR/mysqld.sock" --user=root shutdown \
            >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 600; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "mariadb.sh: mariadbd $pid did not stop in 60s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$DIR/mysqld.pid"
}

[ $# -ge 2 ] || usage
cmd=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
case "$cmd" in
start)
    [ $# -eq 3 ] || usage
    PORT=$3
    [[ "$PORT" =~ ^[0-9]+$ ]] || die "bad port '$PORT'"
    start
    ;;
stop)
    [ $# -eq 2 ] || usage
    stop
    ;;
*) usage ;;
esac
