#!/usr/bin/python3
"""Faults: hostile or broken clients, an unreachable or dying upstream, bad secrets and config."""

import json
import os
import socket
import subprocess
import threading
import time

import pymysql

import harness
from harness import (ProxyTestCase, connect, err_packet, free_port, recv_packet,
                     recv_until_closed, run_proxy_once, scalar)


class BadClients(ProxyTestCase):
    def setUp(self):
        super().setUp()
        # A long handshake timeout, so a prompt answer cannot be the timeout's doing.
        self.proxy = self.start_proxy("--handshake-timeout", "30s")

    def raw(self, timeout=5.0):
        s = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=timeout)
        self.addCleanup(s.close)
        return s

    def greeting(self, s):
        pkt = recv_packet(s)
        self.assertIsNotNone(pkt, "no server greeting")
        seq, payload = pkt
        self.assertEqual(seq, 0)
        self.assertEqual(payload[0], 10, "greeting is not protocol version 10")
        return payload

    def assert_serves(self):
        self.assertTrue(self.proxy.alive(), "credproxy died")
        self.assertEqual(self.cli_value("SELECT 'still here'", port=self.proxy.port),
                         "still here")

    def test_garbage_bytes_then_next_client_is_served(self):
        garbage = os.urandom(4096)
        s = self.raw()
        s.sendall(garbage)  # before even reading the greeting
        s.close()
        s = self.raw()
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        s.close()
        self.assert_serves()

    def test_garbage_handshake_response_is_refused_promptly(self):
        for junk in (b"\x10\x00\x00\x01" + os.urandom(16), b"\x03\x00\x00\x01abc",
                     b"\x00\x00\x00\x01"):
            with self.subTest(junk=junk[:8]):
                s = self.raw()
                self.greeting(s)
                s.sendall(junk)
                start = time.monotonic()
                try:
                    data = recv_until_closed(s)
                except socket.timeout:
                    self.fail("the proxy neither answered nor closed a bad handshake within 5s")
                self.assertLess(time.monotonic() - start, 5)
                if data:  # an ERR packet is the polite answer; closing is acceptable too
                    err = err_packet(data[4:])
                    self.assertIsNotNone(err, "reply to a bad handshake is not ERR: %r"
                                         % data[:16])
                    harness.assert_server_error_code(self, err[0])
        self.assert_serves()

    def test_oversized_handshake_packet_gets_err_then_close(self):
        s = self.raw()
        self.greeting(s)
        s.sendall(b"\xff\xff\xff\x01" + b"\x00" * 1000)  # claims a 16 MiB handshake response
        try:
            pkt = recv_packet(s)
            self.assertIsNotNone(pkt, "the proxy closed without an ERR packet")
            err = err_packet(pkt[1])
            self.assertIsNotNone(err, "expected an ERR packet, got %r" % pkt[1][:16])
            harness.assert_server_error_code(self, err[0])
            self.assertEqual(recv_until_closed(s), b"", "data after the ERR packet")
        except socket.timeout:
            self.fail("no ERR packet and no close within 5s of an oversized packet")
        self.assert_serves()

    def test_client_leaving_mid_query_does_not_poison_the_pool(self):
        proxy = self.start_proxy("--workers", "1")
        # A client sends a slow query and dies without reading the answer.
        cli = subprocess.Popen(["mariadb", "--no-defaults", "--protocol=tcp", "--host=127.0.0.1",
                                "--port=%d" % proxy.port, "--user=x", "-e",
                                "SELECT SLEEP(20), 'stale'"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=harness.client_env())
        time.sleep(0.5)
        cli.kill()
        cli.wait()
        for i in range(3):
            start = time.monotonic()
            fresh = connect(proxy.port)
            self.assertEqual(scalar(fresh, "SELECT 'fresh-%d'" % i), "fresh-%d" % i)
            self.assertLess(time.monotonic() - start, 10,
                            "a new client waited for the departed client's 20s query")
            fresh.close()


class HandshakeTimeout(ProxyTestCase):
    def test_silent_clients_are_cut_after_the_handshake_timeout(self):
        proxy = self.start_proxy("--handshake-timeout", "1s")
        for partial in (b"", b"\x20\x00", b"\x40\x00\x00\x01" + b"\x00" * 10):
            with self.subTest(partial=partial):
                s = socket.create_connection(("127.0.0.1", proxy.port), timeout=8)
                start = time.monotonic()
                pkt = recv_packet(s)
                self.assertIsNotNone(pkt, "no greeting")
                s.sendall(partial)
                try:
                    recv_until_closed(s)
                except socket.timeout:
                    self.fail("the connection was still open 8s after a 1s handshake timeout")
                elapsed = time.monotonic() - start
                s.close()
                self.assertGreaterEqual(elapsed, 0.9, "closed before the timeout")
                self.assertLess(elapsed, 4.0, "closed long after the 1s timeout")
        self.assertTrue(proxy.alive())
        self.assertEqual(self.cli_value("SELECT 1", port=proxy.port), "1")


class Upstream(ProxyTestCase):
    def assert_connect_error(self, proxy, where, within):
        """PyMySQL and the mariadb CLI both get an error naming where, within seconds."""
        start = time.monotonic()
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            connect(proxy.port, read_timeout=30)
        self.assertLess(time.monotonic() - start, within)
        code, msg = cm.exception.args[0], str(cm.exception.args[1])
        harness.assert_server_error_code(self, code)
        self.assertIn(where, msg)
        p = harness.mariadb_cli("SELECT 1", port=proxy.port)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(where, p.stderr, "the mariadb CLI did not see the proxy's message")
        self.assertTrue(proxy.alive())

    def test_unreachable_upstream_names_the_address(self):
        closed = free_port()
        proxy = self.start_proxy("--upstream-port", str(closed), "--connect-timeout", "2s")
        self.assert_connect_error(proxy, "127.0.0.1:%d" % closed, within=10)

    def test_silent_upstream_times_out(self):
        # An upstream that accepts TCP and never speaks.
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        self.addCleanup(hole.close)
        port = hole.getsockname()[1]
        proxy = self.start_proxy("--upstream-port", str(port), "--connect-timeout", "1s")
        self.assert_connect_error(proxy, "127.0.0.1:%d" % port, within=6)

    def test_dead_pooled_connections_are_not_handed_out(self):
        proxy = self.start_proxy("--workers", "1")
        conns = [connect(proxy.port) for _ in range(3)]
        pooled = {scalar(c, "SELECT CONNECTION_ID()") for c in conns}
        for c in conns:
            c.close()
        time.sleep(0.3)  # they are reset and go back to the pool
        for cid in pooled:
            try:
                self.fixture.root_sql("KILL CONNECTION %d" % cid)
            except AssertionError:
                pass  # the proxy had closed it already
        for i in range(5):  # no client may see the dead connections
            fresh = connect(proxy.port)
            self.assertNotIn(scalar(fresh, "SELECT CONNECTION_ID()"), pooled)
            self.assertEqual(scalar(fresh, "SELECT 'ok-%d'" % i), "ok-%d" % i)
            fresh.close()


class StartupChecks(ProxyTestCase):
    def write(self, name, text):
        path = self.workdir / name
        path.write_text(text)
        os.chmod(path, 0o600)
        return str(path)

    def test_malformed_secret_names_the_key_not_the_password(self):
        good = self.fixture.secret()
        pw = "Sup3r-s3cret-%d" % os.getpid()
        cases = {
            "password": {k: v for k, v in good.items() if k != "password"},
            "port": dict(good, password=pw, port="not-a-port"),
            "username": dict(good, password=pw, username=5),
            "host": dict(good, password=pw, host=["127.0.0.1"]),
        }
        for key, secret in cases.items():
            with self.subTest(key=key):
                path = self.write("bad-%s.json" % key, json.dumps(secret))
                p = run_proxy_once(self.workdir, ["--secret-file", path, "--listen",
                                                  "127.0.0.1:%d" % free_port()])
                out = p.stdout + p.stderr
                self.assertNotEqual(p.returncode, 0, out)
                self.assertIn(key, out)
                self.assertIn(path, out)
                harness.assert_no_secret(out, [pw, good["password"]], "error output")

    def test_unparsable_secret_is_refused_without_echoing_it(self):
        pw = "Sup3r-s3cret-%d" % os.getpid()
        for text in ('{"username": "app", "password": "%s", "port": 3306' % pw,
                     'username=app password=%s' % pw, ""):
            with self.subTest(text=text[:12]):
                path = self.write("unparsable.json", text)
                p = run_proxy_once(self.workdir, ["--secret-file", path, "--listen",
                                                  "127.0.0.1:%d" % free_port()])
                out = p.stdout + p.stderr
                self.assertNotEqual(p.returncode, 0, out)
                self.assertIn(path, out)
                harness.assert_no_secret(out, [pw], "error output")

    def test_missing_secret_file(self):
        path = str(self.workdir / "no-such-secret.json")
        p = run_proxy_once(self.workdir, ["--secret-file", path, "--listen",
                                          "127.0.0.1:%d" % free_port()])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(path, p.stdout + p.stderr)

    def test_check_config_reports_file_and_line(self):
        secret = str(self.fixture.secret_path())
        path = self.write("bad.conf", "\n".join([
            "# credproxy test configuration",
            "[credproxy]",
            "secret_file = %s" % secret,
            "no_such_key = 1",
            "client_auth = sometimes",
            "listen = 127.0.0.1:%d" % free_port(),
        ]) + "\n")
        p = run_proxy_once(self.workdir, ["--config", path, "--check-config"])
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 2, out)
        self.assertIn("%s:4" % path, out)
        self.assertIn("no_such_key", out)
        self.assertIn("%s:5" % path, out)
        self.assertIn("client_auth", out)

    def test_check_config_accepts_a_good_file_and_does_not_serve(self):
        port = free_port()
        path = self.write("good.conf", "[credproxy]\nsecret_file = %s\nlisten = 127.0.0.1:%d\n"
                          % (self.fixture.secret_path(), port))
        p = run_proxy_once(self.workdir, ["--config", path, "--check-config"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

    def test_trust_on_a_public_address_is_refused(self):
        secret = str(self.fixture.secret_path())
        for extra in (["--client-auth", "trust"], []):
            with self.subTest(flags=extra):
                p = run_proxy_once(self.workdir, ["--secret-file", secret, "--listen",
                                                  "0.0.0.0:%d" % free_port()] + extra)
                out = p.stdout + p.stderr
                self.assertNotEqual(p.returncode, 0, out)
                self.assertIn("trust", out)
                self.assertIn("0.0.0.0", out)


class Shutdown(ProxyTestCase):
    def test_sigterm_with_clients_connected(self):
        proxy = self.start_proxy()
        conns = [connect(proxy.port) for _ in range(5)]
        for c in conns:
            self.assertEqual(scalar(c, "SELECT 1"), 1)
        busy = connect(proxy.port)
        t = threading.Thread(target=lambda: self._quietly(busy, "SELECT SLEEP(2)"))
        t.start()
        time.sleep(0.3)
        start = time.monotonic()
        proxy.stop()  # exit code 0, no sanitizer report, no password in the log
        self.assertLess(time.monotonic() - start, harness.STOP_TIMEOUT)
        t.join(30)
        for c in conns:
            c.close()

    @staticmethod
    def _quietly(conn, sql):
        try:
            scalar(conn, sql)
        except pymysql.err.MySQLError:
            pass


if __name__ == "__main__":
    harness.main()
