#!/usr/bin/python3
"""Lifecycle regressions: session and pooled-connection teardown on unusual paths.

credproxy runs against the fake MySQL server (tests/fakeserver/fakeserver.py, itself checked
against PyMySQL and the mariadb CLI by test_fakeserver.py) which scripts the upstream's faults:
errors and lost connections during the pool's reset, an auth switch to the cleartext plugin,
oversized session-state OKs, wrong sequence ids, trickled and cut replies. Clients are PyMySQL,
the mariadb CLI and raw sockets for the pipelined and truncated packets no library sends.

Every test ends by checking that the proxy still serves a fresh client; the harness then stops
it with SIGTERM and fails on a non-zero exit or a sanitizer report in its log (run with the
sanitizer build: CREDPROXY_BIN=build-asan/proxy/credproxy ASAN_OPTIONS=detect_leaks=1).
Needs neither the MariaDB fixture nor credentials.
"""

import os
import re
import socket
import struct
import sys
import tempfile
import time
import unittest
from pathlib import Path

import pymysql

import harness
from harness import Fixture, Proxy, ProxyTestCase, err_packet, recv_packet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakeserver"))
from fakeserver import FakeServer, Rule  # noqa: E402

UPSTREAM_PASSWORD = "fake-Upstream-Pw-7"
TRACKING = r"^SET SESSION session_track_"

# Client capabilities of the raw clients: protocol 41, no session tracking, no DEPRECATE_EOF.
RAW_CAPS = ((1 << 0) | (1 << 2) | (1 << 9) | (1 << 13) | (1 << 15) | (1 << 16) | (1 << 17)
            | (1 << 19))


def packet(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def handshake_response(user=b"lifecycle"):
    body = struct.pack("<IIB", RAW_CAPS, 1 << 24, 45) + b"\0" * 23
    body += user + b"\0" + b"\0" + b"mysql_native_password\0"
    return packet(1, body)


COM_QUIT = packet(0, b"\x01")


class LifecycleTestCase(ProxyTestCase):
    """Runs credproxy against a fake server; needs no MariaDB fixture."""

    @classmethod
    def setUpClass(cls):
        harness.binary()

    def setUp(self):
        self.workdir = Path(tempfile.mkdtemp(prefix="lifecycle." + self._testMethodName[:24]
                                             + "."))
        self.proxies = []

    def fake(self, **kw):
        kw.setdefault("password", UPSTREAM_PASSWORD)
        srv = FakeServer(**kw).start()
        self.addCleanup(self.check_fake, srv)
        return srv

    def check_fake(self, srv):
        srv.stop()
        self.assertEqual(srv.errors, [], "the fake server raised")

    def proxy_for(self, srv, *args):
        secret = {"username": "app", "password": UPSTREAM_PASSWORD, "engine": "mysql",
                  "host": "127.0.0.1", "port": srv.port, "dbname": "app"}
        workdir = Path(tempfile.mkdtemp(prefix="p", dir=self.workdir))
        p = Proxy(workdir, ["--upstream-tls", "disabled", "--workers", "1",
                            "--connect-timeout", "3s"] + list(args), secret)
        self.proxies.append(p)
        self.addCleanup(p.stop)
        p.start()
        # The start-up probe logs in once and leaves; let it finish so connection indexes and
        # rules that fire once are the clients'.
        self.assertTrue(srv.wait_for(lambda s: s.logins >= 1 and all(
            c.closed for c in s.connections)), "credproxy's start-up probe did not log in")
        return p

    def client(self, proxy, **kw):
        c = harness.connect(proxy.port, **kw)
        self.addCleanup(lambda: c.open and c.close())
        return c

    def raw(self, proxy, timeout=10.0):
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)
        self.addCleanup(s.close)
        pkt = recv_packet(s)
        self.assertIsNotNone(pkt, "no greeting")
        self.assertEqual(pkt[1][0], 10, "greeting is not protocol 10")
        return s

    def read_login_ok(self, s):
        pkt = recv_packet(s)
        self.assertIsNotNone(pkt, "the proxy closed instead of answering the login")
        self.assertEqual(pkt[1][0], 0x00, "login not answered with OK: %r" % (pkt[1][:60],))

    def read_text_result(self, s):
        """Reads a text result set (EOF-terminated metadata and rows); returns the rows."""
        pkt = recv_packet(s)
        self.assertIsNotNone(pkt, "the connection closed instead of answering the query")
        self.assertNotEqual(pkt[1][0], 0xff, "query answered with ERR %r" % (err_packet(pkt[1]),))
        ncols = pkt[1][0]
        for _ in range(ncols):
            self.assertIsNotNone(recv_packet(s), "metadata cut short")
        eof = recv_packet(s)
        self.assertEqual(eof[1][0], 0xfe, "no EOF after the metadata")
        rows = []
        while True:
            pkt = recv_packet(s)
            self.assertIsNotNone(pkt, "rows cut short")
            if pkt[1][0] == 0xfe and len(pkt[1]) < 9:
                return rows
            row, pos = [], 0
            p = pkt[1]
            while pos < len(p):
                n = p[pos]
                row.append(p[pos + 1:pos + 1 + n].decode())
                pos += 1 + n
            rows.append(row)

    def raw_select_1_and_quit(self, proxy):
        s = self.raw(proxy)
        s.sendall(handshake_response())
        self.read_login_ok(s)
        s.sendall(packet(0, b"\x03SELECT 1"))
        self.assertEqual(self.read_text_result(s), [["1"]])
        s.sendall(COM_QUIT)
        self.assertEqual(harness.recv_until_closed(s), b"")
        s.close()

    def assert_serves(self, proxy, what="SELECT 1"):
        """The proxy is alive and a fresh client gets an answer."""
        self.assertTrue(proxy.alive(), "credproxy died:\n" + harness.log_tail(proxy.log_path))
        c = harness.connect(proxy.port)
        try:
            self.assertEqual(harness.scalar(c, what), 1)
        finally:
            c.close()
        self.assertTrue(proxy.alive(), "credproxy died:\n" + harness.log_tail(proxy.log_path))

    def assert_clean_error(self, exc):
        """A PyMySQL error that came from an ERR packet or a closed connection, nothing odd."""
        code = exc.args[0] if exc.args else None
        self.assertIsInstance(code, int, "not a MySQL error: %r" % (exc,))
        if code != 2013:  # 2013 is PyMySQL's own "lost connection", not from a packet
            harness.assert_server_error_code(self, code)

    def wait_quits(self, proxy, n, timeout=10.0):
        """Waits until the proxy has handled n client COM_QUITs (connections back in the pool)."""
        deadline = time.monotonic() + timeout
        while proxy.log().count("closed: client quit") < n:
            self.assertLess(time.monotonic(), deadline, "the proxy did not see the client quit")
            time.sleep(0.02)

    def wait_closed(self, srv, index, timeout=10.0):
        self.assertTrue(srv.wait_for(lambda s: s.connections[index].closed, timeout),
                        "credproxy kept upstream connection %d open" % index)


# --- a: pipelined login ------------------------------------------------------------------------

class PipelinedLogin(LifecycleTestCase):
    def test_login_and_quit_in_one_write_on_a_pooled_connection(self):
        srv = self.fake()
        proxy = self.proxy_for(srv)
        self.raw_select_1_and_quit(proxy)  # leaves an idle connection: the next login is instant
        self.assertTrue(srv.wait_for(lambda s: s.count("COM_QUERY", "^SELECT 1$") == 1))
        for _ in range(3):
            s = self.raw(proxy)
            s.sendall(handshake_response() + COM_QUIT)
            data = harness.recv_until_closed(s)
            self.assertTrue(data.startswith(b"\x07\x00\x00\x02\x00"),
                            "login in the same write as COM_QUIT not answered with OK: %r"
                            % data[:16])
            s.close()
        self.assert_serves(proxy)

    def test_login_and_quit_in_one_write_on_a_new_connection(self):
        srv = self.fake()
        proxy = self.proxy_for(srv)
        s = self.raw(proxy)
        s.sendall(handshake_response() + COM_QUIT)
        harness.recv_until_closed(s)
        s.close()
        self.assert_serves(proxy)

    def check_login_query_quit(self, proxy):
        s = self.raw(proxy)
        s.sendall(handshake_response() + packet(0, b"\x03SELECT 1") + COM_QUIT)
        self.read_login_ok(s)
        self.assertEqual(self.read_text_result(s), [["1"]],
                         "a query pipelined between login and COM_QUIT lost its answer")
        self.assertEqual(harness.recv_until_closed(s), b"")
        s.close()

    def test_login_query_quit_in_one_write_on_a_pooled_connection(self):
        srv = self.fake()
        proxy = self.proxy_for(srv)
        self.raw_select_1_and_quit(proxy)
        self.assertTrue(srv.wait_for(lambda s: s.count("COM_QUERY", "^SELECT 1$") == 1))
        self.check_login_query_quit(proxy)
        self.assert_serves(proxy)

    def test_login_query_quit_in_one_write_on_a_new_connection(self):
        srv = self.fake()
        proxy = self.proxy_for(srv)
        self.check_login_query_quit(proxy)
        self.assert_serves(proxy)


# --- b, c: the pool's own commands fail --------------------------------------------------------

class PoolResetFails(LifecycleTestCase):
    def leave_dirty(self, proxy, srv):
        """A client changes its session and leaves: the pool resets its connection."""
        c = self.client(proxy)
        with c.cursor() as cur:
            cur.execute("SET SESSION sql_mode=''")
        index = srv.connections[-1].index
        c.close()
        self.assertTrue(srv.wait_for(lambda s: any(
            n == "COM_RESET_CONNECTION" for _, n, _ in s.commands(index))),
            "the pool did not reset the connection")
        return index

    def check_reset_failure(self, rule):
        srv = self.fake(rules=[rule])
        proxy = self.proxy_for(srv)
        index = self.leave_dirty(proxy, srv)
        self.wait_closed(srv, index)  # a connection whose reset failed is not kept
        self.assert_serves(proxy)
        self.assertGreater(srv.connections[-1].index, index)
        # and the pool still works after that: reuse and reset again
        self.leave_dirty(proxy, srv)
        self.assert_serves(proxy)

    def test_reset_connection_refused(self):
        self.check_reset_failure(Rule(command="COM_RESET_CONNECTION", action="err", times=1,
                                      error=(1047, "08S01", "Unknown command")))

    def test_schema_gone_at_reset(self):
        # The secret's dbname was dropped: COM_INIT_DB during the reset gets 1049.
        self.check_reset_failure(Rule(command="COM_INIT_DB", action="err", times=1,
                                      error=(1049, "42000", "Unknown database 'app'")))

    def test_tracking_refused_at_reset(self):
        self.check_reset_failure(Rule(command="COM_QUERY", query=TRACKING, skip=1, times=1,
                                      action="err",
                                      error=(1227, "42000", "Access denied; SUPER needed")))

    def test_connection_lost_at_reset(self):
        self.check_reset_failure(Rule(command="COM_RESET_CONNECTION", action="drop", times=1))

    def test_connection_lost_at_init_db_during_reset(self):
        self.check_reset_failure(Rule(command="COM_INIT_DB", action="drop", times=1))

    def test_connection_lost_at_tracking_during_reset(self):
        self.check_reset_failure(Rule(command="COM_QUERY", query=TRACKING, skip=1, times=1,
                                      action="drop"))


class PoolPrepareFails(LifecycleTestCase):
    def test_connection_lost_at_tracking_on_a_new_connection(self):
        srv = self.fake(rules=[Rule(command="COM_QUERY", query=TRACKING, action="drop",
                                    times=1)])
        proxy = self.proxy_for(srv)
        try:
            c = self.client(proxy, autocommit=None)  # the login only, no command yet
        except pymysql.err.MySQLError as e:
            self.assert_clean_error(e)  # a clean refusal at login is acceptable
        else:
            # Logged in: then the connection it got must work, and have tracking on.
            with c.cursor() as cur:
                cur.execute("SELECT 1")
                self.assertEqual(cur.fetchone(), (1,))
            served = [i for i, n, t in srv.commands() if n == "COM_QUERY" and t == "SELECT 1"]
            self.assertEqual(len(served), 1)
            setup = [t or "" for _, n, t in srv.commands(served[0]) if t != "SELECT 1"]
            self.assertTrue(any(re.match(TRACKING, t) for t in setup),
                            "the client's query ran on a connection without session tracking")
        self.wait_closed(srv, 1)
        self.assertTrue(all(n == "COM_QUERY" for _, n, _ in srv.commands(1)),
                        "client commands reached the connection that was lost")
        self.assert_serves(proxy)

    def test_tracking_refused_on_a_new_connection_is_not_fatal(self):
        # A server without the session_track_* variables: the connection works, untracked.
        srv = self.fake(rules=[Rule(command="COM_QUERY", query=TRACKING, action="err",
                                    error=(1193, "HY000", "Unknown system variable"))])
        proxy = self.proxy_for(srv)
        c = self.client(proxy)
        self.assertEqual(harness.scalar(c, "SELECT 1"), 1)
        c.close()
        self.assert_serves(proxy)

    def test_connection_lost_at_init_db_when_lending(self):
        srv = self.fake(rules=[Rule(command="COM_INIT_DB", query="^other$", action="drop",
                                    times=1)])
        proxy = self.proxy_for(srv)
        c = self.client(proxy, autocommit=None)  # schema app (the secret's); plain reads only
        self.assertEqual(harness.scalar(c, "SELECT 1"), 1)
        index = srv.connections[-1].index
        c.close()
        self.wait_quits(proxy, 1)  # idle in the pool, no reset needed
        try:
            c2 = self.client(proxy, database="other")  # the idle connection must switch schema
            self.assertEqual(harness.scalar(c2, "SELECT DATABASE()"), "other")
        except pymysql.err.MySQLError as e:
            self.assert_clean_error(e)
        self.wait_closed(srv, index)
        self.assertEqual(srv.commands(index)[-1][1:], ("COM_INIT_DB", "other"),
                         "commands reached the connection after it was lost")
        self.assert_serves(proxy)
        c3 = self.client(proxy, database="other")
        self.assertEqual(harness.scalar(c3, "SELECT DATABASE()"), "other")

    def test_unknown_schema_when_lending_keeps_the_connection(self):
        srv = self.fake()
        proxy = self.proxy_for(srv)
        c = self.client(proxy, autocommit=None)
        self.assertEqual(harness.scalar(c, "SELECT 1"), 1)
        index = srv.connections[-1].index
        c.close()
        self.wait_quits(proxy, 1)
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            self.client(proxy, database="missing")
        self.assertEqual(srv.commands(index)[-1][1:], ("COM_INIT_DB", "missing"))
        self.assertEqual(cm.exception.args[0], 1049)
        self.assert_serves(proxy)


# --- d: auth switch to the cleartext plugin ----------------------------------------------------

class ClearPasswordSwitch(LifecycleTestCase):
    def check_refused(self, srv):
        proxy = self.proxy_for(srv)
        start = time.monotonic()
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            self.client(proxy)
        self.assertLess(time.monotonic() - start, 10)
        harness.assert_server_error_code(self, cm.exception.args[0])
        self.assertIn("cleartext", str(cm.exception.args[1]))
        p = harness.mariadb_cli("SELECT 1", port=proxy.port)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("cleartext", p.stderr)
        self.assertTrue(all(c.clear_password_received is None for c in srv.connections),
                        "credproxy sent the password in clear without TLS")
        self.assertTrue(proxy.alive())
        srv.auth_switch = None  # the server stops asking: clients get in again
        srv.auth_switch_extra = b""
        self.assert_serves(proxy)

    def test_refused_without_tls(self):
        self.check_refused(self.fake(auth_switch="mysql_clear_password"))

    def test_refused_with_more_bytes_after_the_switch(self):
        # The switch request and another packet arrive in one segment.
        ok = bytes.fromhex("0700000300000002000000")
        self.check_refused(self.fake(auth_switch="mysql_clear_password",
                                     auth_switch_extra=ok * 3))


class Ed25519Switch(LifecycleTestCase):
    def test_nonce_ending_in_a_zero_byte(self):
        """client_ed25519's 32-byte nonce has no NUL after it: a last 0 byte is part of it."""
        srv = self.fake(auth_switch="client_ed25519")
        proxy = self.proxy_for(srv)
        self.assert_serves(proxy)
        self.assertTrue(any(getattr(c, "ed25519_reply_len", None) == 64 for c in srv.connections),
                        "credproxy did not answer the ed25519 switch with a signature")


# --- e: big OK packets -------------------------------------------------------------------------

class BigSessionState(LifecycleTestCase):
    def check(self, trickle):
        rule = Rule(command="COM_QUERY", query="^SET big_state", action="ok",
                    state_size=100 * 1024, trickle=trickle)
        srv = self.fake(rules=[rule])
        proxy = self.proxy_for(srv)
        # PyMySQL does not ask for session tracking: credproxy rewrites the OK without it.
        c = self.client(proxy)
        with c.cursor() as cur:
            try:
                cur.execute("SET big_state=1")
            except pymysql.err.MySQLError as e:
                self.assert_clean_error(e)
            else:
                cur.execute("SELECT 'after'")
                self.assertEqual(cur.fetchone(), ("after",))
        c.close()
        # libmariadb asks for session tracking: the OK goes through with its state block.
        p = harness.mariadb_cli("SET big_state=1; SELECT 'after'", port=proxy.port)
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "after"), p.stderr)
        self.assertEqual(rule.fired, 2)
        self.assert_serves(proxy)

    def test_ok_over_64k_in_one_write(self):
        self.check(None)

    def test_ok_over_64k_trickled(self):
        self.check((8192, 0.005))


# --- f: misbehaving server ---------------------------------------------------------------------

class ServerFaults(LifecycleTestCase):
    def test_wrong_sequence_ids(self):
        srv = self.fake(rules=[Rule(command="COM_QUERY", query="'wrong-seq'", seq_offset=7)])
        proxy = self.proxy_for(srv)
        c = self.client(proxy)
        try:
            r = harness.scalar(c, "SELECT 'wrong-seq'")
            self.assertEqual(r, "wrong-seq")
        except pymysql.err.MySQLError as e:
            self.assertIn("sequence", str(e).lower() + repr(e))  # the client noticed; fine
        p = harness.mariadb_cli("SELECT 'wrong-seq'", port=proxy.port)
        self.assertIn(p.returncode, (0, 1), p.stderr)
        self.assert_serves(proxy)

    def test_trickled_reply(self):
        srv = self.fake(rules=[Rule(command="COM_QUERY", query="'slow'", trickle=(1, 0.003))])
        proxy = self.proxy_for(srv)
        c = self.client(proxy)
        self.assertEqual(harness.scalar(c, "SELECT 'slow', 2"), "slow")
        self.assertEqual(self.cli_value("SELECT 'slow'", port=proxy.port), "slow")
        self.assert_serves(proxy)

    def test_reply_cut_short(self):
        for cut in (2, 5, 13, 40):
            with self.subTest(cut=cut):
                srv = self.fake(rules=[Rule(command="COM_QUERY", query="'cut'", action="drop",
                                            partial=cut)])
                proxy = self.proxy_for(srv)
                c = self.client(proxy)
                with self.assertRaises(pymysql.err.MySQLError) as cm:
                    harness.scalar(c, "SELECT 'cut', 1")
                self.assert_clean_error(cm.exception)
                self.assert_serves(proxy)

    def test_stray_packet_after_the_pools_reset(self):
        # The server answers the reset's COM_INIT_DB and then sends one more OK: the connection
        # holds an unasked-for reply and must not be lent to the next client.
        ok = bytes.fromhex("0700000200000002000000")
        srv = self.fake(rules=[Rule(command="COM_INIT_DB", extra=ok, times=1)])
        proxy = self.proxy_for(srv)
        c = self.client(proxy)
        with c.cursor() as cur:
            cur.execute("SET SESSION sql_mode=''")
        c.close()
        self.assertTrue(srv.wait_for(lambda s: s.rules[0].fired == 1), "no reset ran")
        time.sleep(0.3)
        c = self.client(proxy)
        self.assertEqual(harness.scalar(c, "SELECT 'mine'"), "mine")
        self.assertEqual(harness.scalar(c, "SELECT 2"), 2)
        c.close()
        self.assert_serves(proxy)

    def test_reply_to_a_command_without_one(self):
        # An OK answering COM_STMT_CLOSE (which has no reply), and an OK after a full result.
        ok = bytes.fromhex("0700000100000002000000")
        srv = self.fake(rules=[Rule(command="COM_QUERY", query="'stray'", extra=ok),
                               Rule(command="COM_STMT_CLOSE", action="raw",
                                    packets=[(1, bytes.fromhex("00000002000000"))])])
        proxy = self.proxy_for(srv)
        c = self.client(proxy)
        try:
            harness.scalar(c, "SELECT 'stray'")
            harness.scalar(c, "SELECT 2")
        except pymysql.err.MySQLError as e:
            self.assert_clean_error(e)
        c.close()
        self.assert_serves(proxy)
        s = self.raw(proxy)
        s.sendall(handshake_response())
        self.read_login_ok(s)
        s.sendall(packet(0, b"\x16SELECT 1"))  # COM_STMT_PREPARE
        prep = recv_packet(s)
        self.assertEqual(prep[1][0], 0x00)
        stmt = prep[1][1:5]
        ncols = struct.unpack_from("<H", prep[1], 5)[0]
        for _ in range(ncols + 1):  # column definitions + EOF
            recv_packet(s)
        s.sendall(packet(0, b"\x19" + stmt))  # COM_STMT_CLOSE: the fake answers it anyway
        s.sendall(packet(0, b"\x03SELECT 1"))
        s.settimeout(10)
        try:
            first = recv_packet(s)
        except socket.timeout:
            first = None
            self.fail("no answer and no close after a stray reply")
        self.assertTrue(first is None or first[1][0] in (0x00, 0x01, 0xff), first)
        s.close()
        self.assert_serves(proxy)


# --- g: truncated client packets ---------------------------------------------------------------

class TruncatedClientPackets(LifecycleTestCase):
    def test_reset_connection_longer_than_sent_then_close(self):
        srv = self.fake()
        proxy = self.proxy_for(srv)
        for declared in (5, 100, 70000):
            with self.subTest(declared=declared):
                s = self.raw(proxy)
                s.sendall(handshake_response())
                self.read_login_ok(s)
                s.sendall(struct.pack("<I", declared)[:3] + b"\x00\x1f")
                time.sleep(0.2)
                s.close()
                self.assert_serves(proxy)

    def test_reset_connection_longer_than_sent_then_close_multiplexed(self):
        # With multiplexing the idle session has no connection: the reset borrows one first.
        srv = self.fake()
        proxy = self.proxy_for(srv, "--pool-release-idle-after", "100ms")
        for declared in (5, 100):
            with self.subTest(declared=declared):
                s = self.raw(proxy)
                s.sendall(handshake_response())
                self.read_login_ok(s)
                s.sendall(packet(0, b"\x03SET sql_mode=''"))  # replayable session state
                recv_packet(s)
                time.sleep(0.3)  # released to the pool
                s.sendall(struct.pack("<I", declared)[:3] + b"\x00\x1f")
                time.sleep(0.2)
                s.close()
                self.assert_serves(proxy)

    def test_reset_connection_longer_than_sent_then_the_rest(self):
        srv = self.fake()
        proxy = self.proxy_for(srv)
        s = self.raw(proxy)
        s.sendall(handshake_response())
        self.read_login_ok(s)
        # COM_RESET_CONNECTION declared 9 bytes long; only its command byte comes first.
        s.sendall(struct.pack("<I", 9)[:3] + b"\x00\x1f")
        time.sleep(0.3)
        # The other 8 bytes of that payload, shaped like a COM_QUERY packet of their own.
        s.sendall(b"\x04\x00\x00\x00\x03XYZ")
        s.sendall(packet(0, b"\x03SELECT 1"))
        s.settimeout(10)
        pkt = recv_packet(s)
        rows = None
        if pkt is not None and pkt[1][0] == 0x00:
            try:
                rows = self.read_text_result(s)
            except AssertionError as e:
                rows = e
        s.close()
        self.assertFalse(any(t and "XYZ" in t for _, _, t in srv.commands()),
                         "the rest of the client's reset packet reached the server as a query")
        # Either the reset is answered (OK) and then the query, or the session ends cleanly.
        if pkt is not None and pkt[1][0] == 0x00:
            self.assertEqual(rows, [["1"]], "after the reset's OK, the next reply is not the "
                             "query's")
        elif pkt is not None:
            self.assertIsNotNone(err_packet(pkt[1]), "neither OK nor ERR: %r" % (pkt[1][:20],))
        self.assert_serves(proxy)


# --- a, b against the real MariaDB fixture -----------------------------------------------------

@unittest.skipUnless(os.environ.get("CREDPROXY_TEST_DIR"),
                     "needs the MariaDB fixture (tests/run-all.sh exports it)")
class WithMariaDB(LifecycleTestCase):
    """The same regressions against the real server, where it can produce the fault itself."""

    def real_proxy(self, secret, *args):
        workdir = Path(tempfile.mkdtemp(prefix="p", dir=self.workdir))
        p = Proxy(workdir, ["--upstream-tls", "disabled", "--workers", "1"] + list(args), secret)
        self.proxies.append(p)
        self.addCleanup(p.stop)
        return p.start()

    def test_login_and_quit_in_one_write_on_a_pooled_connection(self):
        fixture = Fixture()
        proxy = self.real_proxy(fixture.secret())
        self.raw_select_1_and_quit(proxy)
        self.wait_quits(proxy, 1)
        for _ in range(3):
            s = self.raw(proxy)
            s.sendall(handshake_response() + COM_QUIT)
            harness.recv_until_closed(s)
            s.close()
        s = self.raw(proxy)
        s.sendall(handshake_response() + packet(0, b"\x03SELECT 1") + COM_QUIT)
        self.read_login_ok(s)
        self.assertEqual(self.read_text_result(s), [["1"]])
        s.close()
        self.assert_serves(proxy)

    def test_secret_dbname_dropped_while_a_client_is_connected(self):
        fixture = Fixture()
        secret = fixture.secret()
        db = harness.unique_name("lc_gone")
        fixture.root_sql("CREATE DATABASE %s; GRANT ALL ON %s.* TO '%s'@'127.0.0.1';"
                         % (db, db, secret["username"]))
        self.addCleanup(fixture.root_sql, "DROP DATABASE IF EXISTS %s;" % db)
        proxy = self.real_proxy(dict(secret, dbname=db))
        c = harness.connect(proxy.port)
        self.assertEqual(harness.scalar(c, "SELECT DATABASE()"), db)
        with c.cursor() as cur:
            cur.execute("SET SESSION sql_mode=''")  # dirty: the pool resets it on return
        fixture.root_sql("DROP DATABASE %s;" % db)
        c.close()  # the reset's COM_INIT_DB now fails with 1049
        time.sleep(0.5)
        self.assertTrue(proxy.alive(), "credproxy died:\n" + harness.log_tail(proxy.log_path))
        # The secret's schema is gone: a clean 1049; a client naming another schema gets in.
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            harness.connect(proxy.port)
        self.assertEqual(cm.exception.args[0], harness.ER_BAD_DB)
        c = harness.connect(proxy.port, database=secret.get("dbname") or "app")
        self.assertEqual(harness.scalar(c, "SELECT 1"), 1)
        c.close()
        self.assertTrue(proxy.alive())


if __name__ == "__main__":
    harness.main()
