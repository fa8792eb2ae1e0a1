"""Logs of the real binary in front of the MariaDB fixture: log_format = json under load (every
line parsed with json.loads, strict: no raw control byte), the identity fields; log_file and
SIGUSR1 after a logrotate-style rename; a stalled stderr reader in JSON mode never stops queries
and the drops are reported as a JSON line once the reader reads again."""

import fcntl
import json
import os
import signal
import subprocess
import threading
import time

import pymysql

import harness
from harness import ProxyTestCase, connect, main, scalar


def json_lines(text):
    """Every line of text parsed as a JSON object (raises on the first one that is not)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            obj = json.loads(line)  # strict: a raw control character fails
        except ValueError as e:
            raise AssertionError("line %d is not JSON (%s): %r" % (n, e, line))
        if not isinstance(obj, dict):
            raise AssertionError("line %d is not an object: %r" % (n, line))
        out.append(obj)
    return out


class JsonFormat(ProxyTestCase):
    def test_every_line_is_json_under_load(self):
        p = self.start_proxy("--log-format", "json", "--workers", "2")
        nasty = 'u"\\\x01\x1b[31m\x7f\n' + "\u00e9"
        errors = []

        def client(i):
            try:
                for j in range(15):
                    c = connect(p.port, user=nasty if j % 3 == 0 else "app%d" % i)
                    if scalar(c, "SELECT %d" % j) != j:
                        errors.append("wrong answer")
                    if j % 5 == 0:  # an error the log records with the client's identity
                        try:
                            scalar(c, "SELECT * FROM no_such_table_%d" % i)
                        except pymysql.err.MySQLError:
                            pass
                    c.close()
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        # Bad logins from one address: rejected with a log line each (rate limited).
        for _ in range(40):  # naming a database with quotes, controls and UTF-8
            with self.assertRaises(pymysql.err.MySQLError):
                connect(p.port, database="no_such_db_" + nasty)
        time.sleep(1.5)  # the rate limiter's window ends: its summary is written
        os.kill(p.proc.pid, signal.SIGUSR1)  # no log_file: a warning, still JSON
        self.assertTrue(p.wait_log("SIGUSR1"))
        p.stop()
        lines = json_lines(p.log())
        self.assertGreater(len(lines), 16 * 15)
        for obj in lines:
            self.assertRegex(obj.get("time", ""), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIn(obj.get("level"), ("error", "warn", "info", "debug"))
            self.assertIsInstance(obj.get("msg"), str)
        clients = [o for o in lines if "client" in o]
        self.assertTrue(clients, "no line with a client field")
        for o in clients:
            self.assertRegex(o["client"], r"^C-\d+$")
            if "peer" in o:
                self.assertRegex(o["peer"], r"^127\.0\.0\.1:\d+$")
            self.assertFalse(o["msg"].startswith("C-"), o)
        self.assertTrue([o for o in lines if o.get("route") == "default"
                         and o["msg"].startswith("listening on 127.0.0.1:")],
                        "no 'listening' line with a route field")
        # The client's bytes reached a line (escaped by the call site or by the JSON writer),
        # and json.loads above took every line.
        named = [o for o in clients if 'no_such_db_u"' in o["msg"]]
        self.assertTrue(named, "no line names the database the client sent")
        # MariaDB quotes the controls in its message itself; the quote, backslash and UTF-8
        # came through the JSON writer intact.
        self.assertTrue([o for o in named if "\u00e9'" in o["msg"] and "\\" in o["msg"]],
                        named[:3])
        self.assertTrue([o for o in lines if o.get("event") == "suppressed"
                         and isinstance(o.get("suppressed"), int) and o["suppressed"] > 0],
                        "no suppressed-lines summary")


class LogFile(ProxyTestCase):
    def test_usr1_reopens_after_rename(self):
        log = self.workdir / "credproxy-file.log"
        rotated = self.workdir / "credproxy-file.log.1"
        p = self.start_proxy("--log-file", str(log))
        conn = connect(p.port)
        self.assertEqual(scalar(conn, "SELECT 1"), 1)
        self.assertIn("ready", log.read_text())
        self.assertNotIn("ready", p.log())  # stderr is no longer where the lines go
        os.rename(log, rotated)
        connect(p.port).close()  # logged into the renamed file: it is still open
        deadline = time.monotonic() + 5
        while "accepted on route" not in rotated.read_text().split("ready", 1)[1]:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        os.kill(p.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not (log.exists() and "reopened" in log.read_text()):
            self.assertLess(time.monotonic(), deadline, "no new log file after SIGUSR1")
            time.sleep(0.05)
        old_size = rotated.stat().st_size
        c = connect(p.port)
        self.assertEqual(scalar(c, "SELECT 2"), 2)
        self.assertEqual(scalar(conn, "SELECT 3"), 3)  # a client from before goes on
        c_id = scalar(c, "SELECT CONNECTION_ID()")
        c.close()
        deadline = time.monotonic() + 5
        while "closed" not in log.read_text().split("reopened", 1)[1]:
            self.assertLess(time.monotonic(), deadline, "new lines do not reach the new file")
            time.sleep(0.05)
        self.assertEqual(rotated.stat().st_size, old_size, "lines still go to the rotated file")
        self.assertIn("received SIGUSR1: reopening the log file", log.read_text())
        self.assertGreater(c_id, 0)
        harness.assert_no_secret(log.read_bytes() + rotated.read_bytes(), p.passwords, "log file")
        p.stop()
        self.assertIn("credproxy stopped", log.read_text())

    def test_json_to_a_log_file(self):
        log = self.workdir / "json.log"
        p = self.start_proxy("--log-file", str(log), "--log-format", "json")
        self.assertEqual(scalar(connect(p.port), "SELECT 1"), 1)
        p.stop()
        lines = json_lines(log.read_text())
        self.assertTrue([o for o in lines if o["msg"].startswith("credproxy") and "ready" in o["msg"]])

    def test_unwritable_log_file_fails_at_start(self):
        r = harness.run_proxy_once(self.workdir, [
            "--secret-file", str(self.fixture.secret_path()), "--listen",
            "127.0.0.1:%d" % harness.free_port(), "--log-file", "/nonexistent-dir/credproxy.log"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("cannot open log file /nonexistent-dir/credproxy.log", r.stderr)


class StalledReader(ProxyTestCase):
    def test_stalled_stderr_json_never_stops_queries(self):
        """stderr is a pipe nobody reads (json, debug): clients go on; once read, the drop
        count arrives as a JSON line and every line read is JSON."""
        r, w = os.pipe()
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
        secret = self.workdir / "secret.json"
        harness.write_json_atomic(secret, self.fixture.secret())
        port = harness.free_port()
        proc = subprocess.Popen(
            [harness.binary(), "--secret-file", str(secret), "--listen", "127.0.0.1:%d" % port,
             "--log-level", "debug", "--log-format", "json", "--workers", "2"],
            stdin=subprocess.DEVNULL, stdout=w, stderr=w)
        os.close(w)
        self.addCleanup(os.close, r)

        def stop():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.addCleanup(stop)
        deadline = time.monotonic() + 10
        while True:
            try:
                connect(port).close()
                break
            except pymysql.err.OperationalError:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.05)
        t0 = time.monotonic()
        for i in range(300):  # each login and close logs debug lines: far more than 4 kB
            c = connect(port)
            self.assertEqual(scalar(c, "SELECT %d" % i), i)
            c.close()
        self.assertLess(time.monotonic() - t0, 60)
        # Now read: what was queued, then the drop report.
        os.set_blocking(r, False)
        data = b""
        deadline = time.monotonic() + 10
        while b'"event":"dropped"' not in data and time.monotonic() < deadline:
            try:
                chunk = os.read(r, 65536)
                data += chunk
            except BlockingIOError:
                connect(port).close()  # a line after the stall lets the report through
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        os.set_blocking(r, True)
        while True:  # to EOF: the process exits and closes its end
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        self.assertEqual(proc.wait(15), 0)
        lines = json_lines(data.decode("utf-8"))
        dropped = [o for o in lines if o.get("event") == "dropped"]
        self.assertTrue(dropped, "no dropped-lines report")
        self.assertGreater(dropped[0]["dropped"], 0)


if __name__ == "__main__":
    main()
