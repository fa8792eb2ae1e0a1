#!/usr/bin/python3
"""Transparent reconnect: upstream connections killed from root, and MariaDB stopped and started.

A client idle when its upstream connection dies continues on a new connection with its schema,
session variables, autocommit and prepared statements (reconnect_client.c checks those through
Connector/C, whose statement ids must keep working). A session holding state that cannot be
rebuilt (open transaction, user variables, temporary tables) has its client connection closed at
once, as the server's end of it was, so the driver sees a lost connection (2006/2013) as it would
directly and may reconnect; credproxy's log says why. A command in flight is not retried. New clients that
arrive while the server is down wait for it, up to connect_timeout.

The server is the suite's shared fixture. It is restarted here without tests/mariadb.sh start
(which would provision fresh passwords): mariadbd is stopped (mariadb-admin shutdown, or
SIGKILL for a crash) and run again on the same my.cnf, so its data and users survive. Whatever
happens, the test leaves the server running (tearDown starts it if it is down).
"""

import os
import queue
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

import pymysql

import harness
from harness import ProxyTestCase, connect, scalar, unique_name
from rotation_lambda import sql_string

SESSION_STATE_SQL = ("SELECT DATABASE(), @@SESSION.sql_mode, @@SESSION.time_zone, "
                     "@@SESSION.autocommit, @@SESSION.group_concat_max_len")
CHARSET_SQL = ("SELECT @@SESSION.character_set_client, @@SESSION.character_set_connection, "
               "@@SESSION.character_set_results, @@SESSION.collation_connection, "
               "'\u00df' = 'ss'")
PROXY_CONNECT_TIMEOUT = 20  # seconds: the server is down for far less
DOWNTIME = 4.0  # seconds the server stays down in the restart tests


def reconnect_client_program():
    path = Path(os.environ.get("CREDPROXY_RECONNECT_CLIENT")
                or harness.ROOT / "build" / "tests" / "integration" / "reconnect_client")
    if not os.access(path, os.X_OK):
        raise AssertionError("reconnect_client %s not found; build it or set "
                             "CREDPROXY_RECONNECT_CLIENT" % path)
    return str(path)


def quiet_close(conn):
    """Closes a PyMySQL connection that may be closed or broken already."""
    try:
        conn.close()
    except pymysql.err.Error:
        pass


class CClient:
    """reconnect_client.c: one Connector/C session, one command per line."""

    def __init__(self, port, database=None):
        argv = [reconnect_client_program(), "127.0.0.1", str(port)]
        if database:
            argv.append(database)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     env=harness.client_env())
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        first = self._line(60)
        if not first.startswith("CONNECTED "):
            raise AssertionError("reconnect_client did not connect: %s" % first)
        self.connection_id = int(first.split()[1])

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _line(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("reconnect_client gave no answer within %.0fs" % timeout) from None
        if line is None:
            raise AssertionError("reconnect_client exited (%s)" % self.proc.poll())
        return line

    def cmd(self, line, timeout=60):
        """Sends one command; returns its answer line."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._line(timeout)

    def row(self, line):
        """Runs a command that must return a row; returns the row's values."""
        answer = self.cmd(line)
        if not answer.startswith("ROW"):
            raise AssertionError("%r answered %r" % (line, answer))
        return answer.split("\t")[1:]

    def ok(self, line):
        answer = self.cmd(line)
        if not answer.startswith("OK"):
            raise AssertionError("%r answered %r" % (line, answer))
        return answer

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class ReconnectTestCase(ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.user = unique_name("rs")
        self.db2 = self.user + "_db"
        pw = "rs-" + secrets.token_hex(12)
        self.fixture.root_sql(
            "CREATE DATABASE %s;"
            "CREATE TABLE %s.t (id INT PRIMARY KEY, v VARCHAR(20) NOT NULL);"
            "INSERT INTO %s.t VALUES (1, 'one'), (2, 'two'), (3, 'three');"
            "CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY %s;"
            "GRANT ALL ON app.* TO '%s'@'127.0.0.1';"
            "GRANT ALL ON %s.* TO '%s'@'127.0.0.1';"
            % (self.db2, self.db2, self.db2, self.user, sql_string(pw), self.user, self.db2,
               self.user))
        self.addCleanup(self.fixture.root_sql, "DROP USER IF EXISTS '%s'@'127.0.0.1';"
                        "DROP DATABASE IF EXISTS %s" % (self.user, self.db2))
        self.addCleanup(self.ensure_server_running)  # runs before the DROP above
        self.secret = dict(self.fixture.secret(), username=self.user, password=pw)
        self.proxy = self.start_proxy("--workers", "2", "--connect-timeout",
                                      "%ds" % PROXY_CONNECT_TIMEOUT, "--secret-poll-interval",
                                      "200ms", secret=self.secret)

    # --- server control ------------------------------------------------------------------

    def server_pid(self):
        try:
            return int((self.fixture.dir / "mysqld.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def pid_alive(pid):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False

    def ping(self):
        return subprocess.run(["mariadb-admin", "--no-defaults", "--socket=" + self.fixture.socket,
                               "--user=root", "--connect-timeout=2", "ping"],
                              capture_output=True, env=harness.client_env(),
                              timeout=30).returncode == 0

    def stop_server(self, crash=False):
        """Stops mariadbd: a clean shutdown, or SIGKILL when crash. Returns when it is gone."""
        pid = self.server_pid()
        self.assertIsNotNone(pid, "no mysqld.pid in the fixture directory")
        if crash:
            os.kill(pid, signal.SIGKILL)
        else:
            subprocess.run(["mariadb-admin", "--no-defaults", "--socket=" + self.fixture.socket,
                            "--user=root", "shutdown"], capture_output=True,
                           env=harness.client_env(), timeout=60)
        deadline = time.monotonic() + 60
        while self.pid_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                self.fail("mariadbd did not stop within 60s")
            time.sleep(0.05)
        self.stopped_at = time.monotonic()

    def start_server(self):
        """Runs mariadbd again on the fixture's my.cnf (data and users kept), as mariadb.sh does."""
        d = self.fixture.dir
        for name in ("mysqld.pid", "mysqld.sock"):
            try:
                os.unlink(d / name)
            except FileNotFoundError:
                pass
        subprocess.run(["bash", "-c", 'setsid mariadbd --defaults-file="$1/my.cnf" </dev/null '
                        '>>"$1/mysqld.out" 2>&1 &', "start", str(d)], check=True, timeout=30)
        deadline = time.monotonic() + 60
        while not self.ping():
            if time.monotonic() > deadline:
                raise AssertionError("mariadbd did not come back within 60s:\n%s"
                                     % harness.log_tail(d / "mysqld.err", 30))
            time.sleep(0.1)
        self.started_at = time.monotonic()

    def ensure_server_running(self):
        pid = self.server_pid()
        if pid and self.pid_alive(pid) and self.ping():
            return
        self.start_server()

    # --- sessions ------------------------------------------------------------------------

    def upstream_ids(self):
        rows = self.fixture.root_sql("SELECT ID FROM information_schema.PROCESSLIST "
                                     "WHERE USER = '%s'" % self.user)
        return [int(r[0]) for r in rows]

    def kill_upstreams(self):
        """KILL CONNECTION for every upstream connection of the proxy; returns their ids."""
        ids = self.upstream_ids()
        self.assertTrue(ids, "no upstream connections to kill")
        for cid in ids:
            try:
                self.fixture.root_sql("KILL CONNECTION %d" % cid)
            except AssertionError:
                pass  # gone already
        deadline = time.monotonic() + 10
        while set(self.upstream_ids()) & set(ids):
            if time.monotonic() > deadline:
                self.fail("killed connections still listed after 10s")
            time.sleep(0.05)
        time.sleep(0.5)  # let the proxy see the connections close
        return ids

    def client(self, **kw):
        kw.setdefault("autocommit", True)
        kw.setdefault("read_timeout", 60)
        kw.setdefault("connect_timeout", 30)
        c = connect(self.proxy.port, **kw)
        self.addCleanup(quiet_close, c)
        return c

    def state(self, conn):
        with conn.cursor() as cur:
            cur.execute(SESSION_STATE_SQL)
            return tuple(cur.fetchone())

    def stateful_sessions(self):
        """PyMySQL sessions with schema, variables and autocommit changed; (conn, state, id)."""
        settings = [
            ("ANSI_QUOTES", "+03:00", 1, 4321),
            ("NO_ZERO_DATE,STRICT_TRANS_TABLES", "-07:30", 1, 2048),
            ("PIPES_AS_CONCAT", "+11:00", 0, 777),  # autocommit off, no transaction open
        ]
        sessions = []
        for mode, tz, ac, gcml in settings:
            c = self.client(autocommit=bool(ac))
            with c.cursor() as cur:
                cur.execute("USE %s" % self.db2)
                cur.execute("SET SESSION sql_mode = %s", (mode,))
                cur.execute("SET SESSION time_zone = %s", (tz,))
                cur.execute("SET SESSION group_concat_max_len = %s", (gcml,))
                cur.execute("SELECT v FROM t WHERE id = 1")
            c.commit()  # with autocommit off, the SELECT opened a transaction: end it
            st = self.state(c)
            self.assertEqual(st[0], self.db2)
            self.assertEqual(st[3], ac)
            sessions.append((c, st, scalar(c, "SELECT CONNECTION_ID()")))
        return sessions

    def check_stateful_sessions(self, sessions, expect_new_id=True):
        for i, (c, st, old_id) in enumerate(sessions):
            try:
                now = self.state(c)
            except pymysql.err.MySQLError as e:
                self.fail("idle session %d (state %r) failed after its upstream connection "
                          "died: %r" % (i, st, e))
            self.assertEqual(now, st, "session %d lost its state" % i)
            self.assertEqual(scalar(c, "SELECT v FROM t WHERE id = 2"), "two")
            c.commit()
            if expect_new_id:
                self.assertNotEqual(scalar(c, "SELECT CONNECTION_ID()"), old_id,
                                    "session %d is on the killed connection?" % i)

    def c_session(self):
        """A Connector/C session with schema, variables and three prepared statements."""
        cc = CClient(self.proxy.port)
        self.addCleanup(cc.close)
        cc.ok("query USE %s" % self.db2)
        cc.ok("query SET SESSION time_zone = '-03:00'")
        cc.ok("query SET SESSION sql_mode = 'ANSI_QUOTES,NO_ENGINE_SUBSTITUTION'")
        cc.ok("prepare lookup SELECT v, DATABASE(), @@SESSION.time_zone FROM t WHERE id = ?")
        cc.ok("prepare gone SELECT ? + 1")
        cc.ok("prepare concat SELECT CONCAT(?, '-', ?)")
        cc.ok("close gone")  # so the client's statement ids have a hole the server's won't
        cc.ok("prepare quoted SELECT \"v\" FROM t WHERE id = 3")  # ANSI_QUOTES: a column
        expect = {
            "execute lookup 1": ["one", self.db2, "-03:00"],
            "execute concat a b": ["a-b"],
            "execute quoted": ["three"],
            "query SELECT DATABASE(), @@SESSION.time_zone, @@SESSION.sql_mode":
                [self.db2, "-03:00", "ANSI_QUOTES,NO_ENGINE_SUBSTITUTION"],
        }
        for line, want in expect.items():
            self.assertEqual(cc.row(line), want, line)
        return cc, expect

    def check_c_session(self, cc, expect, more=True):
        """expect's commands give the same rows; with more, prepares and closes statements."""
        for _ in range(2):
            for line, want in expect.items():
                answer = cc.cmd(line)
                self.assertTrue(answer.startswith("ROW"),
                                "Connector/C session after reconnect: %r answered %r"
                                % (line, answer))
                self.assertEqual(answer.split("\t")[1:], want, line)
        if not more:
            return
        self.assertEqual(cc.row("execute lookup 2"), ["two", self.db2, "-03:00"])
        # A statement prepared after the move gets an id that does not clash with old ones.
        cc.ok("prepare later SELECT ? * 2")
        self.assertEqual(cc.row("execute later 21"), ["42"])
        self.assertEqual(cc.row("execute concat x y"), ["x-y"])
        self.assertEqual(cc.row("execute lookup 3"), ["three", self.db2, "-03:00"])
        cc.ok("close lookup")
        self.assertEqual(cc.row("execute later 5"), ["10"])

    def unrestorable_sessions(self):
        """PyMySQL sessions whose state cannot be rebuilt: (conn, words the error must name)."""
        in_trans = self.client()
        with in_trans.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT v FROM %s.t WHERE id = 1 FOR UPDATE" % self.db2)
        user_var = self.client()
        with user_var.cursor() as cur:
            cur.execute("SET @remember_me = 42")
        temp = self.client()
        with temp.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE scratch (x INT)")
        return [(in_trans, "transaction"), (user_var, "user variables"),
                (temp, "temporary tables")]

    def check_unrestorable(self, sessions):
        for conn, why in sessions:
            with self.assertRaises(pymysql.err.OperationalError,
                                   msg="a session with %s continued" % why) as cm:
                scalar(conn, "SELECT 1")
            self.assertIn(cm.exception.args[0], (2006, 2013),
                          "%s: not a lost connection: %r" % (why, cm.exception))
            self.assertTrue(self.proxy.wait_log(why), "the log does not say why (%s)" % why)

    def in_flight(self, seconds=4):
        """A thread running SELECT SLEEP(seconds); returns (thread, result dict)."""
        conn = self.client()
        scalar(conn, "SELECT 1")
        result = {}

        def run():
            t0 = time.monotonic()
            try:
                result["value"] = scalar(conn, "SELECT SLEEP(%d), 'done'" % seconds)
            except Exception as e:  # noqa: BLE001
                result["error"] = e
            result["elapsed"] = time.monotonic() - t0
            try:
                result["after"] = scalar(conn, "SELECT 'still open'")
            except Exception as e:  # noqa: BLE001
                result["after_error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        time.sleep(0.7)  # the query reaches the server
        return t, result

    def check_in_flight(self, t, result, seconds=4):
        t.join(60)
        self.assertFalse(t.is_alive())
        self.assertIn("error", result, "the command in flight returned %r: it was retried or "
                      "the server did not die" % (result.get("value"),))
        self.assertIsInstance(result["error"], pymysql.err.OperationalError)
        self.assertLess(result["elapsed"], seconds, "the client waited out the whole command")
        self.assertIn("after_error", result, "the connection stayed usable after its command "
                      "was cut short (%r)" % (result.get("after"),))

    def assert_new_clients_work(self):
        c = self.client()
        self.assertEqual(scalar(c, "SELECT CURRENT_USER()"), "%s@127.0.0.1" % self.user)
        self.assertEqual(scalar(c, "SELECT DATABASE()"), "app")
        c.close()


class KillConnections(ReconnectTestCase):
    def test_idle_sessions_continue_with_their_state(self):
        sessions = self.stateful_sessions()
        cc, expect = self.c_session()
        c_upstream = int(cc.row("query SELECT CONNECTION_ID()")[0])
        killed = self.kill_upstreams()
        self.assertIn(c_upstream, killed)
        self.check_stateful_sessions(sessions)
        self.check_c_session(cc, expect)
        self.assertEqual(cc.row("query SELECT 'ok'"), ["ok"])
        self.assert_new_clients_work()
        # And once more: a session moved before can be moved again.
        self.kill_upstreams()
        self.check_stateful_sessions(sessions)
        self.check_c_session(cc, {"execute concat p q": ["p-q"], "execute quoted": ["three"],
                                  "execute later 4": ["8"]}, more=False)

    def test_set_names_survives(self):
        # SET NAMES changes four variables at once; replayed in the wrong order (collation
        # before character set), the collation falls back to the character set's default.
        conns = []
        for names in ("utf8mb4 COLLATE utf8mb4_unicode_ci", "latin1 COLLATE latin1_german2_ci"):
            c = self.client()
            with c.cursor() as cur:
                cur.execute("SET NAMES %s" % names)
                cur.execute(CHARSET_SQL)
                conns.append((names, c, tuple(cur.fetchone())))
        self.assertEqual(conns[0][2][3:], ("utf8mb4_unicode_ci", 1))  # unicode_ci: ß = ss
        self.kill_upstreams()
        for names, c, before in conns:
            with c.cursor() as cur:
                cur.execute(CHARSET_SQL)
                self.assertEqual(tuple(cur.fetchone()), before,
                                 "SET NAMES %s was not restored (character_set_client, "
                                 "_connection, _results, collation_connection, 'ß' = 'ss')"
                                 % names)

    def test_unrestorable_sessions_get_a_clear_error(self):
        sessions = self.unrestorable_sessions()
        fine = self.stateful_sessions()[:1]
        self.kill_upstreams()
        self.check_unrestorable(sessions)
        self.check_stateful_sessions(fine)
        self.assert_new_clients_work()

    def test_unrestorable_session_is_lost_to_libmariadb_clients_as_directly(self):
        # A Connector/C session in a transaction: it sees its connection lost (2013 or 2006),
        # what libmariadb reports when the server goes away directly, so its own reconnect
        # logic applies; credproxy logs why.
        cc = CClient(self.proxy.port)
        self.addCleanup(cc.close)
        cc.ok("query BEGIN")
        self.assertEqual(cc.row("query SELECT v FROM %s.t WHERE id = 1" % self.db2), ["one"])
        self.kill_upstreams()
        answer = cc.cmd("query SELECT 1")
        self.assertTrue(answer.startswith("ERR "), "the session continued: %r" % answer)
        self.assertIn(answer.split()[1], ("2006", "2013"), answer)
        self.assertTrue(self.proxy.wait_log("cannot be moved: a transaction was open"))

    def test_command_in_flight_is_not_retried(self):
        t, result = self.in_flight()
        self.kill_upstreams()
        self.check_in_flight(t, result)
        self.assert_new_clients_work()


class ServerRestart(ReconnectTestCase):
    def connect_while_down(self, proxy):
        """Starts a new client now (the server is down); returns (thread, result dict)."""
        result = {}

        def run():
            t0 = time.monotonic()
            result["start"] = t0
            try:
                c = connect(proxy.port, autocommit=True, connect_timeout=30, read_timeout=60)
                result["value"] = scalar(c, "SELECT CURRENT_USER()")
                c.close()
            except Exception as e:  # noqa: BLE001
                result["error"] = e
            result["end"] = time.monotonic()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, result

    def test_clean_restart(self):
        sessions = self.stateful_sessions()
        cc, expect = self.c_session()
        broken = self.unrestorable_sessions()
        # A second proxy with a short connect_timeout: its clients must give up, with an error,
        # while the server is down for longer than that.
        short = self.start_proxy("--workers", "1", "--connect-timeout", "2s", secret=self.secret)
        c = connect(short.port, autocommit=True)
        self.assertEqual(scalar(c, "SELECT 1"), 1)
        c.close()
        t_flight, flight = self.in_flight(seconds=20)

        self.stop_server()
        waiter, waited = self.connect_while_down(self.proxy)
        t0 = time.monotonic()
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            connect(short.port, connect_timeout=30, read_timeout=60)
        gave_up = time.monotonic() - t0
        err_msg = str(cm.exception)
        time.sleep(max(0.0, DOWNTIME - (time.monotonic() - self.stopped_at)))
        self.assertTrue(waiter.is_alive(), "the client that connected while the server was down "
                        "did not wait for it: %r" % waited)
        self.start_server()

        waiter.join(PROXY_CONNECT_TIMEOUT + 10)
        self.assertNotIn("error", waited, "a client that connected while the server was down "
                         "failed although the server came back within connect_timeout")
        self.assertEqual(waited.get("value"), "%s@127.0.0.1" % self.user)
        self.assertLess(waited["start"], self.started_at)
        self.assertGreater(gave_up, 1.5, "the short-timeout proxy gave up early: %s" % err_msg)
        self.assertLess(gave_up, 6.0, "the short-timeout proxy waited too long: %s" % err_msg)

        self.check_in_flight(t_flight, flight, seconds=20)
        self.check_stateful_sessions(sessions, expect_new_id=False)
        self.check_c_session(cc, expect)
        self.check_unrestorable(broken)
        self.assert_new_clients_work()
        # Last, so the checks above run regardless: the give-up error must be one libmariadb
        # clients can read (a client-range code in an ERR packet becomes 2027).
        harness.assert_server_error_code(self, cm.exception.args[0])

    def test_crash_restart(self):
        sessions = self.stateful_sessions()
        cc, expect = self.c_session()
        self.stop_server(crash=True)
        waiter, waited = self.connect_while_down(self.proxy)
        time.sleep(2.0)
        self.start_server()
        waiter.join(PROXY_CONNECT_TIMEOUT + 10)
        self.assertNotIn("error", waited)
        self.assertEqual(waited.get("value"), "%s@127.0.0.1" % self.user)
        self.check_stateful_sessions(sessions, expect_new_id=False)
        self.check_c_session(cc, expect)
        self.assert_new_clients_work()

    def test_idle_session_command_while_down_waits_for_the_server(self):
        sessions = self.stateful_sessions()[:2]
        self.stop_server()
        time.sleep(0.5)
        result = {}

        def run():
            try:
                result["state"] = self.state(sessions[0][0])
            except Exception as e:  # noqa: BLE001
                result["error"] = e
            result["end"] = time.monotonic()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        time.sleep(2.0)
        self.assertTrue(t.is_alive(), "the idle session's command did not wait: %r" % result)
        self.start_server()
        t.join(PROXY_CONNECT_TIMEOUT + 10)
        self.assertNotIn("error", result, "the idle session failed although the server came "
                         "back within connect_timeout")
        self.assertEqual(result["state"], sessions[0][1])
        self.check_stateful_sessions(sessions, expect_new_id=False)


if __name__ == "__main__":
    harness.main()
