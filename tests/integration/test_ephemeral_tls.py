#!/usr/bin/env python3
"""TLS for clients that insist on it: with no tls_cert, credproxy serves an ephemeral self-signed
certificate made in memory at start-up (EC P-256, random serial, CN=credproxy), logs its SHA-256
fingerprint, and clients that require TLS without verifying it log in; clients that verify fail.

The certificate is read on the client side (the TLS socket's peer certificate), never from the
server's Ssl_cipher, which describes credproxy's own upstream session. Note that PyMySQL 1.0
treats ssl={} as "no TLS" (an empty dict is false): a client that wants TLS without verifying
passes ssl={"verify_mode": False} or an SSLContext with CERT_NONE.
"""

import hashlib
import re
import socket
import ssl
import subprocess
import time

import pymysql

import harness
from harness import (ProxyTestCase, connect, main, mariadb_cli, recv_packet, run_proxy_once,
                     scalar)

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # python3-cryptography; the openssl CLI checks the same things then
    x509 = None

CLIENT_SSL = 0x800
ER_SECURE_TRANSPORT_REQUIRED = 3159
NO_VERIFY = {"verify_mode": False}  # PyMySQL: TLS, no CA, no verification
LOG_FINGERPRINT = re.compile(r"ephemeral self-signed certificate.*SHA-256 fingerprint "
                             r"((?:[0-9A-F]{2}:){31}[0-9A-F]{2})")


def colon_sha256(der):
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


def tls_peer(conn):
    """The DER certificate a PyMySQL connection's TLS peer presented; fails if not TLS."""
    assert isinstance(conn._sock, ssl.SSLSocket), "the connection is not TLS"
    assert conn._sock.version() in ("TLSv1.2", "TLSv1.3"), conn._sock.version()
    return conn._sock.getpeercert(binary_form=True)


def served_cert(port, **kw):
    """The DER certificate a new TLS client of port gets (after a query works over it)."""
    conn = connect(port, ssl=NO_VERIFY, **kw)
    try:
        assert scalar(conn, "SELECT 1") == 1
        return tls_peer(conn)
    finally:
        conn.close()


def greeting_caps(port):
    """The capability flags of credproxy's greeting (both 16-bit halves)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        _, p = recv_packet(s)
    end = p.index(b"\0", 1)  # protocol version byte, then the NUL-terminated version string
    pos = end + 1 + 4 + 8 + 1  # connection id, scramble part 1, filler
    low = int.from_bytes(p[pos:pos + 2], "little")
    high = int.from_bytes(p[pos + 5:pos + 7], "little")  # after charset and status
    return low | high << 16


class EphemeralCase(ProxyTestCase):
    def fingerprint_in_log(self, proxy):
        self.assertTrue(proxy.wait_log("ephemeral self-signed certificate"), proxy.log())
        found = LOG_FINGERPRINT.findall(proxy.log())
        self.assertEqual(len(found), 1, "one ephemeral certificate, logged once:\n" + proxy.log())
        return found[0]

    def peer_cert(self, port, **kw):
        return served_cert(port, **kw)


class EphemeralCertificate(EphemeralCase):
    def setUp(self):
        super().setUp()
        self.proxy = self.start_proxy("--workers", "2")

    def test_pymysql_without_verification_gets_tls(self):
        conn = connect(self.proxy.port, ssl=NO_VERIFY)
        der = tls_peer(conn)
        self.assertEqual(scalar(conn, "SELECT CURRENT_USER()"),
                         self.fixture.secret()["username"] + "@127.0.0.1")
        with conn.cursor() as cur:
            cur.execute("SELECT seq FROM seq_1_to_5000")
            self.assertEqual(len(cur.fetchall()), 5000)
        conn.close()
        self.assertEqual(colon_sha256(der), self.fingerprint_in_log(self.proxy))

    def test_pymysql_with_an_ssl_context_that_does_not_verify(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = connect(self.proxy.port, ssl=ctx)
        self.assertEqual(colon_sha256(tls_peer(conn)), self.fingerprint_in_log(self.proxy))
        conn.close()

    def test_pymysql_empty_ssl_dict_means_no_tls(self):
        # PyMySQL's own rule (an empty dict is false), pinned here so nobody mistakes it for TLS.
        conn = connect(self.proxy.port, ssl={})
        self.assertNotIsInstance(conn._sock, ssl.SSLSocket)
        conn.close()

    def test_plain_clients_still_work(self):
        conn = connect(self.proxy.port)
        self.assertNotIsInstance(conn._sock, ssl.SSLSocket)
        self.assertEqual(scalar(conn, "SELECT 1"), 1)
        conn.close()
        out = self.cli_value("status", port=self.proxy.port, extra=["--skip-ssl"])
        self.assertRegex(out, r"SSL:\s+Not in use")

    def test_greeting_offers_tls(self):
        self.assertTrue(greeting_caps(self.proxy.port) & CLIENT_SSL)

    def test_certificate_is_ec_p256_self_signed_credproxy(self):
        der = self.peer_cert(self.proxy.port)
        if x509 is None:
            return self.check_with_openssl_cli(der)
        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
        self.assertIsInstance(key, ec.EllipticCurvePublicKey)
        self.assertEqual(key.curve.name, "secp256r1")
        cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        self.assertEqual(cn, ["credproxy"])
        self.assertEqual(cert.issuer, cert.subject)
        key.verify(cert.signature, cert.tbs_certificate_bytes,  # raises unless self-signed
                   ec.ECDSA(cert.signature_hash_algorithm))
        self.assertIsInstance(cert.signature_hash_algorithm, hashes.SHA256)
        self.assertEqual(cert.version, x509.Version.v3)
        self.assertGreater(cert.serial_number, 0)
        self.assertLessEqual(cert.serial_number.bit_length(), 128)
        self.assertGreaterEqual(cert.serial_number.bit_length(), 100)  # random, not 1, 2, 3...
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertFalse(bc.value.ca)
        self.assertTrue(bc.critical)
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(ku.digital_signature)
        self.assertFalse(ku.key_cert_sign)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.SERVER_AUTH])
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual({str(a) for a in san.get_values_for_type(x509.IPAddress)},
                         {"127.0.0.1", "::1"})
        now = time.time()
        self.assertLess(cert.not_valid_before.timestamp(), now - 1800)  # a slow clock still fits
        self.assertGreater(cert.not_valid_after.timestamp(), now + 300 * 86400)
        self.assertEqual(colon_sha256(der), self.fingerprint_in_log(self.proxy))
        self.assertEqual(cert.fingerprint(hashes.SHA256()).hex(":").upper(),
                         self.fingerprint_in_log(self.proxy))

    def check_with_openssl_cli(self, der):
        text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-text",
                               "-fingerprint", "-sha256"], input=der, capture_output=True,
                              check=True).stdout.decode()
        self.assertIn("NIST CURVE: P-256", text)
        self.assertRegex(text, r"Subject: CN ?= ?credproxy")
        self.assertRegex(text, r"Issuer: CN ?= ?credproxy")
        self.assertIn("CA:FALSE", text)
        self.assertIn("sha256 Fingerprint=" + self.fingerprint_in_log(self.proxy), text)

    def test_a_client_that_verifies_fails(self):
        ctx = ssl.create_default_context()  # the system's CAs, host name checked
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            connect(self.proxy.port, ssl=ctx)
        self.assertRegex(str(cm.exception), r"CERTIFICATE_VERIFY_FAILED|self.signed")
        with self.assertRaises(pymysql.err.OperationalError):  # the test CA does not sign it
            connect(self.proxy.port, ssl={"ca": str(self.fixture.tls / "ca.pem")})
        self.assertTrue(self.proxy.alive())

    def test_a_client_that_pins_the_certificate_verifies_it(self):
        # What an operator can do by hand until the next restart: trust exactly this certificate.
        pem = ssl.DER_cert_to_PEM_cert(self.peer_cert(self.proxy.port))
        ctx = ssl.create_default_context(cadata=pem)  # check_hostname: 127.0.0.1 is in the SAN
        conn = connect(self.proxy.port, ssl=ctx)
        self.assertEqual(scalar(conn, "SELECT 7"), 7)
        conn.close()

    def test_mariadb_cli_with_ssl(self):
        # Debian 12's client (10.11) asks for TLS by default and does not verify unless told to.
        out = self.cli_value("status", port=self.proxy.port, extra=["--ssl"])
        self.assertRegex(out, r"SSL:\s+Cipher in use is \S+")
        self.assertEqual(self.cli_value("SELECT 1+1", port=self.proxy.port, extra=["--ssl"]), "2")

    def test_mariadb_cli_that_verifies_fails(self):
        p = mariadb_cli("SELECT 1", port=self.proxy.port, extra=["--ssl-verify-server-cert"])
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertRegex(p.stderr, r"2026.*(self.signed|certificate)")

    def test_every_connection_and_worker_gets_the_same_certificate(self):
        seen = {colon_sha256(self.peer_cert(self.proxy.port)) for _ in range(8)}
        self.assertEqual(seen, {self.fingerprint_in_log(self.proxy)})


class EphemeralPerProcess(EphemeralCase):
    def test_two_starts_make_two_certificates(self):
        a, b = self.start_proxy(), self.start_proxy()
        der_a, der_b = self.peer_cert(a.port), self.peer_cert(b.port)
        self.assertNotEqual(der_a, der_b)
        self.assertEqual(colon_sha256(der_a), self.fingerprint_in_log(a))
        self.assertEqual(colon_sha256(der_b), self.fingerprint_in_log(b))
        if x509 is not None:
            ca, cb = (x509.load_der_x509_certificate(d) for d in (der_a, der_b))
            self.assertNotEqual(ca.serial_number, cb.serial_number)
            self.assertNotEqual(ca.public_key().public_numbers(),
                                cb.public_key().public_numbers())

    def test_one_certificate_for_every_route(self):
        p1, p2 = self.free_ports(2)
        conf = self.workdir / "two-routes.conf"
        conf.write_text("workers = 3\n[route one]\nlisten = 127.0.0.1:%d\n"
                        "[route two]\nlisten = 127.0.0.1:%d\n" % (p1, p2))
        proxy = self.start_proxy("--config", str(conf), listen=False)
        for port in (p1, p2):
            proxy.port = port
            proxy.wait_ready()
        fp = self.fingerprint_in_log(proxy)  # exactly one made, for both routes and 3 workers
        self.assertEqual(colon_sha256(self.peer_cert(p1)), fp)
        self.assertEqual(colon_sha256(self.peer_cert(p2)), fp)

    def free_ports(self, n):
        socks = [socket.socket() for _ in range(n)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            return [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()


class ConfiguredCertificate(EphemeralCase):
    def test_tls_cert_is_served_not_an_ephemeral_one(self):
        tls = self.fixture.tls
        proxy = self.start_proxy("--tls-cert", str(tls / "proxy-cert.pem"), "--tls-key",
                                 str(tls / "proxy-key.pem"))
        with open(tls / "proxy-cert.pem") as f:
            configured = ssl.PEM_cert_to_DER_cert(f.read())
        self.assertEqual(self.peer_cert(proxy.port), configured)
        log = proxy.log()
        self.assertNotIn("ephemeral", log)
        self.assertIn("TLS certificate %s, SHA-256 fingerprint %s"
                      % (tls / "proxy-cert.pem", colon_sha256(configured)), log)


class ClientTLSRequiredEphemeral(EphemeralCase):
    def setUp(self):
        super().setUp()
        self.proxy = self.start_proxy("--client-tls", "required", socket=True)

    def test_tls_client_logs_in_with_the_ephemeral_certificate(self):
        self.assertEqual(colon_sha256(self.peer_cert(self.proxy.port)),
                         self.fingerprint_in_log(self.proxy))
        self.assertRegex(self.cli_value("status", port=self.proxy.port, extra=["--ssl"]),
                         r"SSL:\s+Cipher in use is \S+")

    def test_plain_tcp_client_is_refused(self):
        self.assertMysqlError(ER_SECURE_TRANSPORT_REQUIRED, connect, self.proxy.port)

    def test_unix_socket_is_exempt(self):
        conn = connect(socket_path=str(self.proxy.socket))
        self.assertEqual(scalar(conn, "SELECT 2"), 2)
        conn.close()


class ErrorsOverTLS(EphemeralCase):
    """A login refused over TLS gets its error, not a TLS "unexpected eof": the last record
    must leave the socket before the session is freed (Debian's mariadb CLI uses TLS by
    default, so every refusal it sees goes this way)."""

    def setUp(self):
        super().setUp()
        hashed = subprocess.run([harness.binary(), "--hash-password"], input="localpw\n",
                                capture_output=True, text=True, check=True).stdout.strip()
        users = self.workdir / "users"
        users.write_text("alice:%s\n" % hashed)
        users.chmod(0o600)
        self.proxy = self.start_proxy("--client-auth", "password", "--users-file", str(users))

    def test_refused_login_reads_1045(self):
        for version in ("TLSv1.2", "TLSv1.3"):
            with self.subTest(version=version):
                p = mariadb_cli("SELECT 1", port=self.proxy.port, user="alice",
                                extra=["--ssl", "--tls-version=" + version, "--password=wrong"])
                self.assertNotEqual(p.returncode, 0)
                self.assertRegex(p.stderr, r"^ERROR 1045 \(28000\)")
        err = self.assertMysqlError(1045, connect, self.proxy.port, user="alice",
                                    password="wrong", ssl=NO_VERIFY)
        self.assertIn("Access denied", str(err))
        conn = connect(self.proxy.port, user="alice", password="localpw", ssl=NO_VERIFY)
        tls_peer(conn)
        conn.close()


class ClientTLSOff(ProxyTestCase):
    def test_no_tls_is_offered_and_no_certificate_made(self):
        proxy = self.start_proxy("--client-tls", "off")
        self.assertFalse(greeting_caps(proxy.port) & CLIENT_SSL)
        conn = connect(proxy.port, ssl=NO_VERIFY)  # PyMySQL falls back to plain by itself
        self.assertNotIsInstance(conn._sock, ssl.SSLSocket)
        self.assertEqual(scalar(conn, "SELECT 1"), 1)
        conn.close()
        out = self.cli_value("status", port=proxy.port, extra=["--ssl"])
        self.assertRegex(out, r"SSL:\s+Not in use")
        self.assertNotIn("ephemeral", proxy.log())

    def test_off_with_a_certificate_is_a_config_error(self):
        tls = self.fixture.tls
        p = run_proxy_once(self.workdir, ["--client-tls", "off", "--check-config",
                                          "--secret-file", str(self.fixture.secret_path()),
                                          "--tls-cert", str(tls / "proxy-cert.pem"),
                                          "--tls-key", str(tls / "proxy-key.pem")])
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertRegex(p.stdout + p.stderr, r"client[-_]tls.*off.*tls_cert")


if __name__ == "__main__":
    main()
