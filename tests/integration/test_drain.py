"""Drain on SIGTERM: credproxy stops accepting at once (TCP refused, unix socket gone), lets every
command in flight and every open transaction finish, closes each client at its first idle moment,
and exits 0; shutdown_timeout cuts what is still open with error 1053; a second SIGTERM (or a
SIGINT) stops at once. Real binary, real MariaDB, real clients (PyMySQL)."""

import errno
import os
import select
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pymysql

from harness import ProxyTestCase, connect, free_port, main, scalar, unique_name

ER_SERVER_SHUTDOWN = 1053


def refused(proxy):
    """True when neither the TCP port nor the unix socket takes a new client."""
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=1):
            return False
    except ConnectionRefusedError:
        pass
    if proxy.socket:
        if os.path.exists(proxy.socket):
            return False
    return True


def readyz(port):
    """(status, body) of the admin endpoint's /readyz."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def closed_by_server(conn, timeout):
    """Waits until the server side of a PyMySQL connection is closed (EOF); True if it was."""
    sock = conn._sock
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([sock], [], [], 0.1)
        if r:
            try:
                return sock.recv(1, socket.MSG_PEEK) == b""
            except ConnectionResetError:
                return True
    return False


class Drain(ProxyTestCase):
    def make_table(self):
        secret = self.fixture.secret()
        table = unique_name("drain")
        direct = self.fixture.direct(secret, autocommit=True)
        with direct.cursor() as cur:
            cur.execute("CREATE TABLE %s (client INT, step INT) ENGINE=InnoDB" % table)
        return direct, table

    def wait_drain_line(self, proxy):
        self.assertTrue(proxy.wait_log("draining: stopped accepting", 5),
                        "no log line for the start of the drain")

    def test_sixteen_clients_finish_then_exit(self):
        """16 clients mid-transaction and mid-query (TCP and unix socket) when SIGTERM arrives:
        every transaction commits, every query returns its whole result, new clients are
        refused from the first moment, and the process exits 0 well before shutdown_timeout."""
        timeout_s = 20
        proxy = self.start_proxy("--workers", "2", "--shutdown-timeout", "%ds" % timeout_s,
                                 socket=True)
        direct, table = self.make_table()
        n_tx, n_query = 8, 8
        in_position = threading.Semaphore(0)
        results = {}

        def endpoint(i):
            return {"socket_path": proxy.socket} if i % 2 else {"port": proxy.port}

        def tx_client(i):
            try:
                conn = connect(**endpoint(i))
                with conn.cursor() as cur:
                    cur.execute("BEGIN")
                    cur.execute("INSERT INTO " + table + " VALUES (%s, 1)", (i,))
                    in_position.release()
                    time.sleep(1.5)  # SIGTERM arrives in here
                    cur.execute("INSERT INTO " + table + " VALUES (%s, 2)", (i,))
                    cur.execute("COMMIT")
                results[i] = ("ok", closed_by_server(conn, 5))
            except Exception as e:  # noqa: BLE001 - any failure is the test's finding
                results[i] = ("error", repr(e))
                in_position.release()

        def query_client(i):
            try:
                conn = connect(**endpoint(i))
                self.assertEqual(scalar(conn, "SELECT 1"), 1)
                with conn.cursor() as cur:
                    in_position.release()
                    cur.execute("SELECT SLEEP(1.5), REPEAT('x', 200000), %s", (i,))
                    row = cur.fetchone()
                good = row is not None and row[0] == 0 and row[1] == "x" * 200000 and row[2] == i
                results[i] = ("ok" if good else "bad result", closed_by_server(conn, 5))
            except Exception as e:  # noqa: BLE001
                results[i] = ("error", repr(e))
                in_position.release()

        threads = [threading.Thread(target=tx_client, args=(i,)) for i in range(n_tx)]
        threads += [threading.Thread(target=query_client, args=(n_tx + i,))
                    for i in range(n_query)]
        for t in threads:
            t.start()
        for _ in threads:
            self.assertTrue(in_position.acquire(timeout=20), "clients did not get in position")
        time.sleep(0.3)  # the queries are on the server now
        t0 = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        self.wait_drain_line(proxy)
        self.assertTrue(refused(proxy), "a new client was let in after the drain began")
        self.assertIn("16 clients open, 8 in a transaction", proxy.log())
        # Refused all along, until the process is gone.
        while proxy.proc.poll() is None:
            self.assertTrue(refused(proxy), "a new client was let in during the drain")
            time.sleep(0.1)
            self.assertLess(time.monotonic() - t0, timeout_s, "still running at shutdown_timeout")
        elapsed = time.monotonic() - t0
        for t in threads:
            t.join(10)
        self.assertEqual(proxy.proc.returncode, 0)
        self.assertLess(elapsed, timeout_s / 2, "the drain took %.1f s" % elapsed)
        self.assertEqual(len(results), 16, results)
        for i, (status, closed) in sorted(results.items()):
            self.assertEqual(status, "ok", "client %d: %s" % (i, closed))
            self.assertTrue(closed, "client %d was not closed by credproxy after its work" % i)
        rows = scalar(direct, "SELECT COUNT(*) FROM " + table)
        self.assertEqual(rows, 2 * n_tx, "every transaction must commit whole")
        log = proxy.log()
        self.assertIn("drain done", log)
        self.assertIn("0 cut at shutdown_timeout", log)
        self.assertFalse(os.path.exists(proxy.socket), "the unix socket file was left behind")
        with direct.cursor() as cur:
            cur.execute("DROP TABLE " + table)

    def test_transaction_past_timeout_gets_clear_error(self):
        """A client still in a transaction at shutdown_timeout is told 1053 'credproxy is
        shutting down' (as the answer to its next statement), and the process exits 0."""
        admin = free_port()
        proxy = self.start_proxy("--shutdown-timeout", "2s", "--admin-listen", "127.0.0.1:%d" % admin)
        self.assertEqual(readyz(admin)[0], 200)
        direct, table = self.make_table()
        stuck = connect(proxy.port)
        idle = connect(proxy.port)
        self.assertEqual(scalar(idle, "SELECT 1"), 1)
        with stuck.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("INSERT INTO " + table + " VALUES (1, 1)")
        t0 = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        self.wait_drain_line(proxy)
        self.assertTrue(closed_by_server(idle, 2), "an idle client was not closed at once")
        code, body = readyz(admin)
        self.assertEqual((code, body.strip()), (503, "draining"), "/readyz during the drain")
        self.assertIsNone(proxy.proc.poll(), "exited with a transaction open before the timeout")
        proxy.proc.wait(10)
        elapsed = time.monotonic() - t0
        self.assertEqual(proxy.proc.returncode, 0)
        self.assertGreaterEqual(elapsed, 1.9)
        self.assertLess(elapsed, 5.0)
        with self.assertRaises(pymysql.err.MySQLError) as cm:
            with stuck.cursor() as cur:
                cur.execute("COMMIT")
        self.assertEqual(cm.exception.args[0], ER_SERVER_SHUTDOWN, repr(cm.exception))
        self.assertIn("credproxy is shutting down", cm.exception.args[1])
        self.assertEqual(scalar(direct, "SELECT COUNT(*) FROM " + table), 0,
                         "the cut transaction must roll back")
        log = proxy.log()
        self.assertIn("2 clients open, 1 in a transaction", log)
        self.assertIn("1 clients closed when idle", log)
        self.assertIn("1 cut at shutdown_timeout", log)
        with direct.cursor() as cur:
            cur.execute("DROP TABLE " + table)

    def stop_at_once(self, second):
        proxy = self.start_proxy("--shutdown-timeout", "30s", socket=True)
        conn = connect(proxy.port)
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT 1")
        proxy.proc.send_signal(signal.SIGTERM)
        self.wait_drain_line(proxy)
        time.sleep(0.3)
        self.assertIsNone(proxy.proc.poll(), "the drain did not wait for the open transaction")
        t0 = time.monotonic()
        proxy.proc.send_signal(second)
        proxy.proc.wait(10)
        # shutdown_timeout is 30 s: 5 s leaves room for a loaded machine and still tells
        self.assertLess(time.monotonic() - t0, 5.0, "the second signal did not stop it at once")
        self.assertEqual(proxy.proc.returncode, 0)
        self.assertIn("stopping at once", proxy.log())
        self.assertFalse(os.path.exists(proxy.socket))

    def test_second_sigterm_stops_at_once(self):
        self.stop_at_once(signal.SIGTERM)

    def test_sigint_during_drain_stops_at_once(self):
        self.stop_at_once(signal.SIGINT)

    def test_sigint_stops_at_once(self):
        """SIGINT (Ctrl-C) never drains: an open transaction does not hold it."""
        proxy = self.start_proxy("--shutdown-timeout", "30s")
        conn = connect(proxy.port)
        with conn.cursor() as cur:
            cur.execute("BEGIN")
        t0 = time.monotonic()
        proxy.proc.send_signal(signal.SIGINT)
        proxy.proc.wait(10)
        self.assertLess(time.monotonic() - t0, 5.0)  # shutdown_timeout is 30 s
        self.assertEqual(proxy.proc.returncode, 0)
        self.assertNotIn("draining", proxy.log())


if __name__ == "__main__":
    main()
