#!/usr/bin/python3
"""Password rotation under load: AWS's rotation Lambda steps (rotation_lambda.py) run against the
secret credproxy reads, while clients keep working through the proxy.

Load: 8 threads each keep one PyMySQL connection for the whole test and query it continuously;
4 threads connect, query and disconnect in a loop. Every client-visible error counts, and so
does a long-lived connection that had to be replaced (a dropped connection) or whose upstream
session changed under it (CONNECTION_ID differs at the end: the proxy cut its session).

--pool-max-lifetime 2s keeps the pool from hiding a rotation: an idle upstream connection is
not reused once 2 s old, so during a single-user window longer than that every new client
needs a new login, which the server refuses while the secret's current version is stale. A
probe client that needs a login is also started early in each long window.

Each scenario runs twice: with the secret file (--secret-file, polled every 200 ms) and with
Secrets Manager (--secret-id against the stand-in in tests/aws/standins.py, AWSCURRENT and
AWSPENDING stages, refreshed every second). With Secrets Manager, a login refused during a
single-user window makes credproxy fetch AWSPENDING and log in with it, so clients should not
even have to wait for finishSecret.
"""

import bisect
import random
import sys
import threading
import time
from pathlib import Path

import pymysql
from pymysql.constants import CLIENT

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws"))

import harness  # noqa: E402
import rotation_lambda  # noqa: E402
from aws_fixture import AKID, REGION, SECRET_KEY, SECRET_NAME, AwsTestCase  # noqa: E402
from harness import ProxyTestCase, connect, scalar, unique_name  # noqa: E402
from rotation_lambda import ALTERNATING_USERS, Rotation, sql_string  # noqa: E402

N_LONG = 8
N_CHURN = 4
TABLE_ROWS = 10
LOAD_TIME_LIMIT = 240.0  # the load threads stop by themselves after this, whatever happens
CONNECT_TIMEOUT = "10s"  # credproxy's; exceeds every pause inside a rotation window
# A client counts as "during a rotation" from setSecret until this long after finishSecret:
# credproxy sees the new file at its next poll (200 ms) or on the next refused login.
WINDOW_SLACK = 0.5


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))]


class Load:
    """Long-lived and short-lived PyMySQL clients querying through the proxy until stopped."""

    def __init__(self, port, table):
        self.port = port
        self.table = table
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.queries = 0
        self.connects = 0
        self.errors = []  # (monotonic time, what, repr of the exception)
        self.dropped = 0  # long-lived connections that had to be replaced
        self.samples = []  # (start, end) of each successful connect+query+close
        self.initial_ids = []
        self.conns = []
        self.threads = []
        self.started = None

    def _connect(self):
        return connect(self.port, autocommit=True, connect_timeout=30, read_timeout=30,
                       write_timeout=30)

    def error(self, what, exc):
        with self.lock:
            self.errors.append((time.monotonic(), what, repr(exc)))

    def start(self):
        self.started = time.monotonic()
        for _ in range(N_LONG):
            c = self._connect()
            self.initial_ids.append(scalar(c, "SELECT CONNECTION_ID()"))
            self.conns.append(c)
        for i in range(N_LONG):
            self.threads.append(threading.Thread(target=self._long, args=(i,), daemon=True))
        for i in range(N_CHURN):
            self.threads.append(threading.Thread(target=self._churn, args=(i,), daemon=True))
        for t in self.threads:
            t.start()

    def running(self):
        return (not self.stop_event.is_set()
                and time.monotonic() - self.started < LOAD_TIME_LIMIT)

    def _long(self, i):
        total = TABLE_ROWS * (TABLE_ROWS + 1) // 2
        n = 0
        while self.running():
            n += 1
            conn = self.conns[i]
            try:
                with conn.cursor() as cur:
                    if n % 2:
                        cur.execute("SELECT COUNT(*), SUM(v) FROM %s" % self.table)
                        row = cur.fetchone()
                        if tuple(row) != (TABLE_ROWS, total):
                            raise AssertionError("wrong result %r" % (row,))
                    else:
                        cur.execute("SELECT 1")
                        if cur.fetchone()[0] != 1:
                            raise AssertionError("SELECT 1 did not return 1")
                with self.lock:
                    self.queries += 1
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                self.error("long-lived client %d" % i, e)
                if isinstance(e, pymysql.err.MySQLError):
                    with self.lock:
                        self.dropped += 1
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                    try:
                        self.conns[i] = self._connect()
                        self.initial_ids[i] = None  # replaced: no longer the same session
                    except Exception as e2:  # noqa: BLE001
                        self.error("long-lived client %d reconnect" % i, e2)
                        time.sleep(0.2)
            self.stop_event.wait(0.01)

    def _churn(self, i):
        rnd = random.Random(i)
        while self.running():
            key = rnd.randint(1, TABLE_ROWS)
            t0 = time.monotonic()
            try:
                conn = self._connect()
                with self.lock:
                    self.connects += 1
                try:
                    got = scalar(conn, "SELECT v FROM %s WHERE id = %%s" % self.table, (key,))
                finally:
                    conn.close()
                if got != key:
                    raise AssertionError("wrong result %r for id %d" % (got, key))
                t1 = time.monotonic()
                with self.lock:
                    self.queries += 1
                    self.samples.append((t0, t1))
            except Exception as e:  # noqa: BLE001
                self.error("short-lived client %d" % i, e)
                time.sleep(0.05)
            self.stop_event.wait(0.02)

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(60)
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            raise AssertionError("load threads did not stop: %s" % stuck)

    def final_ids(self):
        """CONNECTION_ID() of each long-lived connection now; closes them."""
        ids = []
        for i, c in enumerate(self.conns):
            try:
                ids.append(scalar(c, "SELECT CONNECTION_ID()"))
            except Exception as e:  # noqa: BLE001
                self.error("long-lived client %d final check" % i, e)
                ids.append(None)
            finally:
                c.close()
        return ids


class RotationTests:
    """The scenarios; a subclass picks the secret source (start_proxy_for, store_for)."""

    PROXY_ARGS = ("--connect-timeout", CONNECT_TIMEOUT, "--workers", "2",
                  "--pool-max-lifetime", "2s")
    # True when new logins must wait out a single-user window (the file has no AWSPENDING).
    WAITS_OUT_WINDOWS = True

    def setUp(self):
        super().setUp()
        self.user = unique_name("rot")
        self.clone = self.user + rotation_lambda.CLONE_SUFFIX
        self.table = self.user + "_t"
        pw = rotation_lambda.new_password()
        self.fixture.root_sql(
            "CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY %s;"
            "GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO '%s'@'127.0.0.1';"
            "CREATE TABLE app.%s (id INT PRIMARY KEY, v INT NOT NULL);"
            "INSERT INTO app.%s VALUES %s;"
            % (self.user, sql_string(pw), self.user, self.table, self.table,
               ",".join("(%d,%d)" % (i, i) for i in range(1, TABLE_ROWS + 1))))
        self.addCleanup(self.fixture.root_sql,
                        "DROP USER IF EXISTS '%s'@'127.0.0.1', '%s'@'127.0.0.1';"
                        "DROP TABLE IF EXISTS app.%s" % (self.user, self.clone, self.table))
        self.secret = dict(self.fixture.secret(), username=self.user, password=pw)
        self.proxy = self.start_proxy_for(self.secret)
        self.rotation = Rotation(self.store_for(self.proxy), self.fixture.root_sql,
                                 self.fixture.port, on_password=self.proxy.passwords.add)
        self.load = Load(self.proxy.port, self.table)
        self.load.start()
        self.addCleanup(self.load.stop_event.set)
        time.sleep(1.0)  # some samples before the first rotation

    def whoami(self):
        conn = connect(self.proxy.port, autocommit=True, read_timeout=30)
        try:
            return scalar(conn, "SELECT CURRENT_USER()")
        finally:
            conn.close()

    def wait_new_logins_use(self, username, timeout=6.0):
        """New clients end up on username's connections once the proxy has the new version."""
        want = "%s@127.0.0.1" % username
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.whoami()
            if got == want:
                return
            time.sleep(0.1)
        self.fail("%.0fs after finishSecret new clients still log in as %s, not %s"
                  % (timeout, got, want))

    def finish_load(self, title, windows, long_windows=()):
        """Stops the load, prints the counts and latencies, asserts no error and no drop."""
        time.sleep(1.0)  # some samples after the last rotation
        self.load.stop()
        final = self.load.final_ids()
        load = self.load
        starts = [w[0] for w in windows]

        def in_window(t0, t1, wins=windows, st=starts):
            k = bisect.bisect_right(st, t1)  # windows starting before the sample ended
            return any(wins[j][1] + WINDOW_SLACK >= t0 for j in range(max(0, k - 2), k))

        inside = sorted(t1 - t0 for t0, t1 in load.samples if in_window(t0, t1))
        outside = sorted(t1 - t0 for t0, t1 in load.samples if not in_window(t0, t1))
        long_starts = [w[0] for w in long_windows]
        in_long = sorted(t1 - t0 for t0, t1 in load.samples
                         if long_windows and in_window(t0, t1, long_windows, long_starts))
        ms = lambda v: v * 1000.0  # noqa: E731
        report = (
            "\n[%s] %d rotations in %.1fs: %d queries, %d connects, %d errors, %d dropped "
            "long-lived connections\n"
            "  connect+query latency during rotation windows: p50 %.1f ms, p99 %.1f ms, "
            "max %.1f ms (n=%d)\n"
            "  connect+query latency outside windows:         p50 %.1f ms, p99 %.1f ms, "
            "max %.1f ms (n=%d)\n"
            % (title, len(windows), time.monotonic() - load.started, load.queries,
               load.connects, len(load.errors), load.dropped,
               ms(percentile(inside, .5)), ms(percentile(inside, .99)),
               ms(inside[-1] if inside else float("nan")), len(inside),
               ms(percentile(outside, .5)), ms(percentile(outside, .99)),
               ms(outside[-1] if outside else float("nan")), len(outside)))
        if long_windows:
            report += ("  during the %d long windows: max %.1f ms, %d clients waited > 500 ms\n"
                       % (len(long_windows), ms(in_long[-1]) if in_long else float("nan"),
                          sum(1 for v in in_long if v > 0.5)))
        slow = sorted(((t1 - t0, t0, t1) for t0, t1 in load.samples), reverse=True)[:3]
        report += "  slowest: %s\n" % ", ".join(
            "%.0f ms from +%.2fs" % (ms(d), t0 - load.started) for d, t0, t1 in slow)
        report += "  windows over 1 s: %s\n" % ", ".join(
            "+%.2f..+%.2f" % (a - load.started, b - load.started)
            for a, b in windows if b - a > 1.0)
        sys.stderr.write(report)
        if load.errors:
            first = "\n".join("  +%.2fs %s: %s" % (t - load.started, what, err)
                              for t, what, err in load.errors[:15])
            self.fail("%d client-visible errors during rotations (first ones below)\n%s"
                      % (len(load.errors), first))
        self.assertEqual(load.dropped, 0, "long-lived connections were dropped")
        cut = [(i, a, b) for i, (a, b) in enumerate(zip(load.initial_ids, final)) if a != b]
        self.assertEqual(cut, [], "long-lived sessions moved to another upstream connection "
                         "(index, CONNECTION_ID before, after): open sessions were cut")
        self.assertGreater(len(load.samples), 50, "too little load to mean anything")
        self.assertTrue(self.proxy.alive(), "credproxy died")
        return in_long

    def start_probe(self, delay):
        """A client that connects delay seconds from now and asks who it is; (thread, result).

        It asks for FOUND_ROWS, which the load's clients do not, so no pooled connection
        matches it (and the previous probe's is past --pool-max-lifetime): it needs a login.
        """
        result = {}

        def run():
            time.sleep(delay)
            result["start"] = time.monotonic()
            try:
                conn = connect(self.proxy.port, client_flag=CLIENT.FOUND_ROWS, autocommit=True,
                               connect_timeout=30, read_timeout=30)
                try:
                    result["user"] = scalar(conn, "SELECT CURRENT_USER()")
                finally:
                    conn.close()
            except Exception as e:  # noqa: BLE001
                result["error"] = e
            result["end"] = time.monotonic()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, result

    def finish_probe(self, probe, what):
        t, result = probe
        t.join(30)
        self.assertFalse(t.is_alive(), "the probe client %s still waits" % what)
        self.assertNotIn("error", result, "the probe client %s failed" % what)
        self.assertEqual(result["user"], "%s@127.0.0.1" % self.user)
        return result

    def check_window_probe(self, probe, finish_at, pause):
        """A new login inside a single-user window: when it may complete depends on the source."""
        what = "in a %.0f s single-user window" % pause
        result = self.finish_probe(probe, what)
        took = result["end"] - result["start"]
        if self.WAITS_OUT_WINDOWS:
            # The file has only the old password, which the server refuses: the login must
            # wait for finishSecret, and then succeed.
            self.assertGreater(result["end"], finish_at, "the probe %s logged in before "
                               "finishSecret: the window was not exercised" % what)
        elif pause >= 3.0:
            # AWSPENDING has the new password: the refused login is retried with it at once
            # (credproxy reads Secrets Manager at most once a second), long before finishSecret.
            self.assertLess(result["end"], finish_at, "the probe %s waited %.1f s, until "
                            "finishSecret: AWSPENDING was not used" % (what, took))

    def test_single_user_rotations(self):
        # 20 rotations; most with a short window, three with 2-4 s inside the window (AWS's
        # steps are separate Lambda invocations). connect_timeout (10 s) exceeds every pause.
        # A probe client logs in early in each long window.
        long_pauses = {4: 2.0, 10: 3.0, 16: 4.0}
        long_windows = []
        r = self.rotation
        for i in range(20):
            if i not in long_pauses:
                r.rotate(window_pause=0.2)
            else:
                pause = long_pauses[i]
                r.create_secret()
                r.set_secret()
                probe = self.start_probe(0.3)
                time.sleep(pause * 0.75)
                r.test_secret()
                time.sleep(pause * 0.25)
                finish_at = time.monotonic()
                r.finish_secret()
                long_windows.append(r.windows[-1])
                self.check_window_probe(probe, finish_at, pause)
            time.sleep(0.4)
        self.assertEqual(self.whoami(), "%s@127.0.0.1" % self.user)
        r.login(r.current()).close()  # the source matches the server
        self.finish_load("%s, single user" % self.SOURCE, r.windows, long_windows)

    def test_alternating_user_rotations(self):
        self.rotation.strategy = ALTERNATING_USERS
        users = []
        for _ in range(20):
            pending = self.rotation.rotate(window_pause=0.2)
            users.append(pending["username"])
            self.wait_new_logins_use(pending["username"])
            time.sleep(0.3)
        self.assertEqual(users[:2], [self.clone, self.user])
        self.finish_load("%s, alternating users" % self.SOURCE, self.rotation.windows)

    def test_failed_rotations(self):
        # (a) The Lambda fails at testSecret: createSecret made a pending version, setSecret
        # never got its password to the server (here: not called), testSecret fails, and
        # finishSecret is never called. With Secrets Manager the wrong AWSPENDING stays behind
        # (as in AWS) and credproxy loads it; it must keep logging in with AWSCURRENT. With the
        # file source the pending version never reaches credproxy at all.
        self.rotation.create_secret()
        with self.assertRaises(rotation_lambda.TestSecretFailed):
            self.rotation.test_secret()
        self.rotation.abandon()
        if not self.WAITS_OUT_WINDOWS:
            self.assertTrue(self.proxy.wait_log("AWSPENDING version", 10),
                            "credproxy never loaded the failed rotation's AWSPENDING")
        time.sleep(3.0)  # new logins (pool lifetime 2 s) happen with the stale AWSPENDING there

        # (b) A wrong password becomes current: finishSecret ran although setSecret had failed
        # (or an operator published a bad value), so AWSCURRENT holds a password the server
        # never had. New logins are refused; credproxy re-reads and retries until
        # connect_timeout, and the last good version is restored 3 s later (well within
        # connect_timeout), as a rollback would. Clients must see only a delay, never a 1045.
        bad = dict(self.rotation.current(), password=rotation_lambda.new_password())
        self.proxy.passwords.add(bad["password"])
        start = time.monotonic()
        loads = self.proxy.log().count("loaded new credentials")
        undo = self.rotation.store.replace_current(bad)
        deadline = time.monotonic() + 10
        while self.proxy.log().count("loaded new credentials") == loads:  # proxy has it now
            self.assertLess(time.monotonic(), deadline, "credproxy never loaded the bad version")
            time.sleep(0.05)
        probe = self.start_probe(0.1)
        time.sleep(max(0.0, 3.0 - (time.monotonic() - start)))
        undo_at = time.monotonic()
        undo()
        window = (start, time.monotonic())
        result = self.finish_probe(probe, "while AWSCURRENT held a wrong password")
        self.assertGreater(result["end"], undo_at, "the probe logged in with the wrong "
                           "password?! (the bad version was not exercised)")
        self.assertEqual(self.whoami(), "%s@127.0.0.1" % self.user)

        # And a correct rotation afterwards still works.
        self.rotation.rotate(window_pause=0.5)
        self.finish_load("%s, failed rotations" % self.SOURCE, [window] + self.rotation.windows,
                         [window])


class FileSource(RotationTests, ProxyTestCase):
    SOURCE = "secret file"

    def start_proxy_for(self, secret):
        return self.start_proxy("--secret-poll-interval", "200ms", *self.PROXY_ARGS,
                                secret=secret)

    def store_for(self, proxy):
        return rotation_lambda.SecretFile(proxy.secret_file)


class SecretsManagerSource(RotationTests, AwsTestCase):
    SOURCE = "Secrets Manager"
    WAITS_OUT_WINDOWS = False

    def start_proxy_for(self, secret):
        self.secret_values.add(secret["password"])
        self.sm.put(SECRET_NAME, secret)
        return self.aws_proxy("--secret-refresh", "1s", *self.PROXY_ARGS)

    def store_for(self, proxy):
        store = rotation_lambda.SecretsManager(SECRET_NAME, REGION, self.sm.url, AKID, SECRET_KEY)
        self.addCleanup(store.close)
        return store


if __name__ == "__main__":
    harness.main()
