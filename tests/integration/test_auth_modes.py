#!/usr/bin/python3
"""How clients prove themselves to credproxy (trust, peer, password, TLS) and how credproxy logs
in upstream (TLS modes, REQUIRE SSL users, the ed25519 plugin)."""

import hashlib
import os
import ssl
import subprocess

import pymysql

import harness
from harness import ProxyTestCase, connect, scalar


def native_hash(password):
    """The mysql_native_password hash as MySQL prints it: '*' + SHA1(SHA1(pw)) in upper hex."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


class Peer(ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.user_at = self.fixture.secret()["username"] + "@127.0.0.1"

    def peer_proxy(self, *args):
        return self.start_proxy("--client-auth", "peer", *args, listen=False, socket=True)

    def test_allowed_uid_is_accepted(self):
        proxy = self.peer_proxy("--peer-uids", "%d,%d" % (os.getuid() + 4242, os.getuid()))
        self.assertEqual(self.cli_value("SELECT CURRENT_USER()", socket_path=proxy.socket),
                         self.user_at)
        conn = connect(socket_path=proxy.socket)
        self.assertEqual(scalar(conn, "SELECT CURRENT_USER()"), self.user_at)
        conn.close()

    def test_other_uids_are_refused_with_1045(self):
        proxy = self.peer_proxy("--peer-uids", "%d" % (os.getuid() + 4242))
        self.assertMysqlError(harness.ER_ACCESS_DENIED, connect, socket_path=proxy.socket)
        p = harness.mariadb_cli("SELECT CURRENT_USER()", socket_path=proxy.socket)
        self.assertNotEqual(p.returncode, 0)
        # An ERR before the greeting reaches the CLI wrapped in a 2002 ("received error packet
        # before completion of TLS handshake ... 1045 - ..."); after a greeting it is plain 1045.
        self.assertRegex(p.stderr, r"\b1045\b")
        self.assertTrue(proxy.alive())

    def test_allowed_gid_is_accepted(self):
        proxy = self.peer_proxy("--peer-uids", "%d" % (os.getuid() + 4242), "--peer-gids",
                                "%d" % os.getgid())
        self.assertEqual(self.cli_value("SELECT CURRENT_USER()", socket_path=proxy.socket),
                         self.user_at)


class Password(ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.user_at = self.fixture.secret()["username"] + "@127.0.0.1"
        users = self.workdir / "users"
        users.write_text("# local users of this test\n\nalice:%s\nbob:%s\n"
                         % (native_hash("localpw"), native_hash("bobs-other-pw")))
        os.chmod(users, 0o600)
        self.proxy = self.start_proxy("--client-auth", "password", "--users-file", str(users))
        self.proxy.passwords.update({"localpw", "bobs-other-pw"})

    def test_hash_helper_matches_mariadb(self):
        # Guards the test itself: our hash is the one MariaDB computes.
        rows = self.fixture.root_sql("SELECT PASSWORD('localpw')")
        self.assertEqual(rows[0][0], native_hash("localpw"))

    def test_right_password_is_accepted(self):
        conn = connect(self.proxy.port, user="alice", password="localpw")
        self.assertEqual(scalar(conn, "SELECT CURRENT_USER()"), self.user_at)
        conn.close()
        out = self.cli_value("SELECT CURRENT_USER()", port=self.proxy.port, user="bob",
                             env={"MYSQL_PWD": "bobs-other-pw"})
        self.assertEqual(out, self.user_at)

    def test_wrong_password_is_refused(self):
        for password in ("wrongpw", "", "bobs-other-pw", "localpw "):
            with self.subTest(password=password):
                self.assertMysqlError(harness.ER_ACCESS_DENIED, connect, self.proxy.port,
                                      user="alice", password=password)
        p = harness.mariadb_cli("SELECT 1", port=self.proxy.port, user="alice",
                                env={"MYSQL_PWD": "wrongpw"})
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("ERROR 1045", p.stderr)

    def test_unknown_user_is_refused(self):
        for user in ("carol", "app", "root", "alice2"):
            with self.subTest(user=user):
                self.assertMysqlError(harness.ER_ACCESS_DENIED, connect, self.proxy.port,
                                      user=user, password="localpw")
        self.assertTrue(self.proxy.alive())


class FrontendTLS(ProxyTestCase):
    def setUp(self):
        super().setUp()
        tls = self.fixture.tls
        self.ca = str(tls / "ca.pem")
        self.proxy = self.start_proxy("--tls-cert", str(tls / "proxy-cert.pem"), "--tls-key",
                                      str(tls / "proxy-key.pem"))
        with open(tls / "proxy-cert.pem") as f:
            self.proxy_der = ssl.PEM_cert_to_DER_cert(f.read())

    def test_pymysql_over_tls(self):
        conn = connect(self.proxy.port, ssl={"ca": self.ca})  # verifies the name 127.0.0.1 too
        self.assertIsInstance(conn._sock, ssl.SSLSocket)
        self.assertTrue(conn._sock.version().startswith("TLS"))
        self.assertEqual(conn._sock.getpeercert(binary_form=True), self.proxy_der,
                         "the TLS peer is not credproxy's certificate")
        self.assertEqual(scalar(conn, "SELECT CURRENT_USER()"),
                         self.fixture.secret()["username"] + "@127.0.0.1")
        with conn.cursor() as cur:
            cur.execute("SELECT seq, REPEAT('t', seq % 300) FROM seq_1_to_20000")
            rows = cur.fetchall()
        self.assertEqual(len(rows), 20000)
        self.assertEqual(rows[-1], (20000, "t" * (20000 % 300)))
        big = "tls" * 700000
        self.assertEqual(scalar(conn, "SELECT %s", (big,)), big)
        conn.close()

    def test_mariadb_cli_verifies_the_proxy_certificate(self):
        out = self.cli_value("status", port=self.proxy.port,
                             extra=["--ssl", "--ssl-ca=" + self.ca, "--ssl-verify-server-cert"])
        self.assertRegex(out, r"SSL:\s+Cipher in use is \S+")

    def test_plain_clients_still_work(self):
        conn = connect(self.proxy.port)
        self.assertNotIsInstance(conn._sock, ssl.SSLSocket)
        self.assertEqual(scalar(conn, "SELECT 1"), 1)
        conn.close()
        out = self.cli_value("status", port=self.proxy.port, extra=["--skip-ssl"])
        self.assertRegex(out, r"SSL:\s+Not in use")

    def test_wrong_ca_is_rejected_by_the_client(self):
        other_ca = self.workdir / "other-ca.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=unrelated CA", "-keyout", str(self.workdir / "k.pem"),
                        "-out", str(other_ca)], check=True, capture_output=True)
        with self.assertRaises(pymysql.err.OperationalError):
            connect(self.proxy.port, ssl={"ca": str(other_ca)})
        self.assertTrue(self.proxy.alive())


class UpstreamTLS(ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.ca = str(self.fixture.tls / "ca.pem")
        self.tls_user = self.fixture.secret("secret-tls.json")["username"] + "@127.0.0.1"

    def upstream_tls_version(self, proxy):
        conn = connect(proxy.port)
        try:
            self.assertEqual(scalar(conn, "SELECT CURRENT_USER()"), self.tls_user)
            with conn.cursor() as cur:
                cur.execute("SHOW STATUS LIKE 'Ssl_version'")
                return cur.fetchone()[1]
        finally:
            conn.close()

    def test_verify_identity(self):
        proxy = self.start_proxy("--upstream-tls", "verify-identity", "--upstream-ca", self.ca,
                                 secret="secret-tls.json")
        self.assertRegex(self.upstream_tls_version(proxy), r"^TLSv1\.[23]$")
        out = self.cli_value("SHOW STATUS LIKE 'Ssl_version'", port=proxy.port,
                             extra=["--skip-ssl"])
        self.assertRegex(out, r"^Ssl_version\tTLSv1\.[23]$")

    def test_verify_ca_and_required(self):
        for args in (["--upstream-tls", "verify-ca", "--upstream-ca", self.ca],
                     ["--upstream-tls", "required"]):
            with self.subTest(args=args):
                proxy = self.start_proxy(*args, secret="secret-tls.json")
                self.assertRegex(self.upstream_tls_version(proxy), r"^TLSv1\.[23]$")

    def test_default_uses_tls_on_loopback(self):
        proxy = self.start_proxy(secret="secret-tls.json")
        self.assertRegex(self.upstream_tls_version(proxy), r"^TLSv1\.[23]$")

    def test_disabled_tls_with_a_require_ssl_user_fails_with_1045(self):
        proxy = self.start_proxy("--upstream-tls", "disabled", secret="secret-tls.json")
        self.assertMysqlError(harness.ER_ACCESS_DENIED, connect, proxy.port)
        self.assertTrue(proxy.alive())

    def test_disabled_tls_really_is_plaintext(self):
        proxy = self.start_proxy("--upstream-tls", "disabled")
        conn = connect(proxy.port)
        with conn.cursor() as cur:
            cur.execute("SHOW STATUS LIKE 'Ssl_version'")
            self.assertEqual(cur.fetchone()[1], "")
        conn.close()

    def test_verify_identity_with_an_unrelated_ca_fails(self):
        other_ca = self.workdir / "other-ca.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=unrelated CA", "-keyout", str(self.workdir / "k.pem"),
                        "-out", str(other_ca)], check=True, capture_output=True)
        proxy = self.start_proxy("--upstream-tls", "verify-identity", "--upstream-ca",
                                 str(other_ca), "--connect-timeout", "3s")
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            connect(proxy.port)
        self.assertNotEqual(cm.exception.args[0], 0)
        self.assertTrue(proxy.alive())


class Ed25519(ProxyTestCase):
    def test_ed25519_user_through_the_proxy(self):
        if not self.fixture.has_secret("secret-ed25519.json"):
            self.skipTest("the MariaDB server has no auth_ed25519 plugin, so mariadb.sh made no "
                          "app_ed user")
        secret = self.fixture.secret("secret-ed25519.json")
        proxy = self.start_proxy(secret="secret-ed25519.json")
        self.assertEqual(self.cli_value("SELECT CURRENT_USER()", port=proxy.port),
                         secret["username"] + "@127.0.0.1")
        conn = connect(proxy.port)
        self.assertEqual(scalar(conn, "SELECT CURRENT_USER()"), secret["username"] + "@127.0.0.1")
        conn.close()


if __name__ == "__main__":
    harness.main()
