"""Session state never crosses from one client to the next through the pool, and multiplexing
never moves a session whose state it cannot carry (locks, HANDLER, warnings, ROW_COUNT), while
LAST_INSERT_ID() survives a move."""

import threading
import time

import pymysql

from harness import ProxyTestCase, connect, main, scalar

RELEASE = "150ms"  # pool_release_idle_after in the multiplexing tests
PAUSE = 0.6  # comfortably past it


class PoolDoesNotLeakState(ProxyTestCase):
    """One pooled connection (pool_size 1): the second client always gets the first's connection."""

    def setUp(self):
        super().setUp()
        self.proxy = self.start_proxy("--pool-size", "1", "--workers", "1")
        root = self.fixture.root_sql
        root("CREATE TABLE IF NOT EXISTS app.fidelity_t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        root("DROP FUNCTION IF EXISTS app.leaky;\nDELIMITER //\n"
             "CREATE FUNCTION app.leaky() RETURNS INT DETERMINISTIC BEGIN SET @leak = 'secret'; "
             "RETURN 1; END//\nDELIMITER ;\n")
        user = self.fixture.secret()["username"]
        for (host,) in root("SELECT host FROM mysql.user WHERE user = '%s'" % user):
            root("GRANT EXECUTE ON app.* TO '%s'@'%s'" % (user, host))

    def next_client(self, first_sql):
        a = connect(self.proxy.port, database="app", autocommit=True)
        with a.cursor() as cur:
            cur.execute(first_sql)
            cur.fetchall()
        thread_a = scalar(a, "SELECT CONNECTION_ID()")
        a.close()
        time.sleep(0.3)  # the reset runs after the client left
        b = connect(self.proxy.port, database="app", autocommit=True)
        self.assertEqual(scalar(b, "SELECT CONNECTION_ID()"), thread_a,
                         "the test needs the second client on the first one's connection")
        return b

    def test_mixed_case_get_lock_is_released(self):
        b = self.next_client("SELECT Get_Lock('fidelity_lock', 0)")
        self.assertEqual(scalar(b, "SELECT IS_USED_LOCK('fidelity_lock') IS NULL"), 1,
                         "the next client holds the previous client's lock")

    def test_user_variable_set_by_a_function_is_gone(self):
        b = self.next_client("SELECT app.leaky()")
        self.assertIsNone(scalar(b, "SELECT @leak"), "the previous client's @leak is visible")

    def test_last_insert_id_is_gone(self):
        b = self.next_client("SELECT Last_Insert_Id(4242)")
        self.assertEqual(scalar(b, "SELECT LAST_INSERT_ID()"), 0)

class MultiplexingKeepsWhatItCannotMove(ProxyTestCase):
    """Two clients over one connection: a client holding such state keeps its connection."""

    def setUp(self):
        super().setUp()
        self.proxy = self.start_proxy("--pool-release-idle-after", RELEASE, "--pool-size", "2",
                                      "--workers", "1")
        self.fixture.root_sql(
            "CREATE TABLE IF NOT EXISTS app.fidelity_m (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")

    def client(self):
        return connect(self.proxy.port, database="app", autocommit=True)

    def test_lock_tables_holds(self):
        a = self.client()
        scalar(a, "LOCK TABLES fidelity_m WRITE")
        time.sleep(PAUSE)
        other = self.client()
        result = {}

        def write():
            try:
                with other.cursor() as cur:
                    cur.execute("SET SESSION lock_wait_timeout = 2")
                    cur.execute("INSERT INTO fidelity_m (v) VALUES (1)")
                result["ok"] = True
            except pymysql.err.MySQLError as e:
                result["err"] = e.args[0]

        t = threading.Thread(target=write)
        t.start()
        t.join(10)
        self.assertNotIn("ok", result, "another session wrote a table locked by LOCK TABLES")
        self.assertEqual(result.get("err"), 1205)  # lock wait timeout
        scalar(a, "UNLOCK TABLES")

    def test_handler_stays_open(self):
        a = self.client()
        scalar(a, "HANDLER fidelity_m OPEN")
        time.sleep(PAUSE)
        with a.cursor() as cur:
            cur.execute("HANDLER fidelity_m READ FIRST")  # 1109 once the connection moved
            cur.fetchall()
            cur.execute("HANDLER fidelity_m CLOSE")

    def test_last_insert_id_survives_a_move(self):
        a = self.client()
        with a.cursor() as cur:
            cur.execute("INSERT INTO fidelity_m (v) VALUES (7)")
            want = cur.lastrowid
        self.assertGreater(want, 0)
        scalar(a, "SELECT 1")  # a statement after the write: the connection may go
        time.sleep(PAUSE)
        self.assertEqual(scalar(a, "SELECT LAST_INSERT_ID()"), want)

    def test_row_count_and_warnings_right_after_a_write(self):
        a = self.client()
        with a.cursor() as cur:
            cur.execute("INSERT INTO fidelity_m (v) VALUES (1), (2), (3)")
        time.sleep(PAUSE)
        self.assertEqual(scalar(a, "SELECT ROW_COUNT()"), 3)
        with a.cursor() as cur:
            cur.execute("SELECT CAST('x' AS INT)")  # a warning
        time.sleep(PAUSE)
        with a.cursor() as cur:
            cur.execute("SHOW WARNINGS")
            self.assertEqual(len(cur.fetchall()), 1, "the warnings went with the connection")

    def test_prepared_get_lock_keeps_its_connection(self):
        a = self.client()
        # PyMySQL has no server-side prepares: send COM_STMT_PREPARE + EXECUTE by hand.
        a._execute_command(0x16, "SELECT GET_LOCK('fidelity_prep', 0)")
        ok = a._read_packet().get_all_data()
        stmt_id = int.from_bytes(ok[1:5], "little")
        cols, params = (int.from_bytes(ok[i:i + 2], "little") for i in (5, 7))
        for _ in range(cols + (1 if cols else 0) + params + (1 if params else 0)):
            a._read_packet()  # definitions and their EOFs
        a._execute_command(0x17, stmt_id.to_bytes(4, "little") + b"\x00\x01\x00\x00\x00")
        eofs = 0
        while eofs < 2:  # binary result: column count, definition, EOF, row, EOF
            pkt = a._read_packet().get_all_data()
            eofs += pkt[:1] == b"\xfe" and len(pkt) < 9
        time.sleep(PAUSE)
        other = self.client()
        self.assertEqual(scalar(other, "SELECT IS_USED_LOCK('fidelity_prep') IS NOT NULL"), 1,
                         "the lock went away with the released connection")
        self.assertEqual(scalar(a, "SELECT RELEASE_LOCK('fidelity_prep')"), 1,
                         "the session no longer holds its own lock")

    def test_upstream_lost_right_after_a_reply(self):
        """The connection dies while the release timer is pending: the session moves on."""
        a = self.client()
        tid = scalar(a, "SELECT CONNECTION_ID()")
        self.fixture.root_sql("KILL %d" % tid)
        time.sleep(0.05)
        self.assertEqual(scalar(a, "SELECT 5"), 5)
        time.sleep(PAUSE)
        self.assertEqual(scalar(a, "SELECT 6"), 6)


if __name__ == "__main__":
    main()
