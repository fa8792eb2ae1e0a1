"""KILL through credproxy: the id a client got in the greeting names that client's session, and
nothing else a client names can interrupt another client."""

import select
import threading
import time

import pymysql

from harness import ProxyTestCase, connect, main, scalar

ER_QUERY_INTERRUPTED = 1317
ER_NO_SUCH_THREAD = 1094
ER_NOT_SUPPORTED_YET = 1235


class Sleeper:
    """A client running SELECT SLEEP(n) in a thread; result is the value or the error code."""

    def __init__(self, conn, seconds=5):
        self.conn = conn
        self.result = None
        self.thread = threading.Thread(target=self.run, args=(seconds,))
        self.thread.start()
        time.sleep(0.5)  # let the statement start

    def run(self, seconds):
        try:
            self.result = scalar(self.conn, "SELECT SLEEP(%d)" % seconds)
        except pymysql.err.MySQLError as e:
            self.result = e.args[0]

    def wait(self):
        self.thread.join(15)
        return self.result


class Kill(ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.proxy = self.start_proxy("--workers", "2")

    def client(self):
        return connect(self.proxy.port)

    def test_kill_query_with_the_greeting_id(self):
        a = self.client()
        sleeper = Sleeper(a)
        b = self.client()
        scalar(b, "KILL QUERY %d" % a.thread_id())
        # SLEEP returns 1 when interrupted, or the statement fails with 1317.
        self.assertIn(sleeper.wait(), (1, ER_QUERY_INTERRUPTED))
        self.assertEqual(scalar(a, "SELECT 7"), 7, "KILL QUERY must leave the connection")

    def test_a_server_thread_id_reaches_nobody(self):
        victim = self.client()
        sleeper = Sleeper(victim, 3)
        b = self.client()
        server_id = scalar(b, "SELECT CONNECTION_ID()")
        self.assertMysqlError(ER_NO_SUCH_THREAD, scalar, b, "KILL QUERY %d" % server_id)
        # Every server thread id of the sessions: none of them may be killable through credproxy.
        for tid in range(1, server_id + 64):
            try:
                scalar(b, "KILL QUERY %d" % tid)
                self.fail("KILL QUERY %d (a server thread id) was accepted" % tid)
            except pymysql.err.MySQLError as e:
                self.assertEqual(e.args[0], ER_NO_SUCH_THREAD)
        self.assertEqual(sleeper.wait(), 0, "another client's query was interrupted")

    def test_kill_connection_is_not_undone_by_a_reconnect(self):
        a = self.client()
        self.assertEqual(scalar(a, "SELECT 1"), 1)
        b = self.client()
        scalar(b, "KILL CONNECTION %d" % a.thread_id())
        time.sleep(0.3)
        with self.assertRaises(pymysql.err.OperationalError):
            scalar(a, "SELECT 2")

    def test_com_process_kill(self):
        a = self.client()
        sleeper = Sleeper(a)
        b = self.client()
        b.kill(a.thread_id())  # COM_PROCESS_KILL: the whole connection
        self.assertIsNot(sleeper.wait(), 0)
        with self.assertRaises(pymysql.err.MySQLError):
            scalar(a, "SELECT 3")
        self.assertEqual(scalar(b, "SELECT 4"), 4)

    def test_unknown_and_unsupported(self):
        b = self.client()
        self.assertMysqlError(ER_NO_SUCH_THREAD, scalar, b, "KILL 12345")
        self.assertMysqlError(ER_NOT_SUPPORTED_YET, scalar, b, "KILL USER anyone")
        self.assertMysqlError(ER_NOT_SUPPORTED_YET, scalar, b, "kill query id 5")
        self.assertEqual(scalar(b, "SELECT 5"), 5)


class KillMultiplexed(ProxyTestCase):
    def test_kill_connection_of_a_released_session(self):
        proxy = self.start_proxy("--pool-release-idle-after", "100ms")
        a = connect(proxy.port)
        self.assertEqual(scalar(a, "SELECT 1"), 1)
        time.sleep(0.5)  # a's connection went back to the pool
        b = connect(proxy.port)
        scalar(b, "KILL %d" % a.thread_id())
        time.sleep(0.3)
        # Closed at once, as the server closes a killed idle connection: a lost connection.
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            scalar(a, "SELECT 2")
        self.assertIn(cm.exception.args[0], (2006, 2013))

    def test_released_session_is_gone_before_the_ok(self):
        """As the server does it, the killed client's connection has ended (EOF waiting on
        its socket) by the time the KILL's OK reaches the killer (MariaDB directly: never
        late in 100 rounds). credproxy used to close a released session a loop turn after
        sending the OK. Found running node mysql2's test-pool-disconnect multiplexed."""
        proxy = self.start_proxy("--workers", "1", "--pool-release-idle-after", "100ms")
        late = 0
        for round in range(30):
            a = connect(proxy.port)
            self.assertEqual(scalar(a, "SELECT 1"), 1)
            b = connect(proxy.port)
            self.assertEqual(scalar(b, "SELECT 1"), 1)
            time.sleep(0.3)  # both connections went back to the pool
            scalar(b, "KILL %d" % a.thread_id())
            readable, _, _ = select.select([a._sock], [], [], 0)
            if not readable:
                late += 1
            a._sock.settimeout(2)
            self.assertEqual(a._sock.recv(64), b"", "round %d: the killed client got data" % round)
            a.close()
            b.close()
        self.assertEqual(late, 0, "%d of 30 killed clients still open when the OK came" % late)

if __name__ == "__main__":
    main()
