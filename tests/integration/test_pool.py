#!/usr/bin/python3
"""The upstream connection pool: reset and reuse, capability matching, limits and timeouts.

Each test logs in as its own throwaway user, so its upstream connections can be counted in
information_schema.PROCESSLIST without the other tests' connections in the way. Most run with
--workers 1 so every client lands in the same per-worker pool.
"""

import secrets
import threading
import time

import pymysql
from pymysql.constants import CLIENT

import harness
from harness import ProxyTestCase, connect, scalar, unique_name
from rotation_lambda import sql_string

ER_CON_COUNT_ERROR = 1040


def quiet_close(conn):
    """Closes a PyMySQL connection that may be closed or broken already."""
    try:
        conn.close()
    except pymysql.err.Error:
        pass


class PoolTestCase(ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.user = unique_name("pool")
        self.table = self.user + "_t"
        pw = "pool-" + secrets.token_hex(12)
        self.fixture.root_sql(
            "CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY %s;"
            "GRANT ALL ON app.* TO '%s'@'127.0.0.1';"
            "CREATE TABLE app.%s (id INT PRIMARY KEY, v INT NOT NULL);"
            "INSERT INTO app.%s VALUES (1, 10), (2, 20);"
            % (self.user, sql_string(pw), self.user, self.table, self.table))
        self.addCleanup(self.fixture.root_sql, "DROP USER IF EXISTS '%s'@'127.0.0.1';"
                        "DROP TABLE IF EXISTS app.%s" % (self.user, self.table))
        self.secret = dict(self.fixture.secret(), username=self.user, password=pw)

    def proxy_with(self, *args):
        return self.start_proxy("--workers", "1", *args, secret=self.secret)

    def client(self, proxy, **kw):
        kw.setdefault("autocommit", True)
        c = connect(proxy.port, **kw)
        self.addCleanup(quiet_close, c)
        return c

    def upstream_ids(self):
        """The server's connection ids of this test's user (credproxy's upstream connections)."""
        rows = self.fixture.root_sql("SELECT ID FROM information_schema.PROCESSLIST "
                                     "WHERE USER = '%s' ORDER BY ID" % self.user)
        return [int(r[0]) for r in rows]

    def wait_upstream_count(self, want, timeout=8.0):
        """Waits until the user has want upstream connections; returns the last count."""
        deadline = time.monotonic() + timeout
        while True:
            n = len(self.upstream_ids())
            if n == want or time.monotonic() > deadline:
                return n
            time.sleep(0.1)

    def release_then_settle(self):
        """A closed client's connection is reset before it is idle again; give it a moment."""
        time.sleep(0.3)


class ResetOnReturn(PoolTestCase):
    def test_next_client_gets_a_clean_session_on_the_same_connection(self):
        proxy = self.proxy_with()
        a = connect(proxy.port, autocommit=True)
        a_id = scalar(a, "SELECT CONNECTION_ID()")
        default_mode = scalar(a, "SELECT @@SESSION.sql_mode")
        default_tz = scalar(a, "SELECT @@SESSION.time_zone")
        with a.cursor() as cur:
            cur.execute("SET @pool_secret = 'left-behind'")
            cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
            cur.execute("SET SESSION time_zone = '+05:00'")
            cur.execute("CREATE TEMPORARY TABLE tmp_left (x INT)")
            cur.execute("PREPARE left_stmt FROM 'SELECT 1'")
        a.close()
        self.release_then_settle()

        b = self.client(proxy)
        self.assertEqual(scalar(b, "SELECT CONNECTION_ID()"), a_id,
                         "the next client did not reuse the pooled connection")
        self.assertIsNone(scalar(b, "SELECT @pool_secret"), "a user variable leaked")
        self.assertEqual(scalar(b, "SELECT @@SESSION.sql_mode"), default_mode)
        self.assertEqual(scalar(b, "SELECT @@SESSION.time_zone"), default_tz)
        self.assertEqual(scalar(b, "SELECT DATABASE()"), "app")
        with self.assertRaises(pymysql.err.ProgrammingError):  # 1146: the temp table is gone
            scalar(b, "SELECT * FROM tmp_left")
        with self.assertRaises(pymysql.err.MySQLError):  # 1243: unknown prepared statement
            scalar(b, "EXECUTE left_stmt")
        self.assertEqual(self.upstream_ids(), [a_id])

    def test_sequential_clients_share_one_connection(self):
        proxy = self.proxy_with()
        ids = set()
        for i in range(10):
            c = connect(proxy.port, autocommit=True)
            ids.add(scalar(c, "SELECT CONNECTION_ID()"))
            with c.cursor() as cur:
                cur.execute("SET @n = %s", (i,))
            c.close()
            self.release_then_settle()
        self.assertEqual(len(ids), 1, "10 sequential clients used %d connections" % len(ids))

    def test_open_transaction_is_not_returned_to_the_pool(self):
        proxy = self.proxy_with()
        a = connect(proxy.port, autocommit=False)
        a_id = scalar(a, "SELECT CONNECTION_ID()")
        with a.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("UPDATE %s SET v = 99 WHERE id = 1" % self.table)
        a.close()  # leaves without COMMIT
        self.release_then_settle()
        b = self.client(proxy)
        self.assertNotEqual(scalar(b, "SELECT CONNECTION_ID()"), a_id,
                            "a connection with an open transaction was lent to the next client")
        self.assertEqual(scalar(b, "SELECT v FROM %s WHERE id = 1" % self.table), 10,
                         "the departed client's uncommitted change is visible")
        self.assertEqual(self.wait_upstream_count(1), 1,
                         "the connection with the open transaction was not closed")


class CapabilityMatching(PoolTestCase):
    KINDS = {
        "plain": 0,
        "multi_statements": CLIENT.MULTI_STATEMENTS,
        "found_rows": CLIENT.FOUND_ROWS,
    }

    def kind_client(self, proxy, kind):
        return connect(proxy.port, autocommit=True, client_flag=self.KINDS[kind])

    def check_semantics(self, conn, kind):
        """The session behaves as the client's flags say, whichever connection it got."""
        with conn.cursor() as cur:
            # Affected rows of an UPDATE that changes nothing: found (1) with FOUND_ROWS,
            # changed (0) without.
            n = cur.execute("UPDATE %s SET v = v WHERE id = 1" % self.table)
            self.assertEqual(n, 1 if kind == "found_rows" else 0,
                             "%s client: UPDATE reported %d affected rows" % (kind, n))
            if kind == "multi_statements":
                cur.execute("SELECT 1; SELECT 2")
                self.assertEqual(cur.fetchone()[0], 1)
                self.assertTrue(cur.nextset())
                self.assertEqual(cur.fetchone()[0], 2)
            else:
                with self.assertRaises(pymysql.err.ProgrammingError,
                                       msg="%s client ran two statements" % kind):
                    cur.execute("SELECT 1; SELECT 2")

    def test_mismatched_clients_never_share_a_connection(self):
        proxy = self.proxy_with()
        seen = {}  # CONNECTION_ID -> set of kinds that got it
        order = ["plain", "multi_statements", "found_rows"] * 4
        for kind in order:
            conn = self.kind_client(proxy, kind)
            cid = scalar(conn, "SELECT CONNECTION_ID()")
            seen.setdefault(cid, set()).add(kind)
            self.check_semantics(conn, kind)
            conn.close()
            self.release_then_settle()
        shared = {cid: kinds for cid, kinds in seen.items() if len(kinds) > 1}
        self.assertEqual(shared, {}, "clients with different capabilities shared connections")
        # Each kind reused its own connection rather than logging in every time.
        self.assertEqual(len(seen), len(self.KINDS), "connections per kind: %r" % seen)

    def test_concurrent_mixed_clients(self):
        proxy = self.proxy_with()
        conns = [(kind, self.kind_client(proxy, kind)) for kind in self.KINDS for _ in range(2)]
        for kind, conn in conns:
            self.check_semantics(conn, kind)
        ids = {}
        for kind, conn in conns:
            ids.setdefault(kind, set()).add(scalar(conn, "SELECT CONNECTION_ID()"))
            conn.close()
        self.release_then_settle()
        for kind in self.KINDS:  # the idle connections are matched by kind on the way back out
            conn = self.kind_client(proxy, kind)
            cid = scalar(conn, "SELECT CONNECTION_ID()")
            self.assertIn(cid, ids[kind], "a %s client got a connection of another kind" % kind)
            self.check_semantics(conn, kind)
            conn.close()


class Limits(PoolTestCase):
    def test_pool_size_is_respected_and_waiters_get_the_freed_connection(self):
        proxy = self.proxy_with("--pool-size", "2", "--pool-wait-timeout", "10s")
        a = connect(proxy.port, autocommit=True)
        b = self.client(proxy)
        a_id = scalar(a, "SELECT CONNECTION_ID()")
        self.assertEqual(len(self.upstream_ids()), 2)

        result = {}

        def third():
            t0 = time.monotonic()
            try:
                c = connect(proxy.port, autocommit=True, read_timeout=30)
                result["id"] = scalar(c, "SELECT CONNECTION_ID()")
                c.close()
            except Exception as e:  # noqa: BLE001
                result["error"] = e
            result["elapsed"] = time.monotonic() - t0

        t = threading.Thread(target=third, daemon=True)
        t.start()
        t.join(1.5)
        self.assertTrue(t.is_alive(), "the third client did not wait: %r" % result)
        self.assertEqual(len(self.upstream_ids()), 2, "more upstream connections than pool_size")
        released = time.monotonic()
        a.close()
        t.join(10)
        self.assertFalse(t.is_alive(), "the third client still waits after a connection was freed")
        self.assertNotIn("error", result)
        self.assertLess(time.monotonic() - released, 3.0)
        self.assertEqual(result["id"], a_id, "the waiter did not get the freed connection")
        self.assertEqual(scalar(b, "SELECT 1"), 1)
        self.assertLessEqual(len(self.upstream_ids()), 2)

    def test_pool_size_under_concurrency(self):
        proxy = self.proxy_with("--pool-size", "3", "--pool-wait-timeout", "20s")
        peak = [0]
        errors = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                peak[0] = max(peak[0], len(self.upstream_ids()))
                time.sleep(0.05)

        def worker():
            try:
                for _ in range(5):
                    c = connect(proxy.port, autocommit=True, read_timeout=30)
                    scalar(c, "SELECT SLEEP(0.1)")
                    c.close()
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        s = threading.Thread(target=sampler, daemon=True)
        s.start()
        workers = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        stop.set()
        s.join(5)
        self.assertEqual(errors, [])
        self.assertLessEqual(peak[0], 3, "the user had %d upstream connections with pool_size 3"
                             % peak[0])
        self.assertGreater(peak[0], 0)

    def test_wait_timeout_gives_1040_with_a_clear_message(self):
        proxy = self.proxy_with("--pool-size", "1", "--pool-wait-timeout", "1s")
        holder = self.client(proxy)
        self.assertEqual(scalar(holder, "SELECT 1"), 1)
        t0 = time.monotonic()
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            connect(proxy.port, read_timeout=30)
        elapsed = time.monotonic() - t0
        code, msg = cm.exception.args[0], str(cm.exception.args[1])
        self.assertEqual(code, ER_CON_COUNT_ERROR, msg)
        self.assertGreaterEqual(elapsed, 0.9, "gave up before pool_wait_timeout")
        self.assertLess(elapsed, 4.0, "waited far longer than pool_wait_timeout")
        self.assertIn("in use", msg)
        # libmariadb clients get the same error and message.
        p = harness.mariadb_cli("SELECT 1", port=proxy.port)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("ERROR 1040", p.stderr)
        self.assertIn("in use", p.stderr)
        # The holder is unaffected and the slot is usable once it leaves.
        self.assertEqual(scalar(holder, "SELECT 2"), 2)
        holder.close()
        c = self.client(proxy)
        self.assertEqual(scalar(c, "SELECT 3"), 3)
        self.assertEqual(len(self.upstream_ids()), 1)


class IdleConnections(PoolTestCase):
    def open_and_close(self, proxy, n):
        conns = [connect(proxy.port, autocommit=True) for _ in range(n)]
        ids = {scalar(c, "SELECT CONNECTION_ID()") for c in conns}
        for c in conns:
            c.close()
        self.release_then_settle()
        return ids

    def test_idle_timeout_closes_idle_connections(self):
        proxy = self.proxy_with("--pool-idle-timeout", "1s")
        ids = self.open_and_close(proxy, 3)
        self.assertEqual(len(ids), 3)
        self.assertEqual(set(self.upstream_ids()), ids, "the idle connections were not kept")
        t0 = time.monotonic()
        n = self.wait_upstream_count(0, timeout=8.0)
        self.assertEqual(n, 0, "%d idle connections still open %.1fs after a 1s idle timeout"
                         % (n, time.monotonic() - t0))
        # The proxy logs in afresh afterwards.
        c = self.client(proxy)
        self.assertNotIn(scalar(c, "SELECT CONNECTION_ID()"), ids)

    def test_default_idle_timeout_keeps_connections(self):
        proxy = self.proxy_with()  # 5 minutes
        ids = self.open_and_close(proxy, 3)
        time.sleep(2.5)
        self.assertEqual(set(self.upstream_ids()), ids)

    def test_min_idle_keeps_connections_warm(self):
        proxy = self.proxy_with("--pool-min-idle", "2", "--pool-idle-timeout", "1s")
        ids = self.open_and_close(proxy, 4)
        self.assertEqual(len(ids), 4)
        # Beyond min_idle, idle connections time out; two stay.
        n = self.wait_upstream_count(2, timeout=8.0)
        self.assertEqual(n, 2, "with pool_min_idle 2, %d idle connections are open" % n)
        time.sleep(2.5)  # well past the idle timeout: still two
        warm = set(self.upstream_ids())
        self.assertEqual(len(warm), 2, "min idle connections were not kept: %r" % warm)
        c = self.client(proxy)
        self.assertIn(scalar(c, "SELECT CONNECTION_ID()"), warm,
                      "a new client did not get a warm connection")

    def test_min_idle_refills_after_connections_are_lost(self):
        proxy = self.proxy_with("--pool-min-idle", "2", "--pool-idle-timeout", "1s")
        self.open_and_close(proxy, 1)
        n = self.wait_upstream_count(2, timeout=8.0)
        self.assertEqual(n, 2, "the pool did not warm up to pool_min_idle (%d open)" % n)
        before = set(self.upstream_ids())
        for cid in before:
            self.fixture.root_sql("KILL CONNECTION %d" % cid)
        deadline = time.monotonic() + 8.0
        now = set()
        while time.monotonic() < deadline:
            now = set(self.upstream_ids())
            if len(now) == 2 and not now & before:
                break
            time.sleep(0.1)
        self.assertEqual(len(now), 2, "not refilled to pool_min_idle: %r" % now)
        self.assertFalse(now & before)
        c = self.client(proxy)
        self.assertIn(scalar(c, "SELECT CONNECTION_ID()"), now)

    def test_max_lifetime_retires_old_connections(self):
        proxy = self.proxy_with("--pool-max-lifetime", "2s")
        (first,) = self.open_and_close(proxy, 1)
        c = connect(proxy.port, autocommit=True)
        self.assertEqual(scalar(c, "SELECT CONNECTION_ID()"), first)
        c.close()
        time.sleep(3.0)
        c = self.client(proxy)
        self.assertNotEqual(scalar(c, "SELECT CONNECTION_ID()"), first,
                            "a connection older than pool_max_lifetime was reused")


if __name__ == "__main__":
    harness.main()
