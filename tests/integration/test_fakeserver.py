#!/usr/bin/python3
"""The fake MySQL server (tests/fakeserver) checked against real clients: PyMySQL and the
mariadb CLI (libmariadb) must log in to it and read its answers, and its scripted faults must
look to them like what they claim to be. Needs neither credproxy nor the MariaDB fixture."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fakeserver"))

from fakeserver import FakeServer, Rule, native_scramble  # noqa: E402

PASSWORD = "fake-Secret-1"


def cli(port, sql, password=PASSWORD, user="app", extra=(), timeout=30):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSQL_")}
    env["MYSQL_PWD"] = password
    argv = ["mariadb", "--no-defaults", "--protocol=tcp", "--host=127.0.0.1",
            "--port=%d" % port, "--user=" + user, "--batch", "--skip-column-names",
            "--connect-timeout=10"] + list(extra) + ["-e", sql]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


class FakeTestCase(unittest.TestCase):
    def fake(self, **kw):
        kw.setdefault("password", PASSWORD)
        srv = FakeServer(**kw).start()
        self.addCleanup(self.check_fake, srv)
        return srv

    def check_fake(self, srv):
        srv.stop()
        self.assertEqual(srv.errors, [], "the fake server raised")

    def connect(self, srv, **kw):
        kw.setdefault("connect_timeout", 10)
        kw.setdefault("read_timeout", 10)
        kw.setdefault("user", "app")
        kw.setdefault("password", PASSWORD)
        c = pymysql.connect(host="127.0.0.1", port=srv.port, **kw)
        self.addCleanup(lambda: c.open and c.close())
        return c


class RealClients(FakeTestCase):
    def test_scramble_matches_the_documented_algorithm(self):
        # SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))), as PyMySQL computes it.
        nonce = bytes(range(1, 21))
        self.assertEqual(native_scramble(PASSWORD, nonce),
                         pymysql._auth.scramble_native_password(PASSWORD.encode(), nonce))
        self.assertEqual(native_scramble("", nonce), b"")

    def test_pymysql_logs_in_and_queries(self):
        srv = self.fake()
        c = self.connect(srv, database="app")
        with c.cursor() as cur:
            cur.execute("SELECT 1")
            self.assertEqual(cur.fetchall(), ((1,),))
            cur.execute("SELECT 'two', 3, NULL")
            self.assertEqual(cur.fetchall(), (("two", 3, None),))
            cur.execute("SET SESSION sql_mode=''")
            cur.execute("SELECT DATABASE()")
            self.assertEqual(cur.fetchone(), ("app",))
        c.select_db("other")
        with c.cursor() as cur:
            cur.execute("SELECT DATABASE()")
            self.assertEqual(cur.fetchone(), ("other",))
        c.ping(reconnect=False)
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            c.select_db("nope")
        self.assertEqual(cm.exception.args[0], 1049)
        c.close()
        self.assertTrue(srv.wait_for(lambda s: s.count("COM_QUIT") == 1))
        names = [n for _, n, _ in srv.commands()]
        self.assertIn("COM_PING", names)
        self.assertEqual(srv.count("COM_INIT_DB"), 2)
        self.assertEqual(srv.connections[0].database, "other")

    def test_mariadb_cli_logs_in_and_queries(self):
        srv = self.fake()
        p = cli(srv.port, "SELECT 42; SELECT 'x', 7; SET @@session.autocommit=1; SELECT 1",
                extra=["--database=app"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.split(), ["42", "x", "7", "1"])
        conn = srv.connections[0]
        self.assertTrue(conn.auth_ok)
        self.assertEqual(conn.database, "app")
        self.assertTrue(srv.wait_for(lambda s: s.count("COM_QUIT") == 1))

    def test_wrong_password_and_user_are_refused(self):
        srv = self.fake()
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            self.connect(srv, password="wrong")
        self.assertEqual(cm.exception.args[0], 1045)
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            self.connect(srv, user="someone")
        self.assertEqual(cm.exception.args[0], 1045)
        p = cli(srv.port, "SELECT 1", password="wrong")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("1045", p.stderr)

    def test_unknown_database_at_login(self):
        srv = self.fake()
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            self.connect(srv, database="gone")
        self.assertEqual(cm.exception.args[0], 1049)


class Rules(FakeTestCase):
    def test_err_rule_on_a_query_regex(self):
        srv = self.fake(rules=[Rule(command="COM_QUERY", query=r"^SET SESSION session_track",
                                    action="err", error=(1193, "HY000", "Unknown system var"))])
        c = self.connect(srv)
        with c.cursor() as cur:
            cur.execute("SET SESSION sql_mode=''")  # not matched
            with self.assertRaises(pymysql.err.MySQLError) as cm:
                cur.execute("SET SESSION session_track_schema=ON")
            self.assertEqual(cm.exception.args[0], 1193)
            cur.execute("SELECT 1")
            self.assertEqual(cur.fetchone(), (1,))
        self.assertEqual(srv.rules[0].fired, 1)

    def test_drop_at_a_command_with_a_partial_reply(self):
        srv = self.fake(rules=[Rule(command="COM_QUERY", query="SELECT 5", action="drop",
                                    partial=7, times=1)])
        c = self.connect(srv)
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            with c.cursor() as cur:
                cur.execute("SELECT 5")
        self.assertEqual(cm.exception.args[0], 2013)
        # times=1: the next connection is served normally
        c2 = self.connect(srv)
        with c2.cursor() as cur:
            cur.execute("SELECT 5")
            self.assertEqual(cur.fetchone(), (5,))

    def test_drop_at_the_nth_packet(self):
        srv = self.fake(rules=[Rule(nth=3, action="drop")])
        c = self.connect(srv)  # PyMySQL sends SET AUTOCOMMIT first: packet 1
        with c.cursor() as cur:
            cur.execute("SELECT 1")  # 2
            with self.assertRaises(pymysql.err.OperationalError):
                cur.execute("SELECT 2")  # 3: dropped
        self.assertEqual(len(srv.commands(0)), 3)

    def test_trickled_reply_arrives_whole(self):
        srv = self.fake(rules=[Rule(command="COM_QUERY", query="SELECT 'slow'",
                                    trickle=(3, 0.01))])
        c = self.connect(srv)
        start = time.monotonic()
        with c.cursor() as cur:
            cur.execute("SELECT 'slow'")
            self.assertEqual(cur.fetchone(), ("slow",))
        self.assertGreater(time.monotonic() - start, 0.1, "the reply was not trickled")

    def test_wrong_sequence_id_is_seen_by_the_client(self):
        srv = self.fake(rules=[Rule(command="COM_QUERY", query="SELECT 9", seq_offset=5)])
        c = self.connect(srv)
        with self.assertRaises(pymysql.err.MySQLError) as cm:
            with c.cursor() as cur:
                cur.execute("SELECT 9")
        self.assertIn("sequence", str(cm.exception).lower())

    def test_big_session_state_ok_is_well_formed(self):
        # libmariadb asks for CLIENT_SESSION_TRACK and parses the session-state block.
        srv = self.fake(rules=[Rule(command="COM_QUERY", query="^SET big", action="ok",
                                    state_size=100 * 1024)])
        p = cli(srv.port, "SET big=1; SELECT 'after'")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "after")
        self.assertTrue(srv.connections[0].caps & (1 << 23), "no session tracking negotiated")

    def test_auth_switch_to_clear_password(self):
        srv = self.fake(auth_switch="mysql_clear_password")
        c = self.connect(srv)
        with c.cursor() as cur:
            cur.execute("SELECT 1")
            self.assertEqual(cur.fetchone(), (1,))
        self.assertEqual(srv.connections[0].clear_password_received, PASSWORD)
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            self.connect(srv, password="wrong")
        self.assertEqual(cm.exception.args[0], 1045)

    def test_reply_to_a_command_that_has_none(self):
        # A second OK after the answer to COM_PING: the client reads it as the next reply.
        stray_ok = bytes.fromhex("0700000200000002000000")
        srv = self.fake(rules=[Rule(command="COM_PING", extra=stray_ok)])
        c = self.connect(srv)
        c.ping(reconnect=False)
        # The stray OK answers the next command in the client's eyes: a reply out of place.
        with c.cursor() as cur:
            try:
                cur.execute("SELECT 77")
                got = cur.fetchall()
            except pymysql.err.MySQLError as e:
                got = e
        self.assertNotEqual(got, ((77,),), "the stray packet did not reach the client")


class Process(FakeTestCase):
    def test_runs_as_a_process_and_logs_commands(self):
        d = tempfile.mkdtemp(prefix="fakeserver.")
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        log = os.path.join(d, "log.json")
        rules = json.dumps([{"command": "COM_QUERY", "query": "boom", "action": "err",
                             "error": [1146, "42S02", "Table 'boom' doesn't exist"]}])
        env = dict(os.environ, FAKESERVER_PASSWORD=PASSWORD)
        p = subprocess.Popen([sys.executable, str(ROOT / "tests/fakeserver/fakeserver.py"),
                              "--port", "0", "--rules", rules, "--log", log],
                             stdout=subprocess.PIPE, text=True, env=env)
        try:
            line = p.stdout.readline()
            self.assertTrue(line.startswith("PORT "), line)
            port = int(line.split()[1])
            r = cli(port, "SELECT 'up'")
            self.assertEqual((r.returncode, r.stdout.strip()), (0, "up"), r.stderr)
            r = cli(port, "SELECT * FROM boom")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("1146", r.stderr)
        finally:
            p.send_signal(signal.SIGTERM)
            rc = p.wait(10)
            p.stdout.close()
        self.assertEqual(rc, 0)
        with open(log) as f:
            data = json.load(f)
        self.assertEqual(data["errors"], [])
        cmds = [c for conn in data["connections"] for c in conn["commands"]]
        self.assertIn(["COM_QUERY", "SELECT 'up'"], cmds)
        self.assertIn(["COM_QUERY", "SELECT * FROM boom"], cmds)


if __name__ == "__main__":
    unittest.main(verbosity=2)
