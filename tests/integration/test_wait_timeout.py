#!/usr/bin/python3
"""A session's own wait_timeout: a client that set it and stays idle that long loses its
connection, as it would straight to the server, rather than being moved to a new one.

Found by PyMySQL 1.0.2's own test suite (test_connection.py, test_connection_gone_away): after
SET wait_timeout=1 and two idle seconds the next query must fail with 2006/2013. Through
credproxy the server's end closed as asked, but credproxy took it for a lost connection and moved
the session, so the query succeeded. With multiplexing the session had no upstream connection to
time out at all.

A client that waits without sending anything sees its connection end at the timeout, as the
server would close it, multiplexed too: found by node mysql2's own suite
(test/integration/test-server-close.test.mts waits for the close after SET wait_timeout=1;
multiplexed it waited for ever, credproxy closing the session only at its next command).

A session whose connection is lost for another reason (here root's KILL) while it is well within
its wait_timeout still moves, as before.
"""

import time

import pymysql

from harness import CR_SERVER_LOST, ProxyTestCase, connect, main, scalar

CR_SERVER_GONE = 2006


class OwnWaitTimeout(ProxyTestCase):
    def assertConnectionGone(self, conn, what):
        with self.assertRaises(pymysql.err.OperationalError, msg=what) as cm:
            scalar(conn, "SELECT 1+1")
        self.assertIn(cm.exception.args[0], (CR_SERVER_GONE, CR_SERVER_LOST),
                      "%s: %r" % (what, cm.exception))

    def test_direct_server_closes_an_idle_session_past_its_wait_timeout(self):
        """What the proxied tests below hold credproxy to."""
        conn = self.fixture.direct(self.fixture.secret())
        scalar(conn, "SET SESSION wait_timeout = 1")
        time.sleep(2.2)
        self.assertConnectionGone(conn, "directly")

    def test_idle_past_own_wait_timeout_closes(self):
        proxy = self.start_proxy("--workers", "1")
        conn = connect(proxy.port, database="app")
        scalar(conn, "SET SESSION wait_timeout = 1")
        time.sleep(2.2)
        self.assertConnectionGone(conn, "through credproxy")
        self.assertTrue(proxy.wait_log("own wait_timeout"), "no log line says why")
        self.assertNotIn("session moved to a new upstream connection", proxy.log())

    def test_multiplexed_idle_past_own_wait_timeout_closes(self):
        proxy = self.start_proxy("--workers", "1", "--pool-release-idle-after", "100ms")
        conn = connect(proxy.port, database="app")
        scalar(conn, "SET SESSION wait_timeout = 1")
        time.sleep(2.2)  # released after 100 ms: no upstream connection times out
        self.assertConnectionGone(conn, "through credproxy, multiplexed")

    def assertClosedWithoutACommand(self, conn, what):
        """The client's socket ends (EOF, nothing sent) within a few seconds of going idle."""
        sock = conn._sock
        sock.settimeout(4.0)
        start = time.monotonic()
        try:
            data = sock.recv(64)
        except TimeoutError:
            self.fail("%s: still open %.1f s after SET wait_timeout = 1"
                      % (what, time.monotonic() - start))
        except ConnectionResetError:
            data = b""
        self.assertEqual(data, b"", "%s: the server sends nothing (MariaDB just closes)" % what)
        self.assertGreater(time.monotonic() - start, 0.5, "%s: closed too early" % what)

    def test_direct_idle_client_sees_the_close(self):
        conn = self.fixture.direct(self.fixture.secret())
        scalar(conn, "SET SESSION wait_timeout = 1")
        self.assertClosedWithoutACommand(conn, "directly")

    def test_idle_client_sees_the_close(self):
        proxy = self.start_proxy("--workers", "1")
        conn = connect(proxy.port, database="app")
        scalar(conn, "SET SESSION wait_timeout = 1")
        self.assertClosedWithoutACommand(conn, "through credproxy")

    def test_multiplexed_idle_client_sees_the_close(self):
        proxy = self.start_proxy("--workers", "1", "--pool-release-idle-after", "100ms")
        conn = connect(proxy.port, database="app")
        scalar(conn, "SET SESSION wait_timeout = 1")
        self.assertClosedWithoutACommand(conn, "through credproxy, multiplexed")
        self.assertTrue(proxy.wait_log("own wait_timeout"), "no log line says why")

    def test_within_own_wait_timeout_still_moves(self):
        proxy = self.start_proxy("--workers", "1", "--pool-release-idle-after", "100ms")
        conn = connect(proxy.port, database="app")
        scalar(conn, "SET SESSION wait_timeout = 30")
        time.sleep(0.5)  # released and moved back: state replayed
        self.assertEqual(scalar(conn, "SELECT @@session.wait_timeout"), 30)
        time.sleep(0.5)
        self.assertEqual(scalar(conn, "SELECT 1+1"), 2)

    def test_lost_connection_within_own_wait_timeout_still_moves(self):
        proxy = self.start_proxy("--workers", "1")
        conn = connect(proxy.port, database="app")
        scalar(conn, "SET SESSION wait_timeout = 30")
        thread = scalar(conn, "SELECT CONNECTION_ID()")
        self.fixture.root_sql("KILL CONNECTION %d" % thread)
        self.assertTrue(proxy.wait_log("upstream connection lost while idle"))
        self.assertEqual(scalar(conn, "SELECT @@session.wait_timeout"), 30)
        self.assertNotEqual(scalar(conn, "SELECT CONNECTION_ID()"), thread)


if __name__ == "__main__":
    main()
