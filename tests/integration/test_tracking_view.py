"""Clients see the server's replies as their own session-tracking settings make them, not as
credproxy's wider tracking does: the same OK packets, status flags and session_track_* values
as a direct connection, with and without CLIENT_SESSION_TRACK."""

import pymysql
from pymysql.constants import CLIENT

from harness import ProxyTestCase, connect, main

STATEMENTS = [
    "SELECT 1",
    "SET @a = 1",
    "SELECT @b := 2",
    "SET sql_mode = ''",
    "SET time_zone = '+01:00'",
    "SET autocommit = 1",
    "USE app",
    "CREATE TEMPORARY TABLE tv_t (a INT)",
    "INSERT INTO tv_t VALUES (1), (2)",
    "SELECT a FROM tv_t",
    "SELECT @@session_track_system_variables, @@session_track_state_change, "
    "@@session_track_schema, @@session_track_transaction_info",
    "SET SESSION session_track_state_change = ON",
    "SET @c = 3",
    "SELECT @@session_track_state_change",
]


class Recorder:
    """Wraps a PyMySQL connection's packet reader to keep the last OK/EOF packets' bytes."""

    def __init__(self, conn):
        self.conn = conn
        self.packets = []
        original = conn._read_packet

        def read(*args, **kw):
            pkt = original(*args, **kw)
            data = pkt.get_all_data()
            if data[:1] in (b"\x00", b"\xfe") and len(data) < 0xffffff:
                self.packets.append(data)
            return pkt

        conn._read_packet = read

    def run(self, sql):
        self.packets.clear()
        with self.conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
        # The terminator packets (OK/EOF): their status flags and state blocks.
        return rows, [p for p in self.packets if p[:1] == b"\x00" or len(p) < 9 or p[:1] == b"\xfe"]


class TrackingView(ProxyTestCase):
    def sequence(self, port, flags, direct):
        if direct:
            c = self.fixture.direct(self.fixture.secret(), client_flag=flags,
                                    autocommit=True)
        else:
            c = connect(port, client_flag=flags, database="app", autocommit=True)
        rec = Recorder(c)
        out = []
        for sql in STATEMENTS:
            rows, pkts = rec.run(sql)
            # Column/row values stay; OK/EOF bytes compared whole (no thread ids in them).
            out.append((sql, rows if "session_track" in sql or "@" in sql else None, pkts,
                        c.server_status))
        c.close()
        return out

    def compare(self, flags):
        proxy = self.start_proxy()
        want = self.sequence(None, flags, direct=True)
        got = self.sequence(proxy.port, flags, direct=False)
        for (sql, wr, wp, ws), (_, gr, gp, gs) in zip(want, got):
            with self.subTest(sql=sql):
                self.assertEqual(gs, ws, "server status after %r" % sql)
                self.assertEqual(gr, wr, "values after %r" % sql)
                self.assertEqual(gp, wp, "OK/EOF packets of %r" % sql)

    def test_with_session_track(self):
        self.compare(CLIENT.SESSION_TRACK | CLIENT.MULTI_STATEMENTS)

    def test_without_session_track(self):
        self.compare(CLIENT.MULTI_STATEMENTS)


if __name__ == "__main__":
    main()
