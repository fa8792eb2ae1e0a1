#!/usr/bin/python3
"""Secret rotation: the password changes in MariaDB and in the secret file while clients work.

Each test rotates its own throwaway user, so it can run beside the other tests.
"""

import json
import os
import secrets
import time

import pymysql

import harness
from harness import ProxyTestCase, connect, scalar, unique_name


def sql_string(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Rotation(ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.user = unique_name("rot")
        self.pw1 = "old-" + secrets.token_hex(12)
        self.fixture.root_sql("CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY %s;"
                              "GRANT ALL ON app.* TO '%s'@'127.0.0.1';"
                              % (self.user, sql_string(self.pw1), self.user))
        self.addCleanup(self.fixture.root_sql, "DROP USER IF EXISTS '%s'@'127.0.0.1'" % self.user)
        self.secret = dict(self.fixture.secret(), username=self.user, password=self.pw1)
        self.current_password = self.pw1

    def set_password(self, pw):
        """Changes the user's password in MariaDB and checks the old one no longer logs in."""
        old = self.current_password
        self.fixture.root_sql("ALTER USER '%s'@'127.0.0.1' IDENTIFIED BY %s"
                              % (self.user, sql_string(pw)))
        self.assertMysqlError(harness.ER_ACCESS_DENIED, self.fixture.direct,
                              dict(self.secret, password=old))
        self.current_password = pw

    def kill_other_sessions(self, keep=()):
        """Kills the user's upstream sessions except keep, so the proxy must log in afresh."""
        rows = self.fixture.root_sql("SELECT ID FROM information_schema.PROCESSLIST "
                                     "WHERE USER = '%s'" % self.user)
        for (cid,) in rows:
            if int(cid) not in keep:
                try:
                    self.fixture.root_sql("KILL CONNECTION %s" % cid)
                except AssertionError:
                    pass  # it went away by itself
        time.sleep(0.5)  # let the proxy see its idle upstream connections close

    def whoami(self, proxy):
        conn = connect(proxy.port)
        try:
            return scalar(conn, "SELECT CURRENT_USER()")
        finally:
            conn.close()

    def wait_new_login(self, proxy, timeout=10.0):
        """Connects until a new session works; fails with the last error after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.whoami(proxy)
            except pymysql.err.MySQLError as e:
                if time.monotonic() > deadline:
                    self.fail("no new session within %.0fs of the rotation: %r" % (timeout, e))
                time.sleep(0.1)

    def test_rotation_keeps_sessions_and_new_logins_use_the_new_password(self):
        proxy = self.start_proxy("--secret-poll-interval", "200ms", "--workers", "1",
                                 secret=self.secret)
        me = "%s@127.0.0.1" % self.user
        s1 = connect(proxy.port)
        self.addCleanup(s1.close)
        self.assertEqual(scalar(s1, "SELECT CURRENT_USER()"), me)
        s1_id = scalar(s1, "SELECT CONNECTION_ID()")
        for _ in range(3):  # leave some idle upstream connections in the pool
            self.assertEqual(self.whoami(proxy), me)

        pw2 = "new-" + secrets.token_hex(12)
        self.set_password(pw2)
        proxy.write_secret(dict(self.secret, password=pw2))
        self.assertEqual(scalar(s1, "SELECT CURRENT_USER()"), me, "open session broke")
        self.kill_other_sessions(keep={s1_id})

        self.assertEqual(self.wait_new_login(proxy), me)
        for _ in range(5):  # once the new version is seen, every new login works
            self.assertEqual(self.whoami(proxy), me)
        self.assertEqual(scalar(s1, "SELECT CONNECTION_ID()"), s1_id)

    def test_password_with_json_escapes(self):
        proxy = self.start_proxy("--secret-poll-interval", "200ms", secret=self.secret)
        pw2 = 'q"uote\\back/slash-' + secrets.token_hex(6) + "Z"
        escaped = (pw2.replace("\\", "\\\\").replace('"', '\\"').replace("/", "\\/")[:-1]
                   + "\\u005a")
        text = json.dumps({k: v for k, v in self.secret.items() if k != "password"})
        text = text[:-1] + ', "password": "%s"}' % escaped
        self.assertEqual(json.loads(text)["password"], pw2)  # the file means what we think
        self.set_password(pw2)
        proxy.passwords.add(pw2)
        proxy.write_secret(text)
        self.kill_other_sessions()
        self.assertEqual(self.wait_new_login(proxy), "%s@127.0.0.1" % self.user)

    def test_bad_version_keeps_the_last_good_one(self):
        proxy = self.start_proxy("--secret-poll-interval", "200ms", secret=self.secret)
        me = "%s@127.0.0.1" % self.user
        self.assertEqual(self.whoami(proxy), me)
        before = len(proxy.log())
        proxy.write_secret('{"username": "%s", "password": ' % self.user)  # truncated JSON
        time.sleep(1.0)
        self.kill_other_sessions()
        for _ in range(3):
            self.assertEqual(self.whoami(proxy), me)
        self.assertIn(str(proxy.secret_file), proxy.log()[before:],
                      "the bad secret version was not logged")
        os.unlink(proxy.secret_file)  # a missing file is no better
        time.sleep(1.0)
        self.kill_other_sessions()
        self.assertEqual(self.whoami(proxy), me)

        pw2 = "new-" + secrets.token_hex(12)
        self.set_password(pw2)
        proxy.write_secret(dict(self.secret, password=pw2))
        self.kill_other_sessions()
        self.assertEqual(self.wait_new_login(proxy), me)

    def test_access_denied_rereads_the_secret_at_once(self):
        # With a one-hour poll, only the upstream's 1045 can make the proxy look at the file.
        proxy = self.start_proxy("--secret-poll-interval", "1h", secret=self.secret)
        me = "%s@127.0.0.1" % self.user
        self.assertEqual(self.whoami(proxy), me)
        pw2 = "new-" + secrets.token_hex(12)
        self.set_password(pw2)
        proxy.write_secret(dict(self.secret, password=pw2))
        self.kill_other_sessions()
        self.assertEqual(self.whoami(proxy), me, "the first login after the rotation failed")

    def test_kubernetes_symlink_swap(self):
        # The layout a Kubernetes secret volume uses: name -> ..data/name, ..data -> ..VERSION.
        vol = self.workdir / "vol"
        vol.mkdir()

        def publish(version, secret):
            d = vol / ("..%s" % version)
            d.mkdir()
            harness.write_json_atomic(d / "secret.json", secret)
            os.symlink(d.name, vol / "..data_tmp")
            os.rename(vol / "..data_tmp", vol / "..data")

        publish("v1", self.secret)
        os.symlink("..data/secret.json", vol / "secret.json")
        proxy = self.start_proxy("--secret-poll-interval", "200ms", secret=self.secret,
                                 start=False)
        proxy.secret_file = vol / "secret.json"
        proxy.start()
        me = "%s@127.0.0.1" % self.user
        self.assertEqual(self.whoami(proxy), me)
        pw2 = "new-" + secrets.token_hex(12)
        self.set_password(pw2)
        proxy.passwords.add(pw2)
        publish("v2", dict(self.secret, password=pw2))
        self.kill_other_sessions()
        self.assertEqual(self.wait_new_login(proxy), me)


if __name__ == "__main__":
    harness.main()
