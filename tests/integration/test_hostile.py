#!/usr/bin/python3
"""Hostile clients against the real binary (meant to run under ASan+UBSan).

Raw-socket clients that pipeline the login with commands, send every command byte with garbage
bodies, half-close or reset their sockets at every stage of a session, hold thousands of
unfinished logins, vanish in the middle of a result, stall a TLS handshake, grow the proxy's
memory once its reply tracker has lost track, and flood it past its descriptor limit.

Every case checks something specific (an answer, a close within a deadline, a bound on memory or
CPU) and ends with a liveness check: a fresh PyMySQL client runs SELECT 1. The harness stops each
proxy with SIGTERM and fails the test on a sanitizer report or a non-zero exit.
"""

import concurrent.futures
import os
import random
import resource
import selectors
import socket
import ssl
import struct
import subprocess
import threading
import time

import harness
from harness import ProxyTestCase, connect, scalar

# --- the little of the client protocol these tests speak -----------------------------------

CLIENT_LONG_PASSWORD = 0x1
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_TRANSACTIONS = 0x2000
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000
# Classic 4.1 protocol with EOF packets (no DEPRECATE_EOF), so a result set ends with EOF.
BASE_CAPS = (CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS
             | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH)

COM_QUIT = 0x01
COM_QUERY = 0x03
COM_TIME = 0x0F
COM_CHANGE_USER = 0x11
COM_STMT_PREPARE = 0x16
COM_STMT_CLOSE = 0x19
COM_RESET_CONNECTION = 0x1F

RAW_TIMEOUT = 30.0


def packet(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload


def login_payload(user="hostile", caps=BASE_CAPS):
    """A HandshakeResponse41 for trust mode: no password, mysql_native_password named."""
    return (struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23 + user.encode() + b"\0"
            + b"\0" + b"mysql_native_password\0")


def ssl_request_payload(caps=BASE_CAPS):
    return struct.pack("<IIB", caps | CLIENT_SSL, 1 << 24, 45) + b"\0" * 23


def change_user_payload(user="hostile2", db=b"app"):
    # user, auth (1-byte length with SECURE_CONNECTION), database, charset, plugin name
    return (bytes([COM_CHANGE_USER]) + user.encode() + b"\0" + b"\0" + db + b"\0"
            + struct.pack("<H", 45) + b"mysql_native_password\0")


def query(sql, seq=0):
    return packet(seq, bytes([COM_QUERY]) + sql.encode())


def lenenc(data, i):
    """(value, next index) of a length-encoded integer at data[i]."""
    b = data[i]
    if b < 0xFB:
        return b, i + 1
    if b == 0xFB:
        return None, i + 1
    if b == 0xFC:
        return struct.unpack_from("<H", data, i + 1)[0], i + 3
    if b == 0xFD:
        return int.from_bytes(data[i + 1:i + 4], "little"), i + 4
    return struct.unpack_from("<Q", data, i + 1)[0], i + 9


def is_eof(payload):
    return payload[:1] == b"\xfe" and len(payload) < 9


class ProtocolError(AssertionError):
    pass


class Raw:
    """A blocking raw MySQL client socket with its own receive buffer."""

    def __init__(self, port, timeout=RAW_TIMEOUT, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ProtocolError("credproxy closed the connection (had %d of %d bytes)"
                                    % (len(self.buf), n))
            self.buf += chunk

    def read_packet(self):
        self._fill(4)
        n = int.from_bytes(self.buf[:3], "little")
        self._fill(4 + n)
        seq, payload = self.buf[3], self.buf[4:4 + n]
        self.buf = self.buf[4 + n:]
        return seq, payload

    def greeting(self):
        _, g = self.read_packet()
        if g[:1] != b"\x0a":
            raise ProtocolError("not a greeting: %r" % g[:80])
        return g

    def expect_ok(self, what):
        _, p = self.read_packet()
        if p[:1] != b"\x00":
            raise ProtocolError("%s: expected OK, got %r" % (what, p[:120]))
        return p

    def login(self):
        """Reads the greeting, sends the login, reads its OK."""
        self.greeting()
        self.send(packet(1, login_payload()))
        self.expect_ok("login")

    def read_result(self):
        """Reads one reply to COM_QUERY: ('ok', payload), ('err', payload) or ('rows', rows)
        where rows are the first column of each text row (bytes or None)."""
        _, p = self.read_packet()
        if p[:1] == b"\x00":
            return "ok", p
        if p[:1] == b"\xff":
            return "err", bytes(p[:200])
        ncols, _ = lenenc(p, 0)
        for _ in range(ncols):
            self.read_packet()
        _, p = self.read_packet()
        if not is_eof(p):
            raise ProtocolError("expected EOF after column definitions, got %r" % p[:40])
        rows = []
        while True:
            _, p = self.read_packet()
            if is_eof(p):
                return "rows", rows
            if p[:1] == b"\xff":
                return "err", p
            n, i = lenenc(p, 0)
            rows.append(None if n is None else p[i:i + n])

    def read_prepare(self):
        """Reads a COM_STMT_PREPARE reply; returns the statement id."""
        _, p = self.read_packet()
        if p[:1] == b"\xff":
            raise ProtocolError("prepare refused: %r" % p[:200])
        if p[:1] != b"\x00" or len(p) < 12:
            raise ProtocolError("not a prepare OK: %r" % p[:40])
        stmt_id, ncols, nparams = struct.unpack_from("<IHH", p, 1)
        for count in (nparams, ncols):
            if count:
                for _ in range(count):
                    self.read_packet()
                _, e = self.read_packet()
                if not is_eof(e):
                    raise ProtocolError("expected EOF in prepare reply, got %r" % e[:40])
        return stmt_id

    def wait_closed(self, timeout):
        """True when the peer closes (EOF or reset) within timeout; reads and drops data."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True

    def rst(self):
        """Closes with SO_LINGER 0: the peer gets a RST, not a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        self.sock.close()


# --- observing the proxy process -------------------------------------------------------------

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_sessions(port):
    """Client connections the proxy still holds on its port: ESTABLISHED or CLOSE_WAIT (the
    client left and the proxy did not close yet)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local_port = int(parts[1].split(":")[1], 16)
            if local_port == port and parts[3] in ("01", "08"):
                n += 1
    return n


def asan_env_with(extra):
    """ASAN_OPTIONS with extra appended (later options win)."""
    cur = os.environ.get("ASAN_OPTIONS", "")
    return (cur + ":" if cur else "") + extra


class HostileCase(ProxyTestCase):
    def proxy(self, *args, asan_extra=None, nofile=None):
        """A proxy with upstream TLS off (cheaper logins) and args; warmed up by a client."""
        saved = os.environ.get("ASAN_OPTIONS")
        if asan_extra:
            os.environ["ASAN_OPTIONS"] = asan_env_with(asan_extra)
        try:
            p = self.start_proxy("--upstream-tls", "disabled", *args, start=nofile is None)
            if nofile is not None:
                self.start_limited(p, nofile)
        finally:
            if asan_extra:
                if saved is None:
                    del os.environ["ASAN_OPTIONS"]
                else:
                    os.environ["ASAN_OPTIONS"] = saved
        self.assert_live(p)
        return p

    def start_limited(self, p, nofile):
        """Proxy.start with RLIMIT_NOFILE set to nofile in the child."""
        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        log = open(p.log_path, "ab")
        try:
            p.proc = subprocess.Popen(p.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, cwd=p.workdir,
                                      preexec_fn=limit)
        finally:
            log.close()
        p.wait_ready()

    def raw(self, port, **kw):
        """A Raw client closed when the test ends (or by close_raws)."""
        c = Raw(port, **kw)
        if not hasattr(self, "_raws"):
            self._raws = []
            self.addCleanup(self.close_raws)
        self._raws.append(c)
        return c

    def close_raws(self):
        for c in getattr(self, "_raws", []):
            c.close()
        self._raws = []

    def assert_live(self, p, timeout=15.0):
        """The proxy runs and a fresh PyMySQL client gets SELECT 1 within timeout."""
        self.assertTrue(p.alive(), "credproxy exited:\n" + harness.log_tail(p.log_path))
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                conn = connect(p.port, connect_timeout=5, read_timeout=10)
                try:
                    self.assertEqual(scalar(conn, "SELECT 1"), 1)
                    return
                finally:
                    conn.close()
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last = e
                time.sleep(0.2)
        self.fail("liveness: no SELECT 1 through credproxy within %.0fs: %r" % (timeout, last))

    def wait_sessions(self, p, want=0, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            n = open_sessions(p.port)
            if n <= want or time.monotonic() > deadline:
                return n
            time.sleep(0.05)

    def assert_sessions_gone(self, p, what, timeout=10.0):
        n = self.wait_sessions(p, 0, timeout)
        self.assertEqual(n, 0, "%s: credproxy still holds %d client connection(s) %.0fs after "
                         "the clients left" % (what, n, timeout))

    def upstream_count(self):
        user = self.fixture.secret()["username"]
        rows = self.fixture.root_sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                     "WHERE USER = '%s'" % user)
        return int(rows[0][0])


MUX = ("--pool-release-idle-after", "50ms")
def asan_binary():
    """True when the credproxy under test is built with AddressSanitizer."""
    with open(harness.binary(), "rb") as f:
        return b"__asan_init" in f.read()


# For the cases that measure RSS: a small ASan quarantine (freed memory is reused soon, as with
# glibc) and freed pages returned to the system, so RSS shows what credproxy itself keeps.
ASAN_SMALL = ("quarantine_size_mb=4:thread_local_quarantine_size_kb=64:"
              "allocator_release_to_os_interval_ms=100")


# --- 1. pipelined streams ------------------------------------------------------------------

class Pipelined(HostileCase):
    """Each stream on its own proxy, with an idle pooled connection ready (the warm-up
    client's), so the pool can lend one at once, and with multiplexing."""

    LOGIN = packet(1, login_payload())

    def login_quit(self, p):
        # login + COM_QUIT in one write: OK, then the proxy closes.
        c = self.raw(p.port)
        c.greeting()
        c.send(self.LOGIN + packet(0, bytes([COM_QUIT])))
        c.expect_ok("login")
        self.assertTrue(c.wait_closed(10), "no close after a pipelined COM_QUIT")

    def before_greeting(self, p):
        # Everything sent before the greeting was even read.
        c = self.raw(p.port)
        c.send(self.LOGIN + query("SELECT 'early'") + packet(0, bytes([COM_QUIT])))
        c.greeting()
        c.expect_ok("login")
        self.assertEqual(c.read_result(), ("rows", [b"early"]))
        self.assertTrue(c.wait_closed(10))

    def login_query_quit(self, p):
        c = self.raw(p.port)
        c.greeting()
        c.send(self.LOGIN + query("SELECT 42") + packet(0, bytes([COM_QUIT])))
        c.expect_ok("login")
        self.assertEqual(c.read_result(), ("rows", [b"42"]))
        self.assertTrue(c.wait_closed(10))

    def login_20_queries(self, p):
        # More commands than the tracker follows: all answered, in order.
        c = self.raw(p.port)
        c.greeting()
        c.send(self.LOGIN + b"".join(query("SELECT %d" % i) for i in range(20))
               + packet(0, bytes([COM_QUIT])))
        c.expect_ok("login")
        for i in range(20):
            self.assertEqual(c.read_result(), ("rows", [b"%d" % i]), "answer %d" % i)
        self.assertTrue(c.wait_closed(10))

    def login_change_user(self, p):
        # login + COM_CHANGE_USER (naming schema app) + query
        c = self.raw(p.port)
        c.greeting()
        c.send(self.LOGIN + packet(0, change_user_payload()) + query("SELECT DATABASE()"))
        c.expect_ok("login")
        c.expect_ok("COM_CHANGE_USER")
        self.assertEqual(c.read_result(), ("rows", [b"app"]))

    def login_reset(self, p):
        # login + COM_RESET_CONNECTION + query
        c = self.raw(p.port)
        c.greeting()
        c.send(self.LOGIN + packet(0, bytes([COM_RESET_CONNECTION])) + query("SELECT 7"))
        c.expect_ok("login")
        c.expect_ok("COM_RESET_CONNECTION")
        self.assertEqual(c.read_result(), ("rows", [b"7"]))

    def query_change_user(self, p):
        # A query still being answered when COM_CHANGE_USER arrives (a server answers both).
        c = self.raw(p.port)
        c.greeting()
        c.send(self.LOGIN + query("SET @before = 1") + packet(0, change_user_payload())
               + query("SELECT CONCAT(DATABASE(), ':', IFNULL(@before, 'reset'))"))
        c.expect_ok("login")
        r = c.read_result()
        self.assertEqual(r[0], "ok", "SET @before was answered %r" % (r,))
        c.expect_ok("COM_CHANGE_USER")
        self.assertEqual(c.read_result(), ("rows", [b"app:reset"]))

    def query_reset(self, p):
        c = self.raw(p.port)
        c.greeting()
        c.send(self.LOGIN + query("SET @before = 1") + packet(0, bytes([COM_RESET_CONNECTION]))
               + query("SELECT IFNULL(@before, 'reset')"))
        c.expect_ok("login")
        r = c.read_result()
        self.assertEqual(r[0], "ok", "SET @before was answered %r" % (r,))
        c.expect_ok("COM_RESET_CONNECTION")
        self.assertEqual(c.read_result(), ("rows", [b"reset"]))

    def run_stream(self, name, mode):
        """mode: "warm" (an idle pooled connection with the client's capabilities, lent at
        once), "cold" (the pool must connect first) or "multiplexed"."""
        p = self.proxy("--workers", "1", *(MUX if mode == "multiplexed" else ()))
        if mode != "cold":
            # A raw client with the same capabilities runs a plain read and quits: its
            # connection goes back idle without a reset, into the one worker's pool.
            c = self.raw(p.port)
            c.login()
            c.send(query("SELECT 1"))
            self.assertEqual(c.read_result(), ("rows", [b"1"]))
            c.send(packet(0, bytes([COM_QUIT])))
            self.assertTrue(c.wait_closed(10))
            time.sleep(0.3)
        getattr(self, name)(p)
        self.close_raws()
        self.assert_sessions_gone(p, name)
        self.assert_live(p)


for _name in ("login_quit", "before_greeting", "login_query_quit", "login_20_queries",
              "login_change_user", "login_reset", "query_change_user", "query_reset"):
    for _mode in ("warm", "cold", "multiplexed"):
        setattr(Pipelined, "test_%s_%s" % (_name, _mode),
                lambda self, n=_name, m=_mode: self.run_stream(n, m))


# --- 2. every command byte with random bodies ------------------------------------------------

class EveryCommand(HostileCase):
    def one(self, port, cmd, body, rst, declared_extra=0):
        """Logs in, sends cmd+body (header claiming declared_extra more bytes), reads what
        comes for a moment, leaves. Returns an error string or None."""
        c = None
        try:
            c = Raw(port, timeout=15)
            c.login()
            payload = bytes([cmd]) + body
            hdr = struct.pack("<I", len(payload) + declared_extra)[:3] + b"\0"
            c.send(hdr + payload)
            # Read what comes: up to 0.5 s for a first answer, then until 50 ms of quiet.
            c.sock.settimeout(0.5)
            try:
                got = 0
                while got < 1 << 20:
                    chunk = c.sock.recv(65536)
                    if not chunk:
                        break
                    got += len(chunk)
                    c.sock.settimeout(0.05)
            except (socket.timeout, ConnectionResetError):
                pass
            return None
        except Exception as e:  # noqa: BLE001 - collected and reported by the test
            return "cmd 0x%02x len %d: %r" % (cmd, len(body), e)
        finally:
            if c:
                c.rst() if rst else c.close()

    def test_every_command_byte_with_random_bodies(self):
        self.fuzz(self.proxy("--workers", "2", "--handshake-timeout", "5s"))

    def test_every_command_byte_with_random_bodies_multiplexed(self):
        self.fuzz(self.proxy("--workers", "2", "--handshake-timeout", "5s", *MUX))

    def fuzz(self, p):
        rng = random.Random(20261130)
        jobs = []
        for cmd in range(256):
            if cmd == COM_QUIT:
                continue
            for n in (0, 1, 3, 9, 40, 300):
                body = bytes(rng.getrandbits(8) for _ in range(n))
                jobs.append((cmd, body, rng.random() < 0.5, 0))
            # Length fields that lie: a lenenc claiming 2^64-1 bytes, a 4-byte id then a
            # lenenc claiming 16 MiB.
            jobs.append((cmd, b"\xfe" + b"\xff" * 8 + b"x", False, 0))
            jobs.append((cmd, b"\x01\x00\x00\x00\x00\x01\x00\x00\x00\xfd\xff\xff\xff", True, 0))
        # Packet headers claiming more than is sent, then close.
        for cmd in (COM_QUERY, COM_STMT_PREPARE, COM_CHANGE_USER, 0x17, 0x18, 0x00, 0xFF):
            for extra in (1, 1000, 0xFFFFFF - 20):
                jobs.append((cmd, b"SELECT 1", rng.random() < 0.5, extra))
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            errors = [e for e in ex.map(lambda j: self.one(p.port, *j), jobs) if e]
        elapsed = time.monotonic() - start
        self.assertTrue(p.alive(), "credproxy died during the command fuzz")
        # Logins themselves must not fail; a few odd commands may end a session, not more.
        self.assertLess(len(errors), 10, "%d of %d sessions failed before their command "
                        "(%.1fs), e.g.:\n%s" % (len(errors), len(jobs), elapsed,
                                               "\n".join(errors[:10])))
        self.assert_sessions_gone(p, "command fuzz", timeout=15)
        self.assert_live(p)


# --- 3. half-closed and reset sockets at every stage ----------------------------------------

STAGES = ("before_greeting", "after_greeting", "mid_login", "after_login", "mid_command",
          "pending_command", "mid_result")


class HalfClose(HostileCase):
    def drive(self, port, stage):
        """Connects and takes the session to stage; returns the Raw client."""
        c = Raw(port, timeout=15, rcvbuf=65536)
        login = packet(1, login_payload())
        if stage == "before_greeting":
            return c
        c.greeting()
        if stage == "after_greeting":
            return c
        if stage == "mid_login":
            c.send(login[:12])
            return c
        c.send(login)
        if stage == "after_login":
            return c
        c.expect_ok("login")
        if stage == "mid_command":
            c.send(struct.pack("<I", 100)[:3] + b"\0" + bytes([COM_QUERY]) + b"SELECT 1 /* ")
        elif stage == "pending_command":
            c.send(query("SELECT SLEEP(0.3)"))
        elif stage == "mid_result":
            c.send(query("SELECT seq, REPEAT('x', 1000) FROM seq_1_to_100000"))
            c._fill(100000)
        return c

    def stages(self, p):
        for stage in STAGES:
            for how in ("shut_wr", "rst"):
                with self.subTest(stage=stage, how=how):
                    c = self.drive(p.port, stage)
                    self.assertGreaterEqual(open_sessions(p.port), 1, "the session is not seen")
                    if how == "shut_wr":
                        c.sock.shutdown(socket.SHUT_WR)
                        start = time.monotonic()
                        closed = c.wait_closed(10)
                        c.close()
                        self.assertTrue(closed, "%s: a half-closed client was not closed within "
                                        "10s (handshake_timeout is 60s)" % stage)
                        self.assertLess(time.monotonic() - start, 10)
                    else:
                        c.rst()
                    self.assert_sessions_gone(p, "%s/%s" % (stage, how))
                    self.assert_live(p)

    def test_half_close_and_reset_at_every_stage(self):
        self.stages(self.proxy("--handshake-timeout", "60s"))

    def test_half_close_and_reset_at_every_stage_multiplexed(self):
        self.stages(self.proxy("--handshake-timeout", "60s", *MUX))


# --- 4. thousands of logins that never finish -------------------------------------------------

class NeverFinish(HostileCase):
    N = 5000
    TIMEOUT = 2.0
    MARGIN = 15.0  # ASan on 2 shared cores

    def one_round(self, p):
        """Opens N connections that never log in; checks each is closed by the timeout while
        a real client is served. Returns the peak RSS (KiB) seen."""
        sel = selectors.DefaultSelector()
        opened = {}
        closed = {}
        peak = rss_kib(p.proc.pid)

        def poll(timeout):
            for key, _ in sel.select(timeout):
                s = key.fileobj
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    chunk = b""
                except BlockingIOError:
                    continue
                if not chunk:
                    closed[s] = time.monotonic()
                    sel.unregister(s)

        try:
            for _ in range(0, self.N, 500):
                for _ in range(500):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.settimeout(10)
                    s.connect(("127.0.0.1", p.port))
                    s.setblocking(False)
                    opened[s] = time.monotonic()
                    sel.register(s, selectors.EVENT_READ)
                poll(0)
                peak = max(peak, rss_kib(p.proc.pid))
            # Real clients are served while thousands of logins hang.
            start = time.monotonic()
            self.assert_live(p, timeout=10)
            live_latency = time.monotonic() - start
            deadline = max(opened.values()) + self.TIMEOUT + self.MARGIN
            while len(closed) < len(opened) and time.monotonic() < deadline:
                poll(0.2)
                peak = max(peak, rss_kib(p.proc.pid))
            late = [s for s in opened
                    if s not in closed or closed[s] - opened[s] > self.TIMEOUT + self.MARGIN]
            self.assertEqual(len(late), 0, "%d of %d unfinished logins were not closed within "
                             "handshake_timeout %.0fs + %.0fs" % (len(late), len(opened),
                                                                  self.TIMEOUT, self.MARGIN))
            self.assertLess(live_latency, 10)
        finally:
            for s in opened:
                s.close()
            sel.close()
        self.assert_sessions_gone(p, "unfinished logins")
        return peak

    def test_5000_unfinished_handshakes_are_closed(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = self.N + 500
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        self.assertGreaterEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], want,
                                "the test needs RLIMIT_NOFILE >= %d (ulimit -Hn is %d)"
                                % (want, hard))
        p = self.proxy("--handshake-timeout", "%dms" % (self.TIMEOUT * 1000), "--log-level",
                       "info", asan_extra=ASAN_SMALL)
        before = rss_kib(p.proc.pid)
        peak1 = self.one_round(p)
        time.sleep(0.5)
        after1 = rss_kib(p.proc.pid)
        peak2 = self.one_round(p)
        time.sleep(0.5)
        after2 = rss_kib(p.proc.pid)
        peak3 = self.one_round(p)
        time.sleep(0.5)
        after3 = rss_kib(p.proc.pid)
        msg = ("RSS before %.1f MiB; round 1 peak %.1f, after %.1f; round 2 peak %.1f, after "
               "%.1f; round 3 peak %.1f, after %.1f MiB"
               % (before / 1024, peak1 / 1024, after1 / 1024, peak2 / 1024, after2 / 1024,
                  peak3 / 1024, after3 / 1024))
        print("\n  3 x %d unfinished logins: %s" % (self.N, msg))
        # What thousands of idle logins cost stays within the README's 16 KiB per idle client.
        self.assertLess(peak1 - before, self.N * 16, "more than 16 KiB per pending login: " + msg)
        # Whether RSS falls right after the sessions close depends on the allocator (under ASan
        # anything from 10% to 60% of the growth was returned on main, run to run), so the check
        # is that the memory is kept for reuse: a later round of 5,000 adds (almost) nothing.
        # glibc's heap grows by steps now and then even when nothing leaks (seen: +6 MiB in round
        # 2, then nothing in round 3, with one worker), so one of rounds 2 and 3 must add almost
        # nothing; a leak of even 1 KiB per login adds 5 MiB to both.
        # Under ASan, shadow memory and the allocator's own reserve move RSS by 3-6 MiB a round
        # with nothing leaking (the binary that passed CI before does the same): there,
        # LeakSanitizer at the exit is the leak check, and this one would only be noise.
        if not asan_binary():
            self.assertLess(min(after2 - after1, after3 - after2), 4096,
                            "RSS grew round after round: " + msg)
        self.assert_live(p)


# --- 5. clients that vanish mid-result --------------------------------------------------------

class VanishMidResult(HostileCase):
    def vanish(self, p):
        rng = random.Random(5)
        for i in range(12):
            c = Raw(p.port, timeout=15, rcvbuf=65536)
            c.login()
            c.send(query("SELECT seq, REPEAT('x', 1000) FROM seq_1_to_200000"))
            c._fill(rng.choice((1000, 70000, 400000, 2000000)))
            c.rst() if i % 2 == 0 else c.close()
        self.assert_sessions_gone(p, "vanished clients")
        # The queries cut short do not keep upstream connections busy: each upstream
        # connection that was mid-result is closed, so at most the idle pool remains.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            busy = self.fixture.root_sql(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '%s' AND "
                "INFO LIKE 'SELECT seq, REPEAT%%'" % self.fixture.secret()["username"])
            if int(busy[0][0]) == 0:
                break
            time.sleep(0.2)
        self.assertEqual(int(busy[0][0]), 0, "queries of vanished clients still run upstream")
        self.assert_live(p)

    def test_vanish_mid_result(self):
        self.vanish(self.proxy())

    def test_vanish_mid_result_multiplexed(self):
        self.vanish(self.proxy(*MUX))


# --- 6. TLS slowloris -------------------------------------------------------------------------

def client_hello():
    """The bytes of a real TLS ClientHello."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inb, outb, server_side=False)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outb.read()
    assert len(hello) > 100, "no ClientHello produced"
    return hello


class TLSSlowloris(HostileCase):
    TIMEOUT = 2.0
    MARGIN = 8.0

    def setUp(self):
        super().setUp()
        tls = self.fixture.tls
        self.p = self.proxy("--tls-cert", str(tls / "proxy-cert.pem"), "--tls-key",
                            str(tls / "proxy-key.pem"), "--handshake-timeout", "2s")

    def assert_closed_by_timeout(self, c, what):
        start = time.monotonic()
        closed = c.wait_closed(self.TIMEOUT + self.MARGIN)
        c.close()
        self.assertTrue(closed, "%s: not closed %.0fs after handshake_timeout (%.0fs)"
                        % (what, self.MARGIN, self.TIMEOUT))
        self.assertLess(time.monotonic() - start, self.TIMEOUT + self.MARGIN)

    def test_plain_stall_after_greeting(self):
        c = Raw(self.p.port)
        c.greeting()
        self.assert_closed_by_timeout(c, "plain client stalled after the greeting")
        self.assert_live(self.p)

    def test_stall_after_ssl_request(self):
        c = Raw(self.p.port)
        c.greeting()
        c.send(packet(1, ssl_request_payload()))
        self.assert_closed_by_timeout(c, "client stalled after SSLRequest")
        self.assert_sessions_gone(self.p, "SSLRequest stall")
        self.assert_live(self.p)

    def test_stall_halfway_through_client_hello(self):
        hello = client_hello()
        c = Raw(self.p.port)
        c.greeting()
        c.send(packet(1, ssl_request_payload()) + hello[:len(hello) // 2])
        self.assert_closed_by_timeout(c, "client stalled halfway through its ClientHello")
        self.assert_sessions_gone(self.p, "ClientHello stall")
        self.assert_live(self.p)

    def test_stall_after_tls_handshake(self):
        c = Raw(self.p.port)
        c.greeting()
        c.send(packet(1, ssl_request_payload()))
        ctx = ssl.create_default_context(cafile=str(self.fixture.tls / "ca.pem"))
        ctx.check_hostname = False
        tls = ctx.wrap_socket(c.sock, server_hostname="127.0.0.1")
        c.sock = tls
        self.assert_closed_by_timeout(c, "client stalled after the TLS handshake")
        self.assert_sessions_gone(self.p, "post-handshake stall")
        self.assert_live(self.p)


# --- 7. memory once the reply tracker has lost track -----------------------------------------

class UntrackedPrepareMemory(HostileCase):
    COUNT = 600
    SIZE = 60 * 1024
    LIMIT_MIB = 16.0  # the texts alone are ~35 MiB; a bounded proxy keeps none of them

    def prepares_after(self, lose_track):
        p = self.proxy("--workers", "1",
                       asan_extra=ASAN_SMALL)
        c = Raw(p.port, timeout=60)
        c.login()
        lose_track(c)
        # A first round warms up buffers; then measure.
        text = "SELECT '%s'" % ("p" * (self.SIZE - 10))
        prep = packet(0, bytes([COM_STMT_PREPARE]) + text.encode())

        def round_of(n):
            for _ in range(n):
                c.send(prep)
                stmt = c.read_prepare()
                c.send(packet(0, bytes([COM_STMT_CLOSE]) + struct.pack("<I", stmt)))

        round_of(20)
        before = rss_kib(p.proc.pid)
        round_of(self.COUNT)
        c.send(query("SELECT 'still here'"))
        self.assertEqual(c.read_result(), ("rows", [b"still here"]))
        after = rss_kib(p.proc.pid)
        grown = (after - before) / 1024
        print("\n  %d prepares of %d KiB: RSS %.1f -> %.1f MiB (+%.1f)"
              % (self.COUNT, self.SIZE // 1024, before / 1024, after / 1024, grown))
        self.assertLess(grown, self.LIMIT_MIB, "RSS grew by %.1f MiB over %d prepares of %d KiB"
                        % (grown, self.COUNT, self.SIZE // 1024))
        c.close()
        self.assert_live(p)

    def test_control_tracked_session(self):
        # The same prepares with the tracker following every reply: the bound holds.
        self.prepares_after(lambda c: None)

    def test_after_unknown_command(self):
        def com_time(c):
            c.send(packet(0, bytes([COM_TIME])))
            _, p = c.read_packet()
            self.assertEqual(p[:1], b"\xff", "COM_TIME should be refused by the server")
        self.prepares_after(com_time)

    def test_after_17_pipelined_commands(self):
        def pipelined(c):
            c.send(b"".join(query("SELECT %d" % i) for i in range(17)))
            for i in range(17):
                self.assertEqual(c.read_result(), ("rows", [b"%d" % i]))
        self.prepares_after(pipelined)


# --- 9. a client that floods without reading --------------------------------------------------

class FloodWithoutReading(HostileCase):
    """
    A client pipelines thousands of queries and reads none of the replies for a
    while: its socket fills, then credproxy's buffer toward it, then credproxy
    stops reading the server, the server stops reading credproxy, and
    credproxy stops reading the client (each side's read high mark). When the
    client starts reading, everything resumes and every reply arrives in
    order. Meanwhile another client is served normally.
    """
    QUERIES = 6000
    ROW = 2000  # bytes per reply row: ~12 MB of replies, far above every buffer in the way

    def flood(self, p):
        c = self.raw(p.port, timeout=60, rcvbuf=16384)
        c.login()
        # ~1.5 MB of statements: more than credproxy reads ahead of the server (256 KiB)
        stream = b"".join(query("SELECT REPEAT('%s', %d) /* %s */"
                                % ("abcdefghij"[i % 10], self.ROW, "p" * 200))
                          for i in range(self.QUERIES))
        sender = threading.Thread(target=c.send, args=(stream,), daemon=True)
        sender.start()
        time.sleep(1.5)  # nothing read: every buffer on the way fills and reading pauses
        other = connect(p.port, connect_timeout=5, read_timeout=10)
        try:
            t0 = time.monotonic()
            self.assertEqual(scalar(other, "SELECT 'served'"), "served")
            self.assertLess(time.monotonic() - t0, 5.0, "another client waited on the flood")
        finally:
            other.close()
        for i in range(self.QUERIES):
            kind, rows = c.read_result()
            self.assertEqual(kind, "rows", "reply %d: %r" % (i, rows))
            self.assertEqual(rows, ["abcdefghij"[i % 10].encode() * self.ROW],
                             "reply %d out of order or cut" % i)
        sender.join(30)
        self.assertFalse(sender.is_alive(), "the client could not finish sending")
        c.send(query("SELECT 'after'"))
        self.assertEqual(c.read_result(), ("rows", [b"after"]))
        self.assert_live(p)

    def test_flood_without_reading(self):
        self.flood(self.proxy("--workers", "1"))

    def test_flood_without_reading_multiplexed(self):
        self.flood(self.proxy("--workers", "1", *MUX))


# --- 8. flood beyond the descriptor limit -----------------------------------------------------

class FdFlood(HostileCase):
    NOFILE = 200
    CLIENTS = 300

    def test_flood_beyond_fd_limit(self):
        p = self.proxy("--workers", "2", "--handshake-timeout", "60s", "--log-level", "info",
                       nofile=self.NOFILE)
        lines_before = len(p.log().splitlines())
        socks = []
        try:
            for _ in range(self.CLIENTS):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(10)
                s.connect(("127.0.0.1", p.port))  # the kernel's backlog takes what is not accepted
                socks.append(s)
            time.sleep(0.5)
            cpu0 = cpu_seconds(p.proc.pid)
            time.sleep(3.0)
            cpu = cpu_seconds(p.proc.pid) - cpu0
            alive = p.alive()
        finally:
            for s in socks:
                s.close()
        log = p.log().splitlines()[lines_before:]
        accept_lines = [ln for ln in log if "accept" in ln and "accepted on route" not in ln]
        self.assertTrue(alive, "credproxy died at its descriptor limit")
        # Recovers once they leave (checked before the other verdicts, so all are seen).
        recovered = None
        try:
            self.assert_sessions_gone(p, "flood", timeout=15)
            self.assert_live(p, timeout=20)
        except AssertionError as e:
            recovered = e
        print("\n  %d clients at RLIMIT_NOFILE %d: %.2fs CPU in 3s, %d log lines about accept, "
              "%s" % (self.CLIENTS, self.NOFILE, cpu, len(accept_lines),
                      "recovered" if recovered is None else "did not recover"))
        self.assertLess(cpu, 0.5, "credproxy used %.2fs of CPU in 3s while idle at its "
                        "descriptor limit (spinning on accept?)" % cpu)
        self.assertLess(len(accept_lines), 100, "%d log lines about accept in ~4s, e.g. %r"
                        % (len(accept_lines), accept_lines[:2]))
        if recovered:
            raise recovered


if __name__ == "__main__":
    harness.main()
