// The driver workload of tests/integration/test_drivers.py through Go's database/sql and
// go-sql-driver/mysql (Debian's golang-github-go-sql-driver-mysql-dev, built with
// GO111MODULE=off and GOPATH=/usr/share/gocode), with server-side prepared statements
// (interpolateParams=false).
//
// Settings come from the environment: DRIVER_HOST, DRIVER_PORT, DRIVER_USER, DRIVER_PASSWORD,
// DRIVER_DB, DRIVER_TABLE, DRIVER_ROWS. The program prints "IDLE <connection id>" when its
// workload is done and waits for a line on stdin (the test kills the upstream connection
// meanwhile), then runs again on the same connection, with a statement prepared before,
// prints "AFTER <connection id>" and "DONE". Any mismatch prints "FAIL ..." and exits 1.
// The connection is pinned (sql.Conn) and dials are counted, so a reconnect hidden by
// database/sql (which retries on driver.ErrBadConn) fails the run too.
package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
)

var (
	table string
	rows  int
	dials int32
	ctx   = context.Background()
)

func fail(format string, args ...interface{}) {
	fmt.Printf("FAIL "+format+"\n", args...)
	os.Exit(1)
}

func check(ok bool, format string, args ...interface{}) {
	if !ok {
		fail(format, args...)
	}
}

func must(err error, what string) {
	if err != nil {
		if me, ok := err.(*mysql.MySQLError); ok {
			fail("%s: error %d: %s", what, me.Number, me.Message)
		}
		fail("%s: %v", what, err)
	}
}

// The same rows every driver program writes: NULLs at fixed places, a BLOB of every byte.
func name(i int) sql.NullString {
	if i%7 == 0 {
		return sql.NullString{}
	}
	return sql.NullString{String: fmt.Sprintf("name-%d-\u00e9\u00df", i), Valid: true}
}

func qty(i int) sql.NullInt64 {
	if i%5 == 0 {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: int64(i)*1000003 - 7, Valid: true}
}

func data(i int) []byte {
	if i%3 == 0 {
		return nil
	}
	n := i * 13 % 300
	if i == 1 {
		n = 70000
	}
	b := make([]byte, n)
	for k := range b {
		b[k] = byte((k*7 + i) & 0xff)
	}
	return b
}

func args(i int) []interface{} {
	var d interface{}
	if b := data(i); b != nil {
		d = b
	}
	return []interface{}{i, name(i), qty(i), d}
}

func count(c *sql.Conn) int {
	var n int
	must(c.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+table).Scan(&n), "count")
	return n
}

func connectionID(c *sql.Conn) int64 {
	var id int64
	must(c.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id), "CONNECTION_ID()")
	return id
}

func checkRange(sel *sql.Stmt, lo, hi int, when string) {
	r, err := sel.QueryContext(ctx, lo, hi)
	must(err, when+": select")
	expect := lo
	for r.Next() {
		var id int
		var nm sql.NullString
		var q sql.NullInt64
		var d []byte
		must(r.Scan(&id, &nm, &q, &d), when+": scan")
		check(id == expect, "%s: id %d, expected %d", when, id, expect)
		check(nm == name(id), "%s: name of %d is %v, expected %v", when, id, nm, name(id))
		check(q == qty(id), "%s: qty of %d is %v", when, id, q)
		want := data(id)
		check((d == nil) == (want == nil) && bytes.Equal(d, want),
			"%s: data of %d differs (%d bytes, NULL %v)", when, id, len(d), d == nil)
		expect++
	}
	must(r.Err(), when+": rows")
	must(r.Close(), when+": close rows")
	check(expect == hi+1, "%s: rows %d..%d ended at %d", when, lo, hi, expect)
}

func main() {
	for _, e := range []string{"DRIVER_HOST", "DRIVER_PORT", "DRIVER_USER", "DRIVER_DB",
		"DRIVER_TABLE"} {
		check(os.Getenv(e) != "", "%s not set", e)
	}
	table = os.Getenv("DRIVER_TABLE")
	rows = 100
	if s := os.Getenv("DRIVER_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		must(err, "DRIVER_ROWS")
		rows = n
	}
	mysql.RegisterDialContext("countedtcp", func(ctx context.Context, addr string) (net.Conn, error) {
		atomic.AddInt32(&dials, 1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	})
	cfg := mysql.NewConfig()
	cfg.User = os.Getenv("DRIVER_USER")
	cfg.Passwd = os.Getenv("DRIVER_PASSWORD")
	cfg.Net = "countedtcp"
	cfg.Addr = net.JoinHostPort(os.Getenv("DRIVER_HOST"), os.Getenv("DRIVER_PORT"))
	cfg.DBName = os.Getenv("DRIVER_DB")
	cfg.InterpolateParams = false
	cfg.Timeout = 20 * time.Second
	cfg.ReadTimeout = 60 * time.Second
	cfg.Params = map[string]string{"charset": "utf8mb4"}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	must(err, "open")
	db.SetMaxOpenConns(1)
	c, err := db.Conn(ctx)
	must(err, "connect")

	_, err = c.ExecContext(ctx, "DROP TABLE IF EXISTS "+table)
	must(err, "drop")
	_, err = c.ExecContext(ctx, "CREATE TABLE "+table+" (id INT PRIMARY KEY, name VARCHAR(64) NULL,"+
		" qty BIGINT NULL, data MEDIUMBLOB NULL) CHARACTER SET utf8mb4")
	must(err, "create")
	ins, err := c.PrepareContext(ctx, "INSERT INTO "+table+" (id, name, qty, data) VALUES (?, ?, ?, ?)")
	must(err, "prepare insert")
	sel, err := c.PrepareContext(ctx, "SELECT id, name, qty, data FROM "+table+
		" WHERE id BETWEEN ? AND ? ORDER BY id")
	must(err, "prepare select")

	// Rows 1..N in one transaction (database/sql's Tx, the statement moved into it).
	tx, err := c.BeginTx(ctx, nil)
	must(err, "begin")
	txIns := tx.StmtContext(ctx, ins)
	for i := 1; i <= rows; i++ {
		res, err := txIns.ExecContext(ctx, args(i)...)
		must(err, fmt.Sprintf("insert %d", i))
		n, _ := res.RowsAffected()
		check(n == 1, "insert %d affected %d", i, n)
	}
	must(tx.Commit(), "commit")
	check(count(c) == rows, "count after commit %d", count(c))
	// A transaction rolled back leaves nothing (plain SQL, the prepared statement inside).
	_, err = c.ExecContext(ctx, "START TRANSACTION")
	must(err, "start transaction")
	for i := rows + 1; i <= rows+10; i++ {
		_, err := ins.ExecContext(ctx, args(i)...)
		must(err, fmt.Sprintf("insert %d", i))
	}
	check(count(c) == rows+10, "count inside the transaction %d", count(c))
	_, err = c.ExecContext(ctx, "ROLLBACK")
	must(err, "rollback")
	check(count(c) == rows, "count after rollback %d", count(c))
	checkRange(sel, 1, rows, "before")
	checkRange(sel, 3, 9, "before, 3..9")

	fmt.Printf("IDLE %d\n", connectionID(c))
	_, err = bufio.NewReader(os.Stdin).ReadString('\n')
	must(err, "stdin")

	// The same connection and the statements prepared before.
	checkRange(sel, 2, 11, "after, prepared before")
	tx, err = c.BeginTx(ctx, nil)
	must(err, "begin after")
	txIns = tx.StmtContext(ctx, ins)
	for i := rows + 1; i <= rows+5; i++ {
		_, err := txIns.ExecContext(ctx, args(i)...)
		must(err, fmt.Sprintf("insert after %d", i))
	}
	must(tx.Commit(), "commit after")
	check(count(c) == rows+5, "count after the reconnect %d", count(c))
	checkRange(sel, rows-2, rows+5, "after, new rows")
	var a int64
	var b sql.NullString
	must(c.QueryRowContext(ctx, "SELECT ? + 1, ?", 41, nil).Scan(&a, &b), "SELECT ? + 1")
	check(a == 42 && !b.Valid, "SELECT ? + 1 gave %d %v", a, b)
	fmt.Printf("AFTER %d\n", connectionID(c))
	must(ins.Close(), "close insert")
	must(sel.Close(), "close select")
	_, err = c.ExecContext(ctx, "DROP TABLE "+table)
	must(err, "drop")
	check(atomic.LoadInt32(&dials) == 1, "the driver dialled %d times", dials)
	must(c.Close(), "close conn")
	must(db.Close(), "close db")
	fmt.Println("DONE")
}
