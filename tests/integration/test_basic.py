#!/usr/bin/python3
"""The basics through credproxy: identity, schemas, and real work from the mariadb CLI and
PyMySQL."""

import hashlib
import threading

from pymysql.constants import CLIENT
import pymysql.cursors

import harness
from harness import ProxyTestCase, connect, scalar, unique_name


class Identity(ProxyTestCase):
    """Who the upstream sees, and which schema the session starts in."""

    def setUp(self):
        super().setUp()
        self.secret = self.fixture.secret()
        self.user_at = self.secret["username"] + "@127.0.0.1"
        self.proxy = self.start_proxy(socket=True)

    def test_current_user_over_tcp(self):
        self.assertEqual(self.cli_value("SELECT CURRENT_USER()", port=self.proxy.port),
                         self.user_at)

    def test_current_user_over_unix_socket(self):
        self.assertEqual(self.cli_value("SELECT CURRENT_USER()", socket_path=self.proxy.socket),
                         self.user_at)

    def test_client_username_is_ignored(self):
        for user in ("root", "nobody", "app_tls", "x" * 80):
            with self.subTest(user=user):
                out = self.cli_value("SELECT CURRENT_USER(), USER()", port=self.proxy.port,
                                     user=user)
                self.assertEqual(out.split("\t"), [self.user_at, self.user_at])

    def test_default_schema_is_the_secrets_dbname(self):
        self.assertEqual(self.cli_value("SELECT DATABASE()", port=self.proxy.port),
                         self.secret["dbname"])
        conn = connect(self.proxy.port)
        self.assertEqual(scalar(conn, "SELECT DATABASE()"), self.secret["dbname"])
        conn.close()

    def test_client_chosen_schema_is_used(self):
        self.assertEqual(self.cli_value("SELECT DATABASE()", port=self.proxy.port,
                                        database="information_schema"), "information_schema")
        self.assertEqual(self.cli_value("SELECT DATABASE()", socket_path=self.proxy.socket,
                                        database="information_schema"), "information_schema")
        conn = connect(self.proxy.port, database="information_schema")
        self.assertEqual(scalar(conn, "SELECT DATABASE()"), "information_schema")
        conn.close()

    def test_schema_without_access_is_refused_by_the_server(self):
        p = harness.mariadb_cli("SELECT 1", port=self.proxy.port, database="mysql")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("ERROR 1044", p.stderr)
        self.assertMysqlError(harness.ER_DBACCESS_DENIED, connect, self.proxy.port,
                              database="mysql")
        # The proxy is still fine afterwards.
        self.assertEqual(self.cli_value("SELECT 1", port=self.proxy.port), "1")


class NoDbname(ProxyTestCase):
    def test_secret_without_dbname_starts_with_no_schema(self):
        secret = self.fixture.secret()
        del secret["dbname"]
        proxy = self.start_proxy(secret=secret)
        self.assertEqual(self.cli_value("SELECT DATABASE()", port=proxy.port), "NULL")
        self.assertEqual(self.cli_value("SELECT DATABASE()", port=proxy.port, database="app"),
                         "app")


class PyMySQLWork(ProxyTestCase):
    """A driver that is not built on libmariadb, doing ordinary work through the proxy."""

    def setUp(self):
        super().setUp()
        self.proxy = self.start_proxy("--workers", "1")
        self.conn = connect(self.proxy.port)
        self.addCleanup(self.close_conn)
        self.table = unique_name("basic")

    def create_table(self, ddl):
        with self.conn.cursor() as cur:
            cur.execute("CREATE TABLE %s (%s) CHARACTER SET utf8mb4" % (self.table, ddl))
        self.addCleanup(self.drop_table)

    def drop_table(self):
        # self.conn goes first: its open transaction holds the table's metadata lock.
        self.close_conn()
        self.fixture.root_sql("DROP TABLE IF EXISTS app.%s" % self.table)

    def close_conn(self):
        if self.conn.open:
            self.conn.close()

    def test_unicode_round_trip(self):
        self.create_table("id INT PRIMARY KEY, s VARCHAR(100) NULL, b VARBINARY(100) NULL")
        rows = [
            (1, "héllo wörld", b"\x00\xff\x10"),
            (2, "日本語テキスト", b""),
            (3, "emoji 😀🚀", None),
            (4, "quotes ' \" \\ and ; -- /*", b"'\\"),
            (5, "", b"\x00"),
            (6, None, None),
        ]
        with self.conn.cursor() as cur:
            for row in rows:
                cur.execute("INSERT INTO %s VALUES (%%s, %%s, %%s)" % self.table, row)
            self.conn.commit()
            cur.execute("SELECT id, s, b FROM %s ORDER BY id" % self.table)
            got = [(i, s, bytes(b) if b is not None else None) for i, s, b in cur.fetchall()]
        self.assertEqual(got, rows)
        self.assertEqual(scalar(self.conn, "SELECT CHAR_LENGTH(s) FROM %s WHERE id = 3"
                                % self.table), 8)

    def test_multi_statement_results(self):
        conn = connect(self.proxy.port, client_flag=CLIENT.MULTI_STATEMENTS)
        self.addCleanup(conn.close)
        with conn.cursor() as cur:
            cur.execute("SELECT 1; SELECT 'two', 2; DO 0; SELECT 3 UNION SELECT 4")
            self.assertEqual(cur.fetchall(), ((1,),))
            self.assertTrue(cur.nextset())
            self.assertEqual(cur.fetchall(), (("two", 2),))
            self.assertTrue(cur.nextset())
            self.assertIsNone(cur.description)  # DO: an OK packet, no result set
            self.assertTrue(cur.nextset())
            self.assertEqual(cur.fetchall(), ((3,), (4,)))
            self.assertFalse(cur.nextset())
            cur.execute("SELECT 5")  # the connection is in sync afterwards
            self.assertEqual(cur.fetchall(), ((5,),))

    def test_executemany(self):
        self.create_table("id INT PRIMARY KEY, v VARCHAR(20)")
        rows = [(i, "v%d" % i) for i in range(1, 2001)]
        with self.conn.cursor() as cur:
            n = cur.executemany("INSERT INTO %s (id, v) VALUES (%%s, %%s)" % self.table, rows)
            self.conn.commit()
            self.assertEqual(n, len(rows))
            cur.execute("SELECT COUNT(*), SUM(id), SUM(v = CONCAT('v', id)) FROM %s" % self.table)
            self.assertEqual(tuple(int(x) for x in cur.fetchone()), (2000, 2001000, 2000))

    def test_select_db(self):
        self.conn.select_db("information_schema")
        self.assertEqual(scalar(self.conn, "SELECT DATABASE()"), "information_schema")
        self.conn.select_db("app")
        self.assertEqual(scalar(self.conn, "SELECT DATABASE()"), "app")
        with self.assertRaises(pymysql.err.OperationalError) as cm:
            self.conn.select_db("mysql")
        self.assertEqual(cm.exception.args[0], harness.ER_DBACCESS_DENIED)
        self.assertEqual(scalar(self.conn, "SELECT DATABASE()"), "app")

    def test_ping(self):
        for _ in range(3):
            self.conn.ping(reconnect=False)
        self.assertEqual(scalar(self.conn, "SELECT 1"), 1)

    def test_errors_leave_the_session_usable(self):
        with self.conn.cursor() as cur:
            with self.assertRaises(pymysql.err.ProgrammingError) as cm:
                cur.execute("SELEKT 1")
            self.assertEqual(cm.exception.args[0], harness.ER_PARSE_ERROR)
            with self.assertRaises(pymysql.err.ProgrammingError) as cm:
                cur.execute("SELECT * FROM no_such_table_here")
            self.assertEqual(cm.exception.args[0], 1146)
            cur.execute("SELECT 42")
            self.assertEqual(cur.fetchone(), (42,))

    def test_transactions(self):
        self.create_table("id INT PRIMARY KEY")
        with self.conn.cursor() as cur:
            self.conn.begin()
            cur.execute("INSERT INTO %s VALUES (1)" % self.table)
            self.conn.rollback()
            cur.execute("SELECT COUNT(*) FROM %s" % self.table)
            self.assertEqual(cur.fetchone(), (0,))
            self.conn.begin()
            cur.execute("INSERT INTO %s VALUES (2)" % self.table)
            self.conn.commit()
        other = connect(self.proxy.port)
        self.assertEqual(scalar(other, "SELECT GROUP_CONCAT(id) FROM %s" % self.table), "2")
        other.close()

    def test_large_result_100k_rows(self):
        sql = ("SELECT seq, SHA1(seq), REPEAT(CHAR(65 + seq %% 26 USING ascii), seq %% 100) "
               "FROM seq_1_to_%d")
        n = 100000
        for cursor_class in (pymysql.cursors.Cursor, pymysql.cursors.SSCursor):
            with self.subTest(cursor=cursor_class.__name__):
                count = 0
                with self.conn.cursor(cursor_class) as cur:
                    cur.execute(sql % n)
                    for seq, sha, pad in cur:
                        count += 1
                        if (seq != count or sha != hashlib.sha1(str(seq).encode()).hexdigest()
                                or pad != chr(65 + seq % 26) * (seq % 100)):
                            self.fail("row %d is wrong: %r" % (count, (seq, sha, pad)))
                self.assertEqual(count, n)

    def test_large_values_both_ways(self):
        value = "0123456789abcdef" * (5 * 1024 * 1024 // 16)  # 5 MiB up and back down
        with self.conn.cursor() as cur:
            cur.execute("SELECT %s, LENGTH(%s)", (value, value))
            back, length = cur.fetchone()
        self.assertEqual(length, len(value))
        self.assertTrue(back == value, "the 5 MiB value came back different")

    def test_server_version_is_the_upstreams(self):
        direct = self.fixture.direct(self.fixture.secret())
        version = direct.get_server_info()  # as greeted, e.g. "5.5.5-10.11.6-MariaDB"
        direct.close()
        # self.conn may have been greeted before the upstream was known; this one is not.
        conn = connect(self.proxy.port)
        self.assertEqual(conn.get_server_info(), version)
        conn.close()


class SessionIsolation(ProxyTestCase):
    """What one client leaves in its session must not reach the next one."""

    def setUp(self):
        super().setUp()
        self.proxy = self.start_proxy("--workers", "1")
        self.table = unique_name("iso")
        conn = connect(self.proxy.port)
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE %s (id INT PRIMARY KEY) ENGINE=InnoDB" % self.table)
        conn.close()
        self.addCleanup(self.fixture.root_sql, "DROP TABLE app.%s" % self.table)

    def test_session_state_is_reset_between_clients(self):
        for i in range(5):
            # autocommit=None: PyMySQL leaves the session's autocommit as the server set it.
            a = connect(self.proxy.port, autocommit=None)
            with a.cursor() as cur:
                cur.execute("SET @leak = 'from-a', SESSION sql_mode = 'ANSI_QUOTES'")
                cur.execute("CREATE TEMPORARY TABLE leak_tmp (x INT)")
                cur.execute("SET autocommit = 0")
                cur.execute("INSERT INTO %s VALUES (%d)" % (self.table, 100 + i))
            a.close()  # leaves without committing
            b = connect(self.proxy.port, autocommit=None)
            with b.cursor() as cur:
                cur.execute("SELECT @leak, @@sql_mode LIKE '%ANSI_QUOTES%', @@autocommit")
                self.assertEqual(cur.fetchone(), (None, 0, 1))
                with self.assertRaises(pymysql.err.ProgrammingError):
                    cur.execute("SELECT * FROM leak_tmp")
                cur.execute("INSERT INTO %s VALUES (%d)" % (self.table, i))
            b.close()
        rows = self.fixture.root_sql("SELECT id FROM app.%s ORDER BY id" % self.table)
        self.assertEqual([r[0] for r in rows], [str(i) for i in range(5)],
                         "an uncommitted insert of a departed client was committed")


class Concurrency(ProxyTestCase):
    def test_parallel_clients_do_not_cross_talk(self):
        proxy = self.start_proxy()
        errors = []

        def client(n):
            try:
                conn = connect(proxy.port)
                with conn.cursor() as cur:
                    for j in range(30):
                        marker = "c%d-q%d-" % (n, j) + "x" * (j * 37)
                        cur.execute("SELECT %s, CONNECTION_ID()", (marker,))
                        got = cur.fetchone()[0]
                        if got != marker:
                            errors.append("client %d got %r" % (n, got[:40]))
                            return
                conn.close()
            except Exception as e:  # reported below; the thread must not die silently
                errors.append("client %d: %r" % (n, e))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        self.assertTrue(proxy.alive())


if __name__ == "__main__":
    harness.main()
