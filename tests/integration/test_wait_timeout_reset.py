#!/usr/bin/python3
"""How a session idle past its own wait_timeout is closed: as the server closes it.

MariaDB ends such a connection with SO_LINGER 0, a TCP reset: the client's next read gets
ECONNRESET, and its next write fails (PyMySQL: 2006 "server has gone away"). Through credproxy
the client's connection ended with a FIN instead (a clean EOF; PyMySQL: 2013 "lost
connection"). Found by the Go MySQL driver's own suite (conncheck_test.go): its liveness check
logs "connection reset by peer" directly and "EOF" through credproxy.

credproxy now mirrors what the upstream did: when the server reset the connection it closed at
the session's own wait_timeout, the client's is reset too. A KILL CONNECTION (which the server
ends with a FIN) still ends with a FIN.
"""

import socket
import time

import pymysql

from harness import ProxyTestCase, connect, main, scalar

CR_SERVER_GONE = 2006


def end_of(conn):
    """What the client's socket reads once the far end is gone: 'reset' or 'eof'."""
    sock = conn._sock
    sock.settimeout(5)
    try:
        data = sock.recv(64)
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        return "still open"
    return "eof" if data == b"" else "data %r" % data


class WaitTimeoutReset(ProxyTestCase):
    def idle_past_wait_timeout(self, conn):
        scalar(conn, "SET SESSION wait_timeout = 1")
        time.sleep(2.2)

    def test_direct_server_resets(self):
        """What the proxied tests hold credproxy to (MariaDB's behaviour)."""
        conn = self.fixture.direct(self.fixture.secret())
        self.idle_past_wait_timeout(conn)
        self.assertEqual(end_of(conn), "reset")

    def check_proxied(self, *args):
        proxy = self.start_proxy("--workers", "1", *args)
        conn = connect(proxy.port, database="app")
        self.idle_past_wait_timeout(conn)
        self.assertEqual(end_of(conn), "reset", "through credproxy %s" % " ".join(args))
        self.assertTrue(proxy.wait_log("own wait_timeout"), "no log line says why")

    def test_proxied_tls_upstream_resets(self):
        self.check_proxied("--upstream-tls", "required")

    def test_proxied_plain_upstream_resets(self):
        self.check_proxied("--upstream-tls", "disabled")

    def test_next_query_error_as_directly(self):
        """PyMySQL's error for the next query is the one it gets directly (2006)."""
        codes = []
        direct = self.fixture.direct(self.fixture.secret())
        proxy = self.start_proxy("--workers", "1")
        proxied = connect(proxy.port, database="app")
        for conn in (direct, proxied):
            scalar(conn, "SET SESSION wait_timeout = 1")
        time.sleep(2.2)
        for conn in (direct, proxied):
            with self.assertRaises(pymysql.err.OperationalError) as cm:
                scalar(conn, "SELECT 1")
            codes.append(cm.exception.args[0])
        self.assertEqual(codes, [CR_SERVER_GONE, CR_SERVER_GONE], "direct, proxied")

    def test_kill_connection_still_ends_with_eof(self):
        proxy = self.start_proxy("--workers", "1")
        victim = connect(proxy.port, database="app")
        killer = connect(proxy.port, database="app")
        scalar(killer, "KILL CONNECTION %d" % victim.thread_id())
        self.assertEqual(end_of(victim), "eof")


if __name__ == "__main__":
    main()
