"""What credproxy asks of clients beyond the login: client_tls = required, client_idle_timeout,
connection ids unique across workers, and TLS logins bound by handshake_timeout."""

import socket
import ssl
import struct
import time

import pymysql

from harness import ProxyTestCase, connect, main, run_proxy_once, scalar

ER_SECURE_TRANSPORT_REQUIRED = 3159


class ClientTLSRequired(ProxyTestCase):
    def setUp(self):
        super().setUp()
        tls = self.fixture.tls
        self.ca = str(tls / "ca.pem")
        self.proxy = self.start_proxy("--tls-cert", str(tls / "proxy-cert.pem"), "--tls-key",
                                      str(tls / "proxy-key.pem"), "--client-tls", "required",
                                      socket=True)

    def test_plain_tcp_client_is_refused_with_mysqls_error(self):
        err = self.assertMysqlError(ER_SECURE_TRANSPORT_REQUIRED, connect, self.proxy.port)
        self.assertIn("insecure transport", str(err))

    def test_tls_client_logs_in(self):
        conn = connect(self.proxy.port, ssl={"ca": self.ca})
        self.assertIsInstance(conn._sock, ssl.SSLSocket)
        self.assertEqual(scalar(conn, "SELECT 1"), 1)

    def test_unix_socket_is_exempt(self):
        conn = connect(socket_path=str(self.proxy.socket))
        self.assertEqual(scalar(conn, "SELECT 2"), 2)

    def test_required_without_a_certificate_is_valid(self):
        # It is served with the ephemeral certificate (test_ephemeral_tls.py).
        p = run_proxy_once(self.workdir, ["--client-tls", "required", "--check-config",
                                          "--secret-file", str(self.fixture.secret_path())])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


class ClientIdleTimeout(ProxyTestCase):
    def test_idle_client_is_closed_and_a_busy_one_is_not(self):
        proxy = self.start_proxy("--client-idle-timeout", "1s")
        idle = connect(proxy.port)
        busy = connect(proxy.port)
        self.assertEqual(scalar(idle, "SELECT 1"), 1)
        # A statement running longer than the timeout is not idleness.
        self.assertEqual(scalar(busy, "SELECT SLEEP(2.5)"), 0)
        self.assertEqual(scalar(busy, "SELECT 3"), 3)
        time.sleep(1.0)  # idle has now been silent for > 3.5 s
        with self.assertRaises(pymysql.err.OperationalError):
            scalar(idle, "SELECT 1")
        self.assertTrue(proxy.wait_log("idle for longer than client_idle_timeout"))
        self.assertEqual(scalar(connect(proxy.port), "SELECT 4"), 4)

    def test_off_by_default(self):
        proxy = self.start_proxy()
        conn = connect(proxy.port)
        time.sleep(2.2)
        self.assertEqual(scalar(conn, "SELECT 5"), 5)


class ConnectionIds(ProxyTestCase):
    def greeting_id(self, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            hdr = s.recv(4, socket.MSG_WAITALL)
            n = hdr[0] | hdr[1] << 8 | hdr[2] << 16
            body = s.recv(n, socket.MSG_WAITALL)
            version_end = body.index(b"\0", 1)
            return struct.unpack("<I", body[version_end + 1:version_end + 5])[0]
        finally:
            s.close()

    def test_ids_are_unique_across_workers(self):
        proxy = self.start_proxy("--workers", "4")
        ids = [self.greeting_id(proxy.port) for _ in range(200)]
        self.assertEqual(len(set(ids)), len(ids), "connection ids repeat across workers")
        self.assertNotIn(0, ids)


class TLSHandshakeTimeout(ProxyTestCase):
    """A client that stalls during the TLS handshake is closed by handshake_timeout."""

    def start(self):
        tls = self.fixture.tls
        return self.start_proxy("--tls-cert", str(tls / "proxy-cert.pem"), "--tls-key",
                                str(tls / "proxy-key.pem"), "--handshake-timeout", "1s")

    def ssl_request(self, s):
        hdr = s.recv(4, socket.MSG_WAITALL)
        s.recv(hdr[0] | hdr[1] << 8 | hdr[2] << 16, socket.MSG_WAITALL)
        caps = 0x00000200 | 0x00008000 | 0x00000800 | 0x00080000  # PROTOCOL_41, SECURE, SSL, PLUGIN
        payload = struct.pack("<IIB23x", caps, 1 << 24, 33)
        s.sendall(struct.pack("<I", len(payload))[:3] + b"\x01" + payload)

    def assert_closed_within(self, s, seconds):
        s.settimeout(seconds)
        start = time.monotonic()
        try:
            while s.recv(4096):
                pass
        except (socket.timeout, TimeoutError):
            self.fail("the proxy did not close a stalled TLS login within %.1f s" % seconds)
        except ConnectionResetError:
            pass
        return time.monotonic() - start

    def test_silent_after_ssl_request(self):
        proxy = self.start()
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        self.addCleanup(s.close)
        self.ssl_request(s)
        self.assert_closed_within(s, 6)
        self.assertEqual(scalar(connect(proxy.port), "SELECT 1"), 1)

    def test_half_a_client_hello(self):
        proxy = self.start()
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        self.addCleanup(raw.close)
        self.ssl_request(raw)
        # A real ClientHello, cut in half.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing)
        with self.assertRaises(ssl.SSLWantReadError):
            obj.do_handshake()
        hello = outgoing.read()
        raw.sendall(hello[: len(hello) // 2])
        self.assert_closed_within(raw, 6)


if __name__ == "__main__":
    main()
