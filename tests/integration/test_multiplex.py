#!/usr/bin/python3
"""Multiplexing (pool_release_idle_after): many clients share few upstream connections.

An idle client's connection goes back to the pool; its next command runs on whichever
connection the pool lends, with its schema and session variables replayed. Sessions holding
state that cannot be replayed (a transaction, user variables) keep their connection.
"""

import itertools
import threading
import time

from harness import scalar
from test_pool import PoolTestCase


class Multiplexing(PoolTestCase):
    marks = itertools.count()

    def proxy(self, pool_size):
        return self.proxy_with("--pool-size", str(pool_size), "--pool-release-idle-after", "50ms")

    def test_idle_clients_share_connections_and_keep_their_state(self):
        proxy = self.proxy(2)
        clients = []
        for i in range(12):
            c = self.client(proxy)
            with c.cursor() as cur:
                cur.execute("SET SESSION time_zone = '+%02d:00'" % i)
                cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
            clients.append(c)
            time.sleep(0.08)  # idle past 50 ms: the connection goes back
        time.sleep(0.3)
        self.assertLessEqual(len(self.upstream_ids()), 2, "idle clients kept connections")
        for i, c in enumerate(clients):
            self.assertEqual(scalar(c, "SELECT @@SESSION.time_zone"), "+%02d:00" % i)
            self.assertEqual(scalar(c, "SELECT @@SESSION.sql_mode"), "ANSI_QUOTES")
            self.assertEqual(scalar(c, "SELECT v FROM %s WHERE id = 2" % self.table), 20)

    def test_logins_need_no_connection(self):
        # 40 clients log in through a pool of 2 without waiting for each other (pool_wait_timeout
        # is 1 s: had each login held a connection, most would time out).
        proxy = self.proxy_with("--pool-size", "2", "--pool-release-idle-after", "50ms",
                                "--pool-wait-timeout", "1s")
        start = time.monotonic()
        clients = [self.client(proxy) for _ in range(40)]
        self.assertLess(time.monotonic() - start, 8)
        time.sleep(0.3)
        self.assertLessEqual(len(self.upstream_ids()), 2)
        for c in clients[::8]:
            self.assertEqual(scalar(c, "SELECT 1"), 1)

    def on_thread(self, c):
        """The server thread c's statement runs on, read without CONNECTION_ID() (which pins)."""
        mark = "on-thread-%d" % next(self.marks)
        return scalar(c, "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%%%s%%'"
                      % mark)  # the statement finds itself, by the mark in its own text

    def test_pinned_sessions_keep_their_connection(self):
        proxy = self.proxy(4)
        in_trans = self.client(proxy)
        with in_trans.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("UPDATE %s SET v = v + 1 WHERE id = 1" % self.table)
        user_var = self.client(proxy)
        with user_var.cursor() as cur:
            cur.execute("SET @kept = 'yes'")
        first = {c: self.on_thread(c) for c in (in_trans, user_var)}
        time.sleep(0.4)  # far past the release delay
        for c, cid in first.items():
            self.assertEqual(self.on_thread(c), cid)
        self.assertEqual(scalar(user_var, "SELECT @kept"), "yes")
        self.assertEqual(scalar(in_trans, "SELECT v FROM %s WHERE id = 1" % self.table), 11)
        with in_trans.cursor() as cur:
            cur.execute("ROLLBACK")

    def test_connection_id_stays_the_sessions_own(self):
        """CONNECTION_ID() pins: the server gives a session one id for its whole life."""
        proxy = self.proxy(2)
        a = self.client(proxy)
        cid = scalar(a, "SELECT CONNECTION_ID()")
        time.sleep(0.3)  # past the release delay: an unpinned session would be released now
        busy = self.client(proxy)
        with busy.cursor() as cur:  # holds whichever connection the pool lends next
            cur.execute("BEGIN")
            cur.execute("SELECT 1")
        time.sleep(0.3)
        self.assertEqual(scalar(a, "SELECT CONNECTION_ID()"), cid)
        self.assertEqual(self.on_thread(a), cid)
        self.assertNotEqual(self.on_thread(busy), cid)
        with busy.cursor() as cur:
            cur.execute("ROLLBACK")
        # Kept, not unmovable: a lost connection is still replaced without an error.
        self.fixture.root_sql("KILL %d" % cid)
        time.sleep(0.3)
        self.assertNotEqual(scalar(a, "SELECT CONNECTION_ID()"), cid)

    def test_concurrent_clients_over_one_connection(self):
        proxy = self.proxy(1)
        errors = []

        def worker(n):
            try:
                c = self.client(proxy)
                with c.cursor() as cur:
                    cur.execute("SET SESSION time_zone = '+%02d:00'" % n)
                for _ in range(20):
                    time.sleep(0.06)
                    if scalar(c, "SELECT @@SESSION.time_zone") != "+%02d:00" % n:
                        errors.append("client %d lost its time_zone" % n)
            except Exception as e:  # noqa: BLE001 - any failure is the test's result
                errors.append("client %d: %r" % (n, e))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertLessEqual(len(self.upstream_ids()), 1)


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
