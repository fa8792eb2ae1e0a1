#!/usr/bin/python3
"""Real drivers end to end: Connector/J, node mysql2, Go's go-sql-driver/mysql, and MySQL 8-style
logins that answer the greeting with caching_sha2_password (or sha256_password, client_ed25519)
first.

Each driver runs the same program (tests/integration/drivers/): it logs in with no password
(trust mode), creates a table, inserts rows with a prepared statement in a transaction and
commits, rolls back a second transaction, reads the rows back with a prepared SELECT checked
value by value (NULLs, a 70000-byte BLOB), then prints "IDLE <CONNECTION_ID()>" and waits. The
test kills that upstream connection as root, and the program goes on, on the same client
connection, with the statements it prepared before (server-side: Connector/J with
useServerPrepStmts=true, mysql2's prepare(), go-sql-driver with interpolateParams=false): it
must see no error, and CONNECTION_ID() must have changed (a new upstream connection). Every
program is first run straight against MariaDB (without the kill) to prove the program right.

What the drivers need: Debian's default-jdk-headless and libmariadb-java, golang-go and
golang-github-go-sql-driver-mysql-dev (built with GO111MODULE=off from /usr/share/gocode),
nodejs with npm, and the npm registry for mysql2 (the version pinned by
drivers/node/package-lock.json, installed with `npm ci` into a cache outside the repository:
CREDPROXY_DRIVER_CACHE, default /tmp/credproxy-drivers-cache). When the registry cannot be
reached the node test is skipped, loudly; with CI set in the environment it fails instead.
"""

import hashlib
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness
from harness import ProxyTestCase, connect, unique_name

DRIVERS = Path(__file__).resolve().parent / "drivers"
CACHE = Path(os.environ.get("CREDPROXY_DRIVER_CACHE") or "/tmp/credproxy-drivers-cache")
CONNECTOR_J = Path("/usr/share/java/mariadb-java-client.jar")
GOPATH = Path("/usr/share/gocode")
GO_DRIVER = GOPATH / "src" / "github.com" / "go-sql-driver" / "mysql"
ROWS = 100
LINE_TIMEOUT = 120  # seconds for one step of a driver program (a cold JVM on a loaded machine)
DEPS_HINT = "install the driver packages: tests/run-all.sh --deps-only (as root)"
NPM_UNREACHABLE = re.compile(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ECONNRESET|"
                             r"ENETUNREACH|EHOSTUNREACH|network|socket hang up", re.I)


def need(path, what):
    if not (shutil.which(path) if "/" not in str(path) else Path(path).exists()):
        raise AssertionError("%s (%s) not found; %s" % (what, path, DEPS_HINT))


def run_build(argv, what, timeout=600, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    if p.returncode != 0:
        raise AssertionError("%s failed (exit %d): %s\n%s%s" % (what, p.returncode,
                                                               " ".join(map(str, argv)),
                                                               p.stdout, p.stderr))
    return p


def wait_upstream_known(test, proxy):
    """Waits until credproxy greets with the upstream's version (and so its capabilities)."""
    direct = test.fixture.direct(test.fixture.secret())
    want = direct.get_server_info()
    direct.close()
    deadline = time.monotonic() + 20
    while True:
        conn = connect(proxy.port)
        got = conn.get_server_info()
        conn.close()
        if got == want:
            return
        if time.monotonic() > deadline:
            test.fail("credproxy still greets as %r, not the upstream's %r" % (got, want))
        time.sleep(0.1)


class DriverProcess:
    """One run of a driver program: its output read line by line, stdin to let it go on."""

    def __init__(self, argv, env, cwd=None):
        self.argv = [str(a) for a in argv]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     env=harness.client_env(env), cwd=cwd)
        self.output = []
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.output.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def transcript(self):
        return "\n".join(self.output) or "(no output)"

    def expect(self, prefix, timeout=LINE_TIMEOUT):
        """Waits for a line starting with prefix (other lines, e.g. driver warnings, pass)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("%s printed no %r within %.0fs:\n%s"
                                     % (self.argv[0], prefix, timeout, self.transcript())) from None
            if line is None or line.startswith("FAIL"):
                self.finish(10)
                raise AssertionError("%s failed before %r (exit %s):\n%s"
                                     % (self.argv[0], prefix, self.proc.returncode,
                                        self.transcript()))
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def go_on(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout=LINE_TIMEOUT):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(10)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        return self.proc.returncode

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish(10)


class DriverTests:
    """The workload of one driver, directly against MariaDB and through credproxy.

    A mixin (so unittest does not collect it): class X(DriverTests, ProxyTestCase).
    """

    label = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.build_dir = Path(tempfile.mkdtemp(prefix="drivers-%s." % cls.label,
                                              dir=cls.fixture.dir))
        started = time.monotonic()
        cls.build()
        print("%s: program ready in %.1fs" % (cls.label, time.monotonic() - started),
              file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.build_dir, ignore_errors=True)
        super().tearDownClass()

    @classmethod
    def build(cls):
        raise NotImplementedError

    def command(self):
        raise NotImplementedError

    def extra_env(self):
        return {}

    def start(self, port, user, password, database):
        table = unique_name("drv_" + self.label)
        env = {"DRIVER_HOST": "127.0.0.1", "DRIVER_PORT": str(port), "DRIVER_USER": user,
               "DRIVER_PASSWORD": password, "DRIVER_DB": database, "DRIVER_TABLE": table,
               "DRIVER_ROWS": str(ROWS)}
        env.update(self.extra_env())
        self.addCleanup(self.fixture.root_sql, "DROP TABLE IF EXISTS %s.%s" % (database, table))
        p = DriverProcess(self.command(), env, cwd=self.build_dir)
        self.addCleanup(p.stop)  # runs before the DROP above
        return p

    def finish(self, p, passwords=()):
        rc = p.finish()
        out = p.transcript()
        harness.assert_no_secret(out, passwords, "%s output" % self.label)
        self.assertEqual(rc, 0, "%s exited %d:\n%s" % (self.label, rc, out))
        self.assertIn("DONE", p.output, out)
        self.assertFalse([line for line in p.output if line.startswith("FAIL")], out)

    def upstream_user(self, cid):
        rows = self.fixture.root_sql("SELECT USER FROM information_schema.PROCESSLIST "
                                     "WHERE ID = %d" % cid)
        return rows[0][0] if rows else None

    def kill_upstream(self, cid):
        """KILL CONNECTION cid as root (unix socket); returns when the server has dropped it."""
        self.fixture.root_sql("KILL CONNECTION %d" % cid)
        deadline = time.monotonic() + 10
        while self.upstream_user(cid) is not None:
            if time.monotonic() > deadline:
                self.fail("killed connection %d still listed after 10s" % cid)
            time.sleep(0.05)
        time.sleep(0.5)  # let credproxy see the connection close while the client is idle

    def stmt_counters(self):
        rows = self.fixture.root_sql("SHOW GLOBAL STATUS WHERE Variable_name IN "
                                     "('Com_stmt_prepare', 'Com_stmt_execute')")
        return {name: int(value) for name, value in rows}

    def test_direct(self):
        """The program straight against MariaDB (no kill): proves the program and the fixture.

        Also that the driver prepares on the server (COM_STMT_PREPARE / COM_STMT_EXECUTE), so
        the run through credproxy does too.
        """
        secret = self.fixture.secret()
        counters = self.stmt_counters()
        p = self.start(self.fixture.port, secret["username"], secret["password"],
                       secret["dbname"])
        before = int(p.expect("IDLE"))
        p.go_on()
        self.assertEqual(int(p.expect("AFTER")), before)
        self.finish(p, [secret["password"]])
        now = self.stmt_counters()
        executed = now["Com_stmt_execute"] - counters["Com_stmt_execute"]
        self.assertGreaterEqual(now["Com_stmt_prepare"] - counters["Com_stmt_prepare"], 2)
        self.assertGreaterEqual(executed, ROWS + 10, "the driver did not use server-side "
                                "prepared statements (%d COM_STMT_EXECUTE)" % executed)

    def test_through_proxy_with_kill(self):
        """Trust mode, the workload, the upstream killed while idle, the same statements again."""
        secret = self.fixture.secret()
        proxy = self.start_proxy()
        wait_upstream_known(self, proxy)
        p = self.start(proxy.port, "x", "", secret["dbname"])
        before = int(p.expect("IDLE"))
        self.assertEqual(self.upstream_user(before), secret["username"],
                         "CONNECTION_ID() %d through credproxy is not an upstream connection of "
                         "the secret's user" % before)
        self.kill_upstream(before)
        p.go_on()
        after = int(p.expect("AFTER"))
        self.assertNotEqual(after, before, "still on the killed connection?")
        print("%s: upstream connection %d killed while idle; went on on %d"
              % (self.label, before, after), file=sys.stderr)
        self.finish(p, [secret["password"]])
        self.assertTrue(proxy.alive())


class ConnectorJ(DriverTests, ProxyTestCase):
    """MariaDB Connector/J (Debian's libmariadb-java) with useServerPrepStmts=true."""

    label = "j"

    @classmethod
    def build(cls):
        need("javac", "javac (default-jdk-headless)")
        need("java", "java (default-jdk-headless)")
        need(CONNECTOR_J, "Connector/J (libmariadb-java)")
        run_build(["javac", "-cp", CONNECTOR_J, "-d", cls.build_dir,
                   DRIVERS / "DriverTest.java"], "javac")

    def command(self):
        return ["java", "-cp", "%s:%s" % (self.build_dir, CONNECTOR_J), "DriverTest"]


class Mysql2(DriverTests, ProxyTestCase):
    """node mysql2 (npm, the version pinned in drivers/node/package-lock.json)."""

    label = "n"
    modules = None

    @classmethod
    def build(cls):
        need("node", "node (nodejs)")
        need("npm", "npm")
        src = DRIVERS / "node"
        lock = (src / "package-lock.json").read_bytes() + (src / "package.json").read_bytes()
        target = CACHE / ("npm-" + hashlib.sha256(lock).hexdigest()[:16])
        if not (target / "node_modules" / "mysql2" / "package.json").is_file():
            CACHE.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".npm.", dir=CACHE))
            for name in ("package.json", "package-lock.json"):
                shutil.copy(src / name, tmp / name)
            p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--cache",
                                str(CACHE / "npm-cache")], cwd=tmp, capture_output=True,
                               text=True, timeout=300, stdin=subprocess.DEVNULL)
            if p.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                out = p.stdout + p.stderr
                if NPM_UNREACHABLE.search(out) and not os.environ.get("CI"):
                    cls.npm_unreachable = out
                    print("\n" + "!" * 78 + "\n!!! node mysql2 test SKIPPED: the npm registry is "
                          "unreachable (npm ci failed):\n%s\n" % out.strip() + "!" * 78,
                          file=sys.stderr)
                    return
                raise AssertionError("npm ci for mysql2 failed (exit %d):\n%s"
                                     % (p.returncode, out))
            try:
                tmp.rename(target)
            except OSError:  # another run installed it meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
        cls.modules = target / "node_modules"

    def setUp(self):
        if self.modules is None:
            self.skipTest("the npm registry is unreachable, mysql2 could not be installed:\n"
                          + getattr(self, "npm_unreachable", ""))
        super().setUp()

    def command(self):
        return ["node", DRIVERS / "node" / "driver_test.js"]

    def extra_env(self):
        return {"NODE_PATH": str(self.modules)}


class GoSqlDriver(DriverTests, ProxyTestCase):
    """Go database/sql with go-sql-driver/mysql (Debian's), interpolateParams=false."""

    label = "g"

    @classmethod
    def build(cls):
        need("go", "go (golang-go)")
        need(GO_DRIVER, "go-sql-driver/mysql (golang-github-go-sql-driver-mysql-dev)")
        env = harness.client_env({"GO111MODULE": "off", "GOPATH": str(GOPATH),
                                  "GOFLAGS": "", "GOCACHE": str(CACHE / "go-build"),
                                  "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"})
        run_build(["go", "build", "-o", cls.build_dir / "driver_test_go",
                   DRIVERS / "go" / "driver_test_go.go"], "go build", env=env)

    def command(self):
        return [self.build_dir / "driver_test_go"]


PLUGINS = ("caching_sha2_password", "sha256_password", "client_ed25519")


def sha2_first_program():
    path = Path(os.environ.get("CREDPROXY_SHA2_FIRST")
                or harness.ROOT / "build" / "tests" / "integration" / "sha2_first")
    if not os.access(path, os.X_OK):
        raise AssertionError("sha2_first %s not found; build it or set CREDPROXY_SHA2_FIRST"
                             % path)
    return str(path)


class OtherPluginFirst(ProxyTestCase):
    """MySQL 8-style clients: Connector/C and the mariadb CLI with --default-auth=PLUGIN.

    credproxy greets with mysql_native_password; a client answering with another plugin's
    data first must be switched (AuthSwitchRequest), as MariaDB and MySQL do.
    """

    def sha2_first(self, port, plugin, *args, password=None):
        env = {"SHA2_FIRST_PASSWORD": password} if password else {}
        p = subprocess.run([sha2_first_program(), "127.0.0.1", str(port), plugin] + list(args),
                           capture_output=True, text=True, timeout=harness.CLIENT_TIMEOUT,
                           stdin=subprocess.DEVNULL, env=harness.client_env(env))
        return p.returncode, (p.stdout + p.stderr).strip()

    def test_direct(self):
        """The same logins straight to MariaDB, with the secret's password: the clients work."""
        secret = self.fixture.secret()
        for plugin in PLUGINS:
            with self.subTest(plugin=plugin):
                rc, out = self.sha2_first(self.fixture.port, plugin, secret["username"],
                                          secret["dbname"], password=secret["password"])
                self.assertEqual(rc, 0, out)
                self.assertRegex(out, r"^OK %s@" % re.escape(secret["username"]))
                p = harness.mariadb_cli("SELECT 1", port=self.fixture.port,
                                        user=secret["username"],
                                        extra=["--default-auth=" + plugin],
                                        env={"MYSQL_PWD": secret["password"]})
                self.assertEqual((p.returncode, p.stdout.strip()), (0, "1"), p.stderr)

    def test_through_proxy_trust(self):
        secret = self.fixture.secret()
        proxy = self.start_proxy()
        for plugin in PLUGINS:
            with self.subTest(plugin=plugin, client="Connector/C"):
                rc, out = self.sha2_first(proxy.port, plugin)
                self.assertEqual(rc, 0, "Connector/C with MYSQL_DEFAULT_AUTH=%s: %s"
                                 % (plugin, out))
                self.assertRegex(out, r"^OK %s@" % re.escape(secret["username"]))
            with self.subTest(plugin=plugin, client="mariadb CLI"):
                p = harness.mariadb_cli("SELECT 1", port=proxy.port, user="x",
                                        extra=["--default-auth=" + plugin])
                self.assertEqual((p.returncode, p.stdout.strip()), (0, "1"),
                                 "mariadb --default-auth=%s: %s" % (plugin, p.stderr.strip()))
        self.assertTrue(proxy.alive())


if __name__ == "__main__":
    harness.main()
