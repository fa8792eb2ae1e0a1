// The driver workload of tests/integration/test_drivers.py through MariaDB Connector/J
// (Debian's libmariadb-java), with server-side prepared statements (useServerPrepStmts=true).
//
// Settings come from the environment: DRIVER_HOST, DRIVER_PORT, DRIVER_USER, DRIVER_PASSWORD,
// DRIVER_DB, DRIVER_TABLE, DRIVER_ROWS. The program prints "IDLE <connection id>" when its
// workload is done and waits for a line on stdin (the test kills the upstream connection
// meanwhile), then runs again on the same connection, with a statement prepared before,
// prints "AFTER <connection id>" and "DONE". Any mismatch prints "FAIL ..." and exits 1.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.Arrays;
import java.util.Objects;

public class DriverTest {
    static String table;
    static int rows;

    static void fail(String msg) {
        System.out.println("FAIL " + msg);
        System.out.flush();
        System.exit(1);
    }

    static void check(boolean ok, String msg) {
        if (!ok) fail(msg);
    }

    // The same rows every driver program writes: NULLs at fixed places, a BLOB of every byte.
    static String name(int i) { return i % 7 == 0 ? null : "name-" + i + "-\u00e9\u00df"; }

    static Long qty(int i) { return i % 5 == 0 ? null : (long) i * 1000003L - 7; }

    static byte[] data(int i) {
        if (i % 3 == 0) return null;
        int n = i == 1 ? 70000 : i * 13 % 300;
        byte[] b = new byte[n];
        for (int k = 0; k < n; k++) b[k] = (byte) ((k * 7 + i) & 0xff);
        return b;
    }

    static void bind(PreparedStatement ins, int i) throws SQLException {
        ins.setInt(1, i);
        if (name(i) == null) ins.setNull(2, Types.VARCHAR); else ins.setString(2, name(i));
        if (qty(i) == null) ins.setNull(3, Types.BIGINT); else ins.setLong(3, qty(i));
        if (data(i) == null) ins.setNull(4, Types.BLOB); else ins.setBytes(4, data(i));
    }

    static long count(Connection c) throws SQLException {
        try (Statement s = c.createStatement();
             ResultSet r = s.executeQuery("SELECT COUNT(*) FROM " + table)) {
            r.next();
            return r.getLong(1);
        }
    }

    static long connectionId(Connection c) throws SQLException {
        try (Statement s = c.createStatement();
             ResultSet r = s.executeQuery("SELECT CONNECTION_ID()")) {
            r.next();
            return r.getLong(1);
        }
    }

    // Runs the prepared range select and checks every value of rows lo..hi.
    static void checkRange(PreparedStatement sel, int lo, int hi, String when) throws SQLException {
        sel.setInt(1, lo);
        sel.setInt(2, hi);
        int expect = lo;
        try (ResultSet r = sel.executeQuery()) {
            while (r.next()) {
                int id = r.getInt(1);
                check(id == expect, when + ": id " + id + ", expected " + expect);
                check(Objects.equals(r.getString(2), name(id)), when + ": name of " + id + " is "
                      + r.getString(2) + ", expected " + name(id));
                long q = r.getLong(3);
                Long qv = r.wasNull() ? null : q;
                check(Objects.equals(qv, qty(id)), when + ": qty of " + id + " is " + qv);
                byte[] d = r.getBytes(4);
                check(Arrays.equals(d, data(id)), when + ": data of " + id + " differs ("
                      + (d == null ? "NULL" : d.length + " bytes") + ")");
                expect++;
            }
        }
        check(expect == hi + 1, when + ": rows " + lo + ".." + hi + " ended at " + expect);
    }

    public static void main(String[] args) throws Exception {
        String env[] = {"DRIVER_HOST", "DRIVER_PORT", "DRIVER_USER", "DRIVER_DB", "DRIVER_TABLE"};
        for (String e : env) check(System.getenv(e) != null, e + " not set");
        table = System.getenv("DRIVER_TABLE");
        rows = Integer.parseInt(System.getenv().getOrDefault("DRIVER_ROWS", "100"));
        String url = "jdbc:mariadb://" + System.getenv("DRIVER_HOST") + ":"
                     + System.getenv("DRIVER_PORT") + "/" + System.getenv("DRIVER_DB")
                     + "?useServerPrepStmts=true&useSsl=false&connectTimeout=20000"
                     + "&socketTimeout=60000";
        String pw = System.getenv().getOrDefault("DRIVER_PASSWORD", "");
        BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in,
                                                                        StandardCharsets.UTF_8));
        try (Connection c = DriverManager.getConnection(url, System.getenv("DRIVER_USER"), pw)) {
            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE IF EXISTS " + table);
                s.execute("CREATE TABLE " + table + " (id INT PRIMARY KEY, name VARCHAR(64) NULL,"
                          + " qty BIGINT NULL, data MEDIUMBLOB NULL) CHARACTER SET utf8mb4");
            }
            PreparedStatement ins = c.prepareStatement(
                "INSERT INTO " + table + " (id, name, qty, data) VALUES (?, ?, ?, ?)");
            PreparedStatement sel = c.prepareStatement(
                "SELECT id, name, qty, data FROM " + table
                + " WHERE id BETWEEN ? AND ? ORDER BY id");
            // Rows 1..N in one transaction.
            c.setAutoCommit(false);
            for (int i = 1; i <= rows; i++) {
                bind(ins, i);
                check(ins.executeUpdate() == 1, "insert " + i);
            }
            c.commit();
            check(count(c) == rows, "count after commit " + count(c));
            // A transaction rolled back leaves nothing.
            for (int i = rows + 1; i <= rows + 10; i++) {
                bind(ins, i);
                ins.executeUpdate();
            }
            check(count(c) == rows + 10, "count inside the transaction " + count(c));
            c.rollback();
            check(count(c) == rows, "count after rollback " + count(c));
            c.setAutoCommit(true);
            checkRange(sel, 1, rows, "before");
            checkRange(sel, 3, 9, "before, 3..9");

            System.out.println("IDLE " + connectionId(c));
            System.out.flush();
            check(stdin.readLine() != null, "stdin closed");

            // The same connection and the statements prepared before.
            checkRange(sel, 2, 11, "after, prepared before");
            c.setAutoCommit(false);
            for (int i = rows + 1; i <= rows + 5; i++) {
                bind(ins, i);
                check(ins.executeUpdate() == 1, "insert after " + i);
            }
            c.commit();
            c.setAutoCommit(true);
            check(count(c) == rows + 5, "count after the reconnect " + count(c));
            checkRange(sel, rows - 2, rows + 5, "after, new rows");
            PreparedStatement sel2 = c.prepareStatement("SELECT ? + 1, ?");
            sel2.setInt(1, 41);
            sel2.setNull(2, Types.VARCHAR);
            try (ResultSet r = sel2.executeQuery()) {
                check(r.next() && r.getLong(1) == 42 && r.getString(2) == null, "SELECT ? + 1");
            }
            System.out.println("AFTER " + connectionId(c));
            ins.close();
            sel.close();
            sel2.close();
            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE " + table);
            }
        } catch (SQLException e) {
            fail("SQLException " + e.getErrorCode() + " (" + e.getSQLState() + "): "
                 + e.getMessage());
        }
        System.out.println("DONE");
    }
}
