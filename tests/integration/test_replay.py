#!/usr/bin/python3
"""What a transparent reconnect replays: the settings common drivers send at connect.

For each driver, a PyMySQL session sends the statements that driver (or a framework on top of it)
sends when it connects. Root then KILLs every upstream connection of the proxy; the session's next
query runs on a new connection and must see every setting as it was, NULL included (Connector/J's
SET character_set_results = NULL, which MariaDB reports as an empty string and refuses as '').
Every value checked differs from a fresh session's, so a setting the replay dropped shows.

Also: a session whose reply stream credproxy no longer follows (here after COM_TIME, a command the
response tracker does not know) sends 2,000 prepares of 60 KiB; the proxy's resident memory must
not grow by what it would take to keep their texts.
"""

import os
import time

import pymysql
from pymysql.constants import COMMAND

import harness
from test_restart import ReconnectTestCase, quiet_close

# (driver, connect keyword arguments, statements, expressions that must survive)
DRIVERS = [
    ("Connector/J", {"charset": "latin1", "autocommit": False},
     ["SET NAMES utf8mb4",
      "SET character_set_results = NULL",
      "SET autocommit=1",
      "SET sql_mode='STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'",
      "SET net_write_timeout=600",
      "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
      "SET @@session.auto_increment_increment=2",
      "SET SESSION TRANSACTION READ ONLY"],
     ["@@session.character_set_client", "@@session.character_set_connection",
      "@@session.character_set_results IS NULL", "@@session.collation_connection",
      "@@session.autocommit", "@@session.sql_mode", "@@session.net_write_timeout",
      "@@session.tx_isolation", "@@session.auto_increment_increment", "@@session.tx_read_only"]),
    ("PyMySQL, mysqlclient, SQLAlchemy", {"charset": "latin1"},
     ["SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
      "SET AUTOCOMMIT = 0",
      "SET sql_mode='STRICT_TRANS_TABLES'",
      "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"],
     ["@@session.character_set_client", "@@session.character_set_results",
      "@@session.collation_connection", "@@session.autocommit", "@@session.sql_mode",
      "@@session.tx_isolation"]),
    ("Go (DSN parameters)", {"charset": "latin1"},
     ["SET NAMES utf8mb4 COLLATE utf8mb4_general_ci",
      "SET time_zone='+00:00'",
      "SET sql_mode=''"],
     ["@@session.character_set_connection", "@@session.collation_connection",
      "@@session.time_zone", "@@session.sql_mode"]),
    ("Rails (mysql2)", {"charset": "latin1"},
     ["SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci,  @@SESSION.sql_mode = CONCAT(CONCAT("
      "@@sql_mode, ',STRICT_ALL_TABLES'), ',NO_AUTO_VALUE_ON_ZERO'),  "
      "@@SESSION.sql_auto_is_null = 0, @@SESSION.wait_timeout = 2147483",
      "SET SESSION max_statement_time=1.5"],
     ["@@session.character_set_client", "@@session.collation_connection", "@@session.sql_mode",
      "@@session.wait_timeout", "@@session.max_statement_time"]),
    ("Django", {},
     ["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
      "SET sql_mode='STRICT_TRANS_TABLES'",
      "SET innodb_strict_mode=0",
      "SET SQL_AUTO_IS_NULL = 1"],
     ["@@session.tx_isolation", "@@session.sql_mode", "@@session.innodb_strict_mode",
      "@@session.sql_auto_is_null"]),
    ("application settings", {},
     ["SET SESSION group_concat_max_len = 1000000",
      "SET lc_time_names = 'de_DE'",
      "SET time_zone='-07:30'",
      "SET SESSION default_tmp_storage_engine = 'MyISAM'"],
     ["@@session.group_concat_max_len", "@@session.lc_time_names", "@@session.time_zone",
      "@@session.default_tmp_storage_engine"]),
]


def values(conn, exprs):
    with conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID(), " + ", ".join(exprs))
        row = cur.fetchone()
        if not conn.get_autocommit():
            conn.commit()  # no transaction left open across the kill
        return row[0], list(row[1:])


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class Replay(ReconnectTestCase):
    def test_driver_connect_settings_survive_a_reconnect(self):
        sessions = []
        for who, kw, statements, exprs in DRIVERS:
            fresh = self.client(**kw)
            _, defaults = values(fresh, exprs)
            fresh.close()
            c = self.client(**kw)
            with c.cursor() as cur:
                for sql in statements:
                    cur.execute(sql)
            cid, before = values(c, exprs)
            for expr, value, default in zip(exprs, before, defaults):
                self.assertNotEqual(value, default, "%s: %s = %r is a fresh session's value; the "
                                    "test would not see it lost" % (who, expr, value))
            sessions.append((who, c, exprs, cid, before))
        self.kill_upstreams()
        for who, c, exprs, cid, before in sessions:
            with self.subTest(driver=who):
                try:
                    new_cid, after = values(c, exprs)
                except pymysql.err.MySQLError as e:
                    self.fail("%s: the session did not survive the reconnect: %r" % (who, e))
                self.assertNotEqual(new_cid, cid, "%s: no reconnect happened" % who)
                self.assertEqual(dict(zip(exprs, after)), dict(zip(exprs, before)),
                                 "%s: settings not replayed" % who)

    def test_untracked_session_prepares_do_not_grow_memory(self):
        # A sanitizer build keeps freed memory in quarantine (256 MiB by default): turn that off
        # for this proxy so its resident size shows what it holds.
        asan = os.environ.get("ASAN_OPTIONS")
        os.environ["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "quarantine_size_mb=0"
        try:
            self.proxy = self.start_proxy("--workers", "1", secret=self.secret)
        finally:
            if asan is None:
                del os.environ["ASAN_OPTIONS"]
            else:
                os.environ["ASAN_OPTIONS"] = asan
        c = self.client()
        # COM_TIME: the server refuses it, and credproxy's response tracker does not know it,
        # so from here on it relays this session's replies without following them.
        c._execute_command(0x0F, b"")
        with self.assertRaises(pymysql.err.MySQLError):
            c._read_packet()
        pid = self.proxy.proc.pid
        rss_before = vm_rss_kib(pid)
        filler = b"/*" + b"x" * (60 * 1024 - 16) + b"*/"
        start = time.monotonic()
        for i in range(2000):
            c._execute_command(COMMAND.COM_STMT_PREPARE, b"SELECT %d " % i + filler)
            ok = c._read_packet()
            data = ok.get_all_data()
            self.assertEqual(data[0], 0, "prepare %d failed: %r" % (i, data[:80]))
            stmt_id = int.from_bytes(data[1:5], "little")
            columns = int.from_bytes(data[5:7], "little")
            params = int.from_bytes(data[7:9], "little")
            for n in (params, columns):
                for _ in range(n + 1 if n else 0):  # definitions, then an EOF
                    c._read_packet()
            c._execute_command(COMMAND.COM_STMT_CLOSE, stmt_id.to_bytes(4, "little"))
            self.assertLess(time.monotonic() - start, 120, "2,000 prepares took over 2 minutes")
        self.assertEqual(harness.scalar(c, "SELECT 'still relaying'"), "still relaying")
        grown = vm_rss_kib(pid) - rss_before
        print("2,000 prepares of 60 KiB in %.1fs; credproxy grew by %d KiB"
              % (time.monotonic() - start, grown))
        quiet_close(c)
        # Keeping the texts would take 2,000 x 60 KiB (117 MiB); the cap is 1 MiB a session.
        self.assertLess(grown, 20 * 1024, "credproxy grew by %d KiB" % grown)


if __name__ == "__main__":
    harness.main()
