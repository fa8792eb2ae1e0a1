"""upstream_role=writer: never hand a client a read-only server (issue 11, part 2).

A failover as clients see it: the writer's name still points at the old writer, now read-only
(SET GLOBAL read_only=ON, as RDS sets it on a demoted instance), for a few seconds. With
upstream_role=writer, autocommit writers must see no error at all (a statement refused with
1290 is sent again on a writable connection; new logins wait for one), and every row must be
written exactly once. The clients' user (the fixture's app user) has no SUPER or READ ONLY
ADMIN privilege, which read_only does not stop; the tests check that it is refused directly.

TwoServers moves the name between two MariaDB servers: a loopback TCP forwarder stands for the
writer endpoint's DNS name (new connections follow it, existing ones stay where they are, as
with a DNS change), and the second server is started here with tests/mariadb.sh.
"""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest

import pymysql

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import ROOT, ProxyTestCase, free_port  # noqa: E402

ER_OPTION_PREVENTS_STATEMENT = 1290


def proxy_conn(proxy, **kw):
    kw.setdefault("connect_timeout", 30)
    kw.setdefault("read_timeout", 60)
    return pymysql.connect(host="127.0.0.1", port=proxy.port, user="anyone", password="",
                           database="app", charset="utf8mb4", autocommit=True, **kw)


class Writers:
    """n clients INSERTing through the proxy, each on its own connection, until stopped."""

    def __init__(self, port, table, n=4):
        self.port, self.table, self.n = port, table, n
        self.stop = threading.Event()
        self.errors = []
        self.done = [0] * n
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]

    def _run(self, i):
        try:
            c = pymysql.connect(host="127.0.0.1", port=self.port, user="anyone", password="",
                                database="app", autocommit=True, connect_timeout=30,
                                read_timeout=60)
        except pymysql.MySQLError as e:
            self.errors.append(("connect", i, repr(e)))
            return
        k = 0
        while not self.stop.is_set():
            try:
                with c.cursor() as cur:
                    cur.execute("INSERT INTO %s (writer, n) VALUES (%%s, %%s)" % self.table, (i, k))
                self.done[i] = k + 1
                k += 1
            except pymysql.MySQLError as e:
                self.errors.append(("insert", i, k, repr(e)))
                return
            time.sleep(0.01)
        c.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self, test):
        self.stop.set()
        for t in self.threads:
            t.join(90)
            test.assertFalse(t.is_alive(), "a writer is stuck")


class FailoverCase(ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.table = harness.unique_name("fo")
        self.fixture.root_sql("CREATE TABLE app.%s (id INT AUTO_INCREMENT PRIMARY KEY, writer INT, "
                              "n INT, UNIQUE KEY (writer, n))" % self.table)
        self.addCleanup(self.fixture.root_sql, "SET GLOBAL read_only=OFF; DROP TABLE IF EXISTS "
                        "app.%s" % self.table)

    def set_read_only(self, on, root_sql=None):
        (root_sql or self.fixture.root_sql)("SET GLOBAL read_only=%s" % ("ON" if on else "OFF"))

    def assert_app_refused_directly(self):
        """read_only stops the secret's user (no SUPER / READ ONLY ADMIN): else nothing is tested."""
        d = self.fixture.direct(self.fixture.secret(), autocommit=True)
        try:
            with d.cursor() as cur:
                self.assertMysqlError(ER_OPTION_PREVENTS_STATEMENT, cur.execute,
                                      "INSERT INTO app.%s (writer, n) VALUES (-1, -1)" % self.table)
        finally:
            d.close()

    def count_rows(self, root_sql=None):
        rows = (root_sql or self.fixture.root_sql)(
            "SELECT COUNT(*), COUNT(DISTINCT writer, n) FROM app.%s" % self.table)
        return int(rows[0][0]), int(rows[0][1])


class ReadOnlyWindow(FailoverCase):
    def test_writers_see_no_error_and_logins_wait(self):
        p = self.start_proxy("--upstream-role", "writer", "--connect-timeout", "20s")
        w = Writers(p.port, self.table).start()
        time.sleep(1.5)
        self.set_read_only(True)
        try:
            self.assert_app_refused_directly()
            # A new login during the read-only window waits, then works.
            login = {}

            def late_login():
                t0 = time.monotonic()
                try:
                    c = proxy_conn(p)
                    with c.cursor() as cur:
                        cur.execute("INSERT INTO %s (writer, n) VALUES (99, 0)" % self.table)
                    c.close()
                    login["ok"] = time.monotonic() - t0
                except pymysql.MySQLError as e:
                    login["error"] = repr(e)

            t = threading.Thread(target=late_login, daemon=True)
            t.start()
            time.sleep(3)
            before_off = sum(w.done)
        finally:
            self.set_read_only(False)
        t.join(30)
        time.sleep(1.5)
        w.finish(self)
        self.assertEqual(w.errors, [], "clients saw errors")
        self.assertIn("ok", login, "the login during the read-only window failed: %r" % login)
        self.assertGreater(login["ok"], 1.5, "the login did not wait for a writable server")
        total = sum(w.done) + 1
        self.assertGreater(sum(w.done), before_off, "writers did not resume")
        self.assertEqual(self.count_rows(), (total, total), "rows written != statements that succeeded")
        log = p.log()
        self.assertIn("refused a statement as read-only; sending it again", log)
        self.assertIn("is read-only (a new connection)", log)

    def test_login_gives_up_at_connect_timeout_with_a_clear_error(self):
        p = self.start_proxy("--upstream-role", "writer", "--connect-timeout", "1500ms")
        self.set_read_only(True)
        try:
            t0 = time.monotonic()
            e = self.assertMysqlError(ER_OPTION_PREVENTS_STATEMENT, proxy_conn, p)
            waited = time.monotonic() - t0
        finally:
            self.set_read_only(False)
        self.assertIn("read-only", str(e))
        self.assertIn("connect_timeout", str(e))
        self.assertGreater(waited, 1.2)
        self.assertLess(waited, 10)
        c = proxy_conn(p)  # writable again: logins work at once
        c.close()

    def test_in_transaction_the_client_gets_1290_then_moves(self):
        p = self.start_proxy("--upstream-role", "writer", "--connect-timeout", "20s")
        c = proxy_conn(p)
        self.set_read_only(True)
        try:
            with c.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("SELECT COUNT(*) FROM %s" % self.table)
                self.assertMysqlError(ER_OPTION_PREVENTS_STATEMENT, cur.execute,
                                      "INSERT INTO %s (writer, n) VALUES (1, 1)" % self.table)
                cur.execute("ROLLBACK")
        finally:
            self.set_read_only(False)
        p.wait_log("the next command goes to a writable server")
        with c.cursor() as cur:
            cur.execute("INSERT INTO %s (writer, n) VALUES (1, 2)" % self.table)
        c.close()
        self.assertEqual(self.count_rows(), (1, 1))
        self.assertNotIn("sending it again", p.log())

    def test_role_any_keeps_todays_behaviour(self):
        p = self.start_proxy("--upstream-role", "any", "--connect-timeout", "20s")
        c = proxy_conn(p)
        self.set_read_only(True)
        try:
            with c.cursor() as cur:
                t0 = time.monotonic()
                self.assertMysqlError(ER_OPTION_PREVENTS_STATEMENT, cur.execute,
                                      "INSERT INTO %s (writer, n) VALUES (1, 1)" % self.table)
                self.assertLess(time.monotonic() - t0, 5.0)  # connect_timeout is 20 s
            t0 = time.monotonic()
            c2 = proxy_conn(p)  # a new login is not held back
            self.assertLess(time.monotonic() - t0, 5.0)
            c2.close()
        finally:
            self.set_read_only(False)
        with c.cursor() as cur:
            cur.execute("INSERT INTO %s (writer, n) VALUES (1, 2)" % self.table)
        c.close()
        self.assertNotIn("read-only", p.log())
        self.assertEqual(self.count_rows(), (1, 1))

    def test_auto_is_any_for_a_loopback_host(self):
        p = self.start_proxy("--connect-timeout", "20s")  # upstream_role=auto
        c = proxy_conn(p)
        self.set_read_only(True)
        try:
            with c.cursor() as cur:
                self.assertMysqlError(ER_OPTION_PREVENTS_STATEMENT, cur.execute,
                                      "INSERT INTO %s (writer, n) VALUES (1, 1)" % self.table)
        finally:
            self.set_read_only(False)
        c.close()


class Forwarder:
    """A loopback TCP forwarder standing for a DNS name: new connections go to target."""

    def __init__(self, target_port):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                a, _ = self.sock.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                a.close()
                continue
            b.settimeout(None)
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):  # wakes the other direction's thread, which closes dst
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        src.close()

    def close(self):
        self.closed = True
        self.sock.close()


class TwoServers(FailoverCase):
    """The writer's name moves from server A (demoted to read-only) to server B (promoted)."""

    def setUp(self):
        super().setUp()
        self.b_dir = self.fixture.dir / "runs" / ("second-server.%d" % os.getpid())
        self.b_port = free_port()
        self.addCleanup(shutil.rmtree, self.b_dir, ignore_errors=True)  # after the stop below
        subprocess.run(["bash", str(ROOT / "tests" / "mariadb.sh"), "start", str(self.b_dir),
                        str(self.b_port)], check=True, capture_output=True, timeout=120)
        self.addCleanup(subprocess.run, ["bash", str(ROOT / "tests" / "mariadb.sh"), "stop",
                                         str(self.b_dir)], capture_output=True, timeout=120)
        pw = self.fixture.secret()["password"].replace("\\", "\\\\").replace("'", "\\'")
        self.root_b("ALTER USER 'app'@'127.0.0.1' IDENTIFIED BY '%s'; "
                    "CREATE TABLE app.%s (id INT AUTO_INCREMENT PRIMARY KEY, writer INT, n INT, "
                    "UNIQUE KEY (writer, n)); SET GLOBAL read_only=ON" % (pw, self.table))

    def root_b(self, sql):
        p = subprocess.run(["mariadb", "--no-defaults", "--socket=%s" % (self.b_dir / "mysqld.sock"),
                            "--user=root", "--batch", "--skip-column-names"], input=sql,
                           capture_output=True, text=True, timeout=60, env=harness.client_env())
        if p.returncode != 0:
            raise AssertionError("root SQL on B failed: %s" % p.stderr)
        return [line.split("\t") for line in p.stdout.splitlines()]

    def test_the_name_moves_and_writers_see_no_error(self):
        fwd = Forwarder(self.fixture.port)
        self.addCleanup(fwd.close)
        p = self.start_proxy("--upstream-host", "127.0.0.1", "--upstream-port", str(fwd.port),
                             "--upstream-role", "writer", "--connect-timeout", "20s")
        w = Writers(p.port, self.table).start()
        time.sleep(1.5)
        # The failover: A is demoted; for 2 s its name still points at it; then B is promoted
        # and the name moves.
        self.set_read_only(True)
        try:
            time.sleep(2)
            self.root_b("SET GLOBAL read_only=OFF")
            fwd.target = self.b_port
            time.sleep(2.5)
        finally:
            w.finish(self)
            self.set_read_only(False)
        self.assertEqual(w.errors, [], "clients saw errors")
        total = sum(w.done)
        a, a_distinct = self.count_rows()
        b, b_distinct = self.count_rows(self.root_b)
        self.assertEqual((a, b), (a_distinct, b_distinct), "a row was written twice")
        self.assertEqual(a + b, total, "rows written != statements that succeeded")
        self.assertGreater(a, 0)
        self.assertGreater(b, 0, "no writer reached the promoted server")
        self.assertIn("sending it again", p.log())


if __name__ == "__main__":
    harness.main()
