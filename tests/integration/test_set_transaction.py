#!/usr/bin/python3
"""SET TRANSACTION (no scope) sets the next transaction's characteristics: the session must not
move to another connection before that transaction, or it runs without them.

Found by the Go MySQL driver's own suite (TestContextBeginIsolationLevel): BeginTx with an
isolation level or read-only sends "SET TRANSACTION ..." and then "START TRANSACTION" as two
statements. With multiplexing the session was released between them, and START TRANSACTION ran
on a pooled connection at the default level (a READ ONLY transaction took writes). No reply
reports next-transaction characteristics, so credproxy cannot replay them: such a statement now
holds the session on its connection until that transaction is over (seen open, then closed),
and a connection lost meanwhile is not replaced behind the client's back. `SET @@tx_read_only = 1` (and the other
transaction-characteristics variables, with no scope) is the same; SET SESSION TRANSACTION is
session-wide, reported and replayed, and still released.
"""

import time

import pymysql

from harness import ProxyTestCase, connect, main, scalar

ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION = 1792


class NextTransaction(ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.fixture.root_sql("CREATE TABLE IF NOT EXISTS app.next_tx (v INT)")

    def assertReadOnly(self, conn, first, then, what):
        scalar(conn, first)
        time.sleep(0.3)  # well past pool_release_idle_after
        if then:
            scalar(conn, then)
        with self.assertRaises(pymysql.err.OperationalError, msg=what) as cm:
            scalar(conn, "INSERT INTO next_tx VALUES (1)")
        self.assertEqual(cm.exception.args[0], ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION, what)
        scalar(conn, "ROLLBACK")

    def cases(self, conn, where):
        self.assertReadOnly(conn, "SET TRANSACTION READ ONLY", "START TRANSACTION",
                            "SET TRANSACTION then START TRANSACTION, " + where)
        self.assertReadOnly(conn, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
                            None, "SET TRANSACTION then an autocommit INSERT, " + where)
        self.assertReadOnly(conn, "SET @@tx_read_only = 1", "START TRANSACTION",
                            "SET @@tx_read_only then START TRANSACTION, " + where)

    def test_direct(self):
        """What the proxied test holds credproxy to."""
        self.cases(self.fixture.direct(self.fixture.secret()), "directly")

    def test_multiplexed_session_keeps_next_transaction_characteristics(self):
        proxy = self.start_proxy("--workers", "1", "--pool-release-idle-after", "50ms")
        self.cases(connect(proxy.port, database="app"), "multiplexed")

    def test_released_again_once_that_transaction_is_over(self):
        proxy = self.start_proxy("--workers", "1", "--pool-release-idle-after", "50ms")
        conn = connect(proxy.port, database="app")
        scalar(conn, "SET TRANSACTION READ ONLY")
        time.sleep(0.3)
        released = proxy.log().count("connection released")
        scalar(conn, "START TRANSACTION")
        scalar(conn, "SELECT COUNT(*) FROM next_tx")
        scalar(conn, "COMMIT")
        self.assertEqual(proxy.log().count("connection released"), released, "released early")
        time.sleep(0.3)  # the next transaction is over: nothing holds the connection now
        self.assertGreater(proxy.log().count("connection released"), released, proxy.log())
        scalar(conn, "INSERT INTO next_tx VALUES (2)")  # read-write again, on any connection

    def test_lost_connection_is_not_hidden_while_pending(self):
        """Lost with SET TRANSACTION pending, the session cannot move without its
        characteristics: the client loses its connection, as directly."""
        proxy = self.start_proxy("--workers", "1")
        conn = connect(proxy.port, database="app")
        cid = scalar(conn, "SELECT CONNECTION_ID()")
        scalar(conn, "SET TRANSACTION READ ONLY")
        self.fixture.root_sql("KILL %d" % cid)
        time.sleep(0.3)
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            scalar(conn, "INSERT INTO next_tx VALUES (3)")
        self.assertIn(cm.exception.args[0], (2006, 2013))
        self.assertIn("SET TRANSACTION", proxy.log())

    def test_session_scope_still_released(self):
        proxy = self.start_proxy("--workers", "1", "--pool-release-idle-after", "50ms")
        conn = connect(proxy.port, database="app")
        scalar(conn, "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        time.sleep(0.3)
        self.assertEqual(scalar(conn, "SELECT @@session.tx_isolation"), "SERIALIZABLE")
        self.assertTrue(proxy.wait_log("connection released"), "never released")


if __name__ == "__main__":
    main()
