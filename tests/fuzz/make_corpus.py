#!/usr/bin/python3
"""Regenerates the seed corpora under tests/fuzz/corpus/ from real protocol bytes.

Needs the MariaDB fixture (tests/mariadb.sh start DIR PORT; . DIR/env.sh). It logs in as the
fixture's `app` user with a plain-socket MySQL client written here (so it chooses the
capability flags), records the server's greeting, the login request the server accepted, a
COM_CHANGE_USER the server accepted, and every reply packet to a range of commands, each with
and without CLIENT_DEPRECATE_EOF; then writes them in each fuzz target's input format (see the
comment at the top of each tests/fuzz/fuzz_*.c). Secret and config seeds are written from the
fixture's secret files (with the password replaced) and from conf/examples/.

    /usr/bin/python3 tests/fuzz/make_corpus.py        # rewrites tests/fuzz/corpus/*/seed-*

Only loopback is contacted. Seed files are named by content hash, so reruns are idempotent
except where the server's bytes vary (scrambles, connection ids, timings).
"""
import hashlib
import json
import os
import socket
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")

CAP_LONG_PASSWORD = 1 << 0
CAP_CONNECT_WITH_DB = 1 << 3
CAP_PROTOCOL_41 = 1 << 9
CAP_TRANSACTIONS = 1 << 13
CAP_SECURE_CONNECTION = 1 << 15
CAP_MULTI_STATEMENTS = 1 << 16
CAP_MULTI_RESULTS = 1 << 17
CAP_PS_MULTI_RESULTS = 1 << 18
CAP_PLUGIN_AUTH = 1 << 19
CAP_CONNECT_ATTRS = 1 << 20
CAP_PLUGIN_AUTH_LENENC = 1 << 21
CAP_SESSION_TRACK = 1 << 23
CAP_DEPRECATE_EOF = 1 << 24
CAP_MARIADB_PROGRESS = 1 << 32

BASE_CAPS = (CAP_PROTOCOL_41 | CAP_TRANSACTIONS | CAP_SECURE_CONNECTION | CAP_MULTI_STATEMENTS
             | CAP_MULTI_RESULTS | CAP_PS_MULTI_RESULTS | CAP_PLUGIN_AUTH | CAP_CONNECT_ATTRS
             | CAP_PLUGIN_AUTH_LENENC | CAP_SESSION_TRACK)


def write_seed(target, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def lenenc(n):
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def native_password(password, scramble):
    h1 = hashlib.sha1(password).digest()
    h2 = hashlib.sha1(h1).digest()
    h3 = hashlib.sha1(scramble + h2).digest()
    return bytes(a ^ b for a, b in zip(h1, h3))


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.seq = 0

    def read_packet(self):
        payload = b""
        while True:
            hdr = self._read(4)
            n = hdr[0] | hdr[1] << 8 | hdr[2] << 16
            self.seq = (hdr[3] + 1) & 0xFF
            payload += self._read(n)
            if n < 0xFFFFFF:
                return payload

    def _read(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise EOFError("server closed the connection")
            b += c
        return b

    def send(self, payload, seq=None):
        if seq is not None:
            self.seq = seq
        self.s.sendall(struct.pack("<I", len(payload))[:3] + bytes([self.seq]) + payload)
        self.seq = (self.seq + 1) & 0xFF


def parse_greeting(p):
    i = p.index(b"\0", 1) + 1
    i += 4
    s1 = p[i:i + 8]
    i += 9
    caps = struct.unpack_from("<H", p, i)[0]
    i += 2 + 1 + 2
    caps |= struct.unpack_from("<H", p, i)[0] << 16
    i += 2
    alen = p[i]
    i += 1 + 6
    caps |= struct.unpack_from("<I", p, i)[0] << 32
    i += 4
    n2 = max(13, alen - 8)
    s2 = p[i:i + n2 - 1]
    return caps, s1 + s2


def login_request(caps, user, auth, db, plugin=b"mysql_native_password", attrs=None):
    p = struct.pack("<I", caps & 0xFFFFFFFF) + struct.pack("<I", 1 << 24) + b"\x21"
    filler = b"\0" * 19
    filler += struct.pack("<I", (caps >> 32) if not caps & CAP_LONG_PASSWORD else 0)
    p += filler + user + b"\0"
    if caps & CAP_PLUGIN_AUTH_LENENC:
        p += lenenc(len(auth)) + auth
    elif caps & CAP_SECURE_CONNECTION:
        p += bytes([len(auth)]) + auth
    else:
        p += auth + b"\0"
    if caps & CAP_CONNECT_WITH_DB:
        p += db + b"\0"
    if caps & CAP_PLUGIN_AUTH:
        p += plugin + b"\0"
    if caps & CAP_CONNECT_ATTRS:
        a = attrs if attrs is not None else [(b"_client_name", b"credproxy-fuzz-seed"),
                                             (b"_pid", str(os.getpid()).encode())]
        blob = b"".join(lenenc(len(k)) + k + lenenc(len(v)) + v for k, v in a)
        p += lenenc(len(blob)) + blob
    return p


def login(port, user, password, db, caps):
    c = Conn(port)
    greeting = c.read_packet()
    server_caps, scramble = parse_greeting(greeting)
    caps &= server_caps
    if db:
        caps |= CAP_CONNECT_WITH_DB
    req = login_request(caps, user, native_password(password, scramble), db)
    c.send(req)
    reply = c.read_packet()
    if reply[:1] == b"\xfe":  # auth switch
        plugin, rest = reply[1:].split(b"\0", 1)
        if plugin != b"mysql_native_password":
            raise RuntimeError("unexpected plugin %r" % plugin)
        c.send(native_password(password, rest.rstrip(b"\0")))
        reply = c.read_packet()
    if reply[:1] != b"\x00":
        raise RuntimeError("login failed: %r" % reply)
    c.caps = caps
    c.scramble = scramble
    return c, greeting, req, reply


def command(c, payload, expect_reply=True):
    """Sends a command and reads its whole reply naively (the fixture's replies are small)."""
    c.send(payload, seq=0)
    if not expect_reply:
        return []
    packets = []
    c.s.settimeout(0.5)
    try:
        while True:
            packets.append(c.read_packet())
    except (socket.timeout, TimeoutError):
        pass
    c.s.settimeout(10)
    return packets


def response_seed(caps_byte, exchanges):
    """fuzz_response input: caps byte, then per exchange a command record and packet records."""
    out = bytes([caps_byte])
    for cmd, packets in exchanges:
        out += bytes([cmd & 0x7F if cmd != 0xFA else 0x7F])
        for p in packets:
            if len(p) <= 63:
                out += bytes([0x80 | len(p)]) + p
            else:
                out += bytes([0xC0 | 32]) + p[:32] + struct.pack("<I", len(p) - 32)[:3]
    return out


QUERIES = [
    b"SELECT 1",
    b"SELECT 1 AS a, 'x' AS b, NULL AS c UNION SELECT 2, 'yy', 3.5",
    b"SELECT 1; SELECT 2, 3",
    b"DO 1",
    b"SET autocommit=0",
    b"SET autocommit=1",
    b"SET NAMES utf8mb4",
    b"SET SESSION sql_mode='ANSI_QUOTES'",
    b"SET session_track_system_variables='*'",
    b"SET session_track_state_change=1",
    b"SET @v = 42",
    b"USE app",
    b"START TRANSACTION",
    b"COMMIT",
    b"CREATE TEMPORARY TABLE t1 (id INT PRIMARY KEY, v VARCHAR(80))",
    b"INSERT INTO t1 VALUES (1, 'one'), (2, 'two'), (3, REPEAT('z', 70))",
    b"UPDATE t1 SET v = 'uno' WHERE id = 1",
    b"SELECT * FROM t1",
    b"SELECT * FROM no_such_table",
    b"SELEC broken",
    b"SHOW WARNINGS",
    b"SELECT 1/0",
    b"SHOW SESSION VARIABLES LIKE 'auto%'",
    b"SET SESSION transaction_isolation='READ-COMMITTED'",
    b"LOAD DATA LOCAL INFILE '/nonexistent' INTO TABLE t1",
]


def capture(port, password):
    exchanges = {True: [], False: []}
    greetings, logins, changes, oks, errs = [], [], [], [], []
    for deprecate_eof in (False, True):
        caps = BASE_CAPS | (CAP_DEPRECATE_EOF if deprecate_eof else 0) | (1 << 7)  # LOCAL_FILES
        c, greeting, req, ok = login(port, b"app", password, b"app", caps)
        greetings.append(greeting)
        logins.append((c.caps, req))
        oks.append(ok)
        ex = exchanges[deprecate_eof]
        for q in QUERIES:
            packets = command(c, b"\x03" + q)
            if packets[:1] and packets[0][:1] == b"\xfb":
                c.send(b"", seq=c.seq)  # no file: an empty packet ends LOAD DATA LOCAL
                c.s.settimeout(0.5)
                try:
                    while True:
                        packets.append(c.read_packet())
                except (socket.timeout, TimeoutError):
                    pass
                c.s.settimeout(10)
            ex.append((0x03, packets))
        for cmd, payload in [(0x0E, b""), (0x09, b""), (0x02, b"app"), (0x02, b"nope"),
                             (0x04, b"t1\0"), (0x1B, b"\x01\x00"), (0x1B, b"\x00\x00")]:
            ex.append((cmd, command(c, bytes([cmd]) + payload)))
        prep = command(c, b"\x16SELECT id, v FROM t1 WHERE id > ? AND v <> ?")
        ex.append((0x16, prep))
        ex.append((0x16, command(c, b"\x16SELECT nonsense FROM")))
        if prep and prep[0][:1] == b"\x00":
            stmt = prep[0][1:5]
            params = b"\x00" + b"\x01" + struct.pack("<HH", 8, 253)  # LONGLONG, VAR_STRING
            params += struct.pack("<q", 0) + b"\x01z"
            execute = b"\x17" + stmt + b"\x00" + struct.pack("<I", 1) + params
            ex.append((0x17, command(c, execute)))
            ex.append((0x1A, command(c, b"\x1a" + stmt)))
            command(c, b"\x19" + stmt, expect_reply=False)
        ex.append((0x1F, command(c, b"\x1f")))
        # COM_CHANGE_USER back to the same user: a request the server accepted.
        cu = b"\x11app\0" + bytes([20]) + native_password(password, c.scramble) + b"app\0"
        cu += struct.pack("<H", 0x21) + b"mysql_native_password\0"
        attrs = [(b"_client_name", b"credproxy-fuzz-seed")]
        blob = b"".join(lenenc(len(k)) + k + lenenc(len(v)) + v for k, v in attrs)
        cu += lenenc(len(blob)) + blob
        changes.append((c.caps, cu))
        ex.append((0x11, command(c, cu)))
        command(c, b"\x01", expect_reply=False)
        c.s.close()
        for _, packets in ex:
            for p in packets:
                if p[:1] == b"\x00" or (p[:1] == b"\xfe" and len(p) >= 7):
                    oks.append(p)
                elif p[:1] == b"\xff":
                    errs.append(p)
    return exchanges, greetings, logins, changes, oks, errs


def main():
    port = int(os.environ["CREDPROXY_TEST_MYSQL_PORT"])
    secret_path = os.path.join(os.environ["CREDPROXY_TEST_DIR"], "secret.json")
    with open(secret_path) as f:
        secret = json.load(f)
    password = secret["password"].encode()
    exchanges, greetings, logins, changes, oks, errs = capture(port, password)

    # fuzz_handshake: byte 0 withdraws layout caps (0: everything offered), then the payload;
    # a leading selector byte of 0x00 parses the payload as a login request, change-user and reply.
    for _, req in logins:
        write_seed("fuzz_handshake", b"\x00" + req)
    # The same login as clients without the attrs / lenenc / plugin / db capabilities send it.
    for caps_off, mask in [(CAP_CONNECT_ATTRS, 0x10), (CAP_PLUGIN_AUTH_LENENC, 0x20),
                           (CAP_PLUGIN_AUTH, 0x08), (CAP_CONNECT_WITH_DB, 0x02)]:
        caps = (logins[0][0] & ~caps_off)
        write_seed("fuzz_handshake", bytes([mask]) + login_request(caps, b"app", b"\x01" * 20,
                                                                   b"app"))
    write_seed("fuzz_handshake", b"\x00" + login_request(logins[0][0] & ~CAP_CONNECT_WITH_DB,
                                                         b"", b"", b""))
    for _, cu in changes:
        write_seed("fuzz_handshake", b"\x00" + cu)
    write_seed("fuzz_handshake", b"\x00" + b"\x11bob\0\x00\0")
    for g in greetings:
        write_seed("fuzz_handshake", b"\x00" + g)
    for p in errs[:6]:
        write_seed("fuzz_handshake", b"\x00" + p)

    # fuzz_response: one seed per exchange, and one per whole session, for each caps byte.
    for deprecate_eof, ex in exchanges.items():
        caps_byte = 0x01 if deprecate_eof else 0x00
        for cmd, packets in ex:
            write_seed("fuzz_response", response_seed(caps_byte, [(cmd, packets)]))
        write_seed("fuzz_response", response_seed(caps_byte, ex))
        # Pipelined: three queries sent before any reply arrives.
        three = [p for c, p in ex if c == 0x03][:3]
        write_seed("fuzz_response", bytes([caps_byte, 0x03, 0x03, 0x03]) + b"".join(
            response_seed(caps_byte, [(0x03, p)])[2:] for p in three))
    # A MariaDB progress report (an ERR with code 0xffff) inside a reply, with the progress cap.
    progress = b"\xff\xff\xff\x01\x01\x02\x00\x10\x00\x00\x04" + b"stage"
    write_seed("fuzz_response", response_seed(0x04, [(0x03, [progress, b"\x00\x00\x00\x02\x00\x00\x00"])]))

    # fuzz_reply and fuzz_session_track: single OK/ERR/EOF payloads as the server sent them.
    for p in oks + errs:
        write_seed("fuzz_reply", p)
    for p in oks:
        write_seed("fuzz_session_track", p)
    write_seed("fuzz_reply", b"\xfe\x00\x00\x02\x00")
    write_seed("fuzz_reply", b"\xfbfile.csv")

    # fuzz_secret: the fixture's secrets (password replaced) and the README's shapes.
    base = {"username": "app", "password": "pw-not-real", "engine": "mariadb",
            "host": "127.0.0.1", "port": port, "dbname": "app"}
    variants = [
        base,
        dict(base, port=str(port)),
        {k: v for k, v in base.items() if k not in ("dbname", "engine")},
        dict(base, dbClusterIdentifier="mydb", host="mydb.abc.eu-west-1.rds.amazonaws.com"),
        dict(base, username="app_tls"),
        dict(base, password="\"quoted\\\\ \\u00e9 \U0001F600"),
        dict(base, extra={"nested": [1, 2, 3]}, port=0),
        dict(base, port=65536),
        dict(base, port="33o6"),
        dict(base, username=""),
        {"password": "x"},
        [],
    ]
    for v in variants:
        write_seed("fuzz_secret", json.dumps(v).encode())
    for name in ("secret.json", "secret-tls.json", "secret-ed25519.json"):
        path = os.path.join(os.environ["CREDPROXY_TEST_DIR"], name)
        if os.path.exists(path):
            with open(path) as f:
                s = json.load(f)
            s["password"] = "pw-not-real"
            write_seed("fuzz_secret", json.dumps(s, indent=2).encode())
    write_seed("fuzz_secret", b'{"username": "app", "password": "a\\u0000b", "host": "h"}')
    write_seed("fuzz_secret", b'{"username": "app", "password": "x", "host": "h", "port": 1e3}')

    # fuzz_config: the example config, then each of its sections alone and some edge lines.
    conf_dir = os.path.join(ROOT, "conf", "examples")
    for name in sorted(os.listdir(conf_dir)):
        if name.endswith(".conf"):
            with open(os.path.join(conf_dir, name), "rb") as f:
                text = f.read()
            write_seed("fuzz_config", text)
            for part in text.split(b"\n["):
                write_seed("fuzz_config", part if part.startswith(b"#") else b"[" + part)
    for text in [
        b"secret_file = /nonexistent/secret.json\nlisten = 127.0.0.1:6033\n",
        b"workers = 4\nlog_level = debug\n[route a]\nsocket = /tmp/x.sock\nsecret_file = /s\n"
        b"client_auth = peer\npeer_uids = 0, 1000\n",
        b"[route b]\nlisten = [::1]:3307\nlisten = 127.0.0.2:3307\nsecret_id = arn:aws:x\n"
        b"region = eu-west-1\npool_size = 10\npool_idle_timeout = 90s\n",
        b"secret_file = \"/path with spaces\" # comment\nconnect_timeout = 1500ms\n",
        b"[route]\n=\nkey\n[\n[route bad name]\nunknown_key = 1\n",
        b"upstream_tls = verify-identity\nupstream_ca = /etc/ssl/certs/ca-certificates.crt\n"
        b"tls_cert = /c.pem\ntls_key = /k.pem\nclient_auth = password\nusers_file = /u\n",
        b"pool_size = 99999999999999999999\nhandshake_timeout = 1h\npool_max_lifetime = 0\n",
        b"listen = 0.0.0.0:3306\nclient_auth = trust\nsecret_file=/s\n",
    ]:
        write_seed("fuzz_config", text)
    for d in sorted(os.listdir(CORPUS)):
        print("%-20s %3d seeds" % (d, len(os.listdir(os.path.join(CORPUS, d)))))


if __name__ == "__main__":
    sys.exit(main())
