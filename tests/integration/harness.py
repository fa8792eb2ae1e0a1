"""Shared pieces of the integration tests: the MariaDB fixture, a running credproxy, real clients.

The tests run with /usr/bin/python3 (Debian's, which has python3-pymysql). They need the
server started by tests/mariadb.sh; tests/run-all.sh starts it and exports its env.sh:

    CREDPROXY_TEST_DIR          the fixture directory (secrets, TLS files, the server's socket)
    CREDPROXY_TEST_MYSQL_PORT   the server's TCP port on 127.0.0.1
    CREDPROXY_TEST_MYSQL_SOCKET the server's unix socket
    CREDPROXY_BIN               the credproxy binary (ctest sets it; default build/proxy/credproxy)
    CREDPROXY_CLIENT_TEST       the Connector/C test program
                                (default build/tests/integration/client_test)

Every proxy a test starts is stopped with SIGTERM when the test ends; the test then fails if
the proxy did not exit 0, if a sanitizer reported anything, or if any password it was given
appears in its log. When a test fails, the logs of its proxies are printed.
"""

import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parents[2]

# Waits are bounded; sanitizer builds are slower, so the bounds are generous.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
CLIENT_TIMEOUT = 60

SANITIZER_MARKERS = (
    b"ERROR: AddressSanitizer",
    b"ERROR: LeakSanitizer",
    b"runtime error:",
    b"SUMMARY: UndefinedBehaviorSanitizer",
    b"WARNING: ThreadSanitizer",
    b"ERROR: ThreadSanitizer",
)

# MySQL error codes the tests look for.
ER_DBACCESS_DENIED = 1044
ER_ACCESS_DENIED = 1045
ER_BAD_DB = 1049
ER_PARSE_ERROR = 1064
CR_CONN_HOST_ERROR = 2003
CR_SERVER_LOST = 2013
# What credproxy sends instead of the client-range codes above (which libmariadb would turn into
# 2027 malformed packet): cannot reach / log in to the database, and lost the connection.
ER_CONNECT_TO_FOREIGN_DATA_SOURCE = 1429
ER_ABORTING_CONNECTION = 1152


class Fixture:
    """The MariaDB server started by tests/mariadb.sh, as described by its env.sh."""

    def __init__(self):
        names = ("CREDPROXY_TEST_DIR", "CREDPROXY_TEST_MYSQL_PORT", "CREDPROXY_TEST_MYSQL_SOCKET")
        missing = [v for v in names if not os.environ.get(v)]
        if missing:
            raise AssertionError(
                "%s not set: the integration tests need the MariaDB fixture. Run tests/run-all.sh, "
                "or `tests/mariadb.sh start DIR PORT && . DIR/env.sh` first." % ", ".join(missing)
            )
        self.dir = Path(os.environ["CREDPROXY_TEST_DIR"])
        self.port = int(os.environ["CREDPROXY_TEST_MYSQL_PORT"])
        self.socket = os.environ["CREDPROXY_TEST_MYSQL_SOCKET"]
        self.tls = self.dir / "tls"
        if not (self.dir / "secret.json").is_file():
            raise AssertionError("%s has no secret.json; is the fixture started?" % self.dir)

    def secret_path(self, name="secret.json"):
        return self.dir / name

    def secret(self, name="secret.json"):
        """The parsed secret file name from the fixture directory."""
        with open(self.dir / name) as f:
            return json.load(f)

    def has_secret(self, name):
        return (self.dir / name).is_file()

    def root_sql(self, sql):
        """Runs SQL as root on the server's unix socket (SQL on stdin); returns rows of strings."""
        p = subprocess.run(
            ["mariadb", "--no-defaults", "--socket=" + self.socket, "--user=root", "--batch",
             "--skip-column-names"],
            input=sql, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, env=client_env(),
        )
        if p.returncode != 0:
            raise AssertionError("root SQL failed (%d): %s\n%s" % (p.returncode, p.stderr, sql))
        return [line.split("\t") for line in p.stdout.splitlines()]

    def direct(self, secret, **kw):
        """A PyMySQL connection straight to the server with a secret's credentials."""
        kw.setdefault("connect_timeout", 10)
        return pymysql.connect(host="127.0.0.1", port=self.port, user=secret["username"],
                               password=secret["password"], database=secret.get("dbname"),
                               charset="utf8mb4", **kw)


def binary():
    path = Path(os.environ.get("CREDPROXY_BIN") or ROOT / "build" / "proxy" / "credproxy")
    if not os.access(path, os.X_OK):
        raise AssertionError("credproxy binary %s not found; build it or set CREDPROXY_BIN" % path)
    return str(path)


def client_test_program():
    path = Path(os.environ.get("CREDPROXY_CLIENT_TEST")
                or ROOT / "build" / "tests" / "integration" / "client_test")
    if not os.access(path, os.X_OK):
        raise AssertionError("client_test %s not found; build it or set CREDPROXY_CLIENT_TEST"
                             % path)
    return str(path)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(extra=None):
    """The environment for client programs: no MYSQL_PWD or option files leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSQL_")}
    env.update(extra or {})
    return env


def write_json_atomic(path, data):
    """Writes data as JSON to path by writing a temporary file and renaming it (mode 600)."""
    path = Path(path)
    tmp = path.with_name(".%s.tmp" % path.name)
    text = data if isinstance(data, str) else json.dumps(data)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def log_tail(path, limit=60):
    try:
        lines = Path(path).read_bytes().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-limit:])


class Proxy:
    """A credproxy process with its own copy of a secret file and a log file."""

    def __init__(self, workdir, args, secret, listen=True, socket_path=None):
        self.workdir = Path(workdir)
        self.args = list(args)
        self.port = free_port() if listen else None
        self.socket = socket_path
        self.secret_file = self.workdir / "secret.json"
        self.log_path = self.workdir / "credproxy.log"
        self.passwords = set()  # every password this proxy was given; none may reach its log
        self.proc = None
        self.returncode = None
        self.write_secret(secret)

    def argv(self):
        argv = [binary(), "--secret-file", str(self.secret_file), "--log-level", "debug"]
        # SIGTERM drains (test_drain.py): bound it well inside STOP_TIMEOUT; a test's own wins.
        argv += ["--shutdown-timeout", "5s"]
        if self.port:
            argv += ["--listen", "127.0.0.1:%d" % self.port]
        if self.socket:
            argv += ["--socket", str(self.socket)]
        return argv + self.args

    def write_secret(self, secret):
        """Replaces the proxy's secret file atomically; secret is a dict or raw JSON text."""
        if isinstance(secret, dict) and secret.get("password"):
            self.passwords.add(secret["password"])
        write_json_atomic(self.secret_file, secret)

    def start(self):
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir)
        finally:
            log.close()
        self.wait_ready()
        return self

    def _endpoints(self):
        if self.port:
            yield socket.AF_INET, ("127.0.0.1", self.port)
        if self.socket:
            yield socket.AF_UNIX, str(self.socket)

    def wait_ready(self, timeout=START_TIMEOUT):
        """Waits until every listener accepts a connection; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        pending = list(self._endpoints())
        while pending:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("credproxy exited with %d during start-up:\n%s"
                                     % (rc, log_tail(self.log_path)))
            family, addr = pending[0]
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(1)
                    s.connect(addr)
                pending.pop(0)
                continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("credproxy did not accept on %s within %.0fs:\n%s"
                                     % (addr, timeout, log_tail(self.log_path)))
            time.sleep(0.05)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, expect_rc=0):
        """SIGTERM, then checks the exit code, sanitizer reports and that no password was logged."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("credproxy did not exit within %.0fs of SIGTERM"
                                     % STOP_TIMEOUT)
        self.returncode = self.proc.returncode
        self.check_log()
        if expect_rc is not None and self.returncode != expect_rc:
            raise AssertionError("credproxy exited with %d after SIGTERM, expected %d:\n%s"
                                 % (self.returncode, expect_rc, log_tail(self.log_path)))

    def log(self):
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def check_log(self):
        """Fails when the log holds a sanitizer report or any password this proxy was given."""
        data = self.log_path.read_bytes()
        for marker in SANITIZER_MARKERS:
            if marker in data:
                raise AssertionError("sanitizer report in the credproxy log:\n%s"
                                     % log_tail(self.log_path, 120))
        assert_no_secret(data, self.passwords, "credproxy log")

    def wait_log(self, text, timeout=10.0):
        """Waits until text appears in the log; returns whether it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            time.sleep(0.05)
        return False


def assert_no_secret(data, passwords, what):
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    for pw in passwords:
        if pw and pw.encode() in data:
            raise AssertionError("a password appears in the %s" % what)


def run_proxy_once(workdir, args, timeout=15.0):
    """Runs credproxy expecting it to exit by itself (bad config, --check-config)."""
    p = subprocess.Popen([binary()] + list(args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError("credproxy %s still ran after %.0fs (expected it to exit):\n%s"
                             % (" ".join(args), timeout, (out + err).decode("utf-8", "replace")))
    return subprocess.CompletedProcess(p.args, p.returncode, out.decode("utf-8", "replace"),
                                       err.decode("utf-8", "replace"))


def mariadb_cli(sql, port=None, socket_path=None, user="anyone", database=None, extra=(),
                env=None, timeout=CLIENT_TIMEOUT):
    """Runs the mariadb CLI with -e sql, no password unless env has MYSQL_PWD."""
    argv = ["mariadb", "--no-defaults", "--batch", "--skip-column-names", "--connect-timeout=10",
            "--user=" + user]
    if socket_path:
        argv += ["--protocol=socket", "--socket=" + str(socket_path)]
    else:
        argv += ["--protocol=tcp", "--host=127.0.0.1", "--port=%d" % port]
    if database:
        argv += ["--database=" + database]
    argv += list(extra) + ["-e", sql]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=client_env(env), stdin=subprocess.DEVNULL)


def connect(port=None, socket_path=None, user="anyone", password="", database=None, **kw):
    """A PyMySQL connection to credproxy (no password by default)."""
    kw.setdefault("connect_timeout", 10)
    kw.setdefault("read_timeout", CLIENT_TIMEOUT)
    kw.setdefault("charset", "utf8mb4")
    if socket_path:
        return pymysql.connect(unix_socket=str(socket_path), user=user, password=password,
                               database=database, **kw)
    return pymysql.connect(host="127.0.0.1", port=port, user=user, password=password,
                           database=database, **kw)


def scalar(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
        return row[0] if row else None


def recv_exact(sock, n):
    """Reads n bytes; returns fewer only when the peer closed the connection."""
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        buf += chunk
    return buf


def recv_packet(sock):
    """Reads one MySQL packet: (sequence id, payload), or None when the peer closed first."""
    head = recv_exact(sock, 4)
    if len(head) < 4:
        return None
    length = int.from_bytes(head[:3], "little")
    payload = recv_exact(sock, length)
    if len(payload) < length:
        return None
    return head[3], payload


def recv_until_closed(sock, limit=1 << 20):
    """Reads until EOF (or ECONNRESET) and returns the bytes; socket timeouts propagate."""
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def err_packet(payload):
    """(code, message) of an ERR packet payload, or None when it is not one."""
    if not payload or payload[0] != 0xFF or len(payload) < 3:
        return None
    code = int.from_bytes(payload[1:3], "little")
    rest = payload[3:]
    if rest[:1] == b"#":
        rest = rest[6:]
    return code, rest.decode("utf-8", "replace")


def assert_server_error_code(test, code):
    """An error code the proxy sends in an ERR packet must be one a server may send.

    libmariadb (the mariadb CLI, Connector/C, everything built on them) turns an ERR packet
    carrying a client-side code (2001..2999, e.g. 2003 or 2013) into "2027 Received malformed
    packet" and drops the message; PyMySQL passes it through, which hides the problem.
    """
    test.assertFalse(2000 < code < 3000, "credproxy sent client-range error code %d in an ERR "
                     "packet; libmariadb clients report it as 2027 malformed packet" % code)


def unique_name(prefix):
    return "%s_%d_%d" % (prefix, os.getpid(), time.monotonic_ns() % 1000000000)


class ProxyTestCase(unittest.TestCase):
    """A test that starts credproxy processes; they are stopped and checked when it ends."""

    fixture = None
    needs_proxy = True  # False for tests that only use the fixture (they run before a build)

    @classmethod
    def setUpClass(cls):
        cls.fixture = Fixture()
        if cls.needs_proxy:
            binary()

    def setUp(self):
        base = self.fixture.dir / "runs"
        base.mkdir(exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=self._testMethodName[:24] + ".", dir=base))
        self.proxies = []

    def start_proxy(self, *args, secret="secret.json", listen=True, socket=False, start=True):
        """Starts credproxy with args and a copy of secret (a fixture file name or a dict).

        listen: a TCP listener on a free 127.0.0.1 port; socket: a unix socket in workdir.
        """
        if isinstance(secret, str):
            secret = self.fixture.secret(secret)
        workdir = Path(tempfile.mkdtemp(prefix="p", dir=self.workdir))
        sock = workdir / "proxy.sock" if socket else None
        p = Proxy(workdir, args, secret, listen=listen, socket_path=sock)
        self.proxies.append(p)
        self.addCleanup(p.stop)
        return p.start() if start else p

    def run(self, result=None):
        result = result if result is not None else self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        super().run(result)
        failed = len(result.failures) + len(result.errors) > before
        for p in getattr(self, "proxies", []):
            if failed:
                sys.stderr.write("\n---- credproxy log (%s) %s ----\n%s\n---- end of log ----\n"
                                 % (self.id(), " ".join(p.argv()[1:]), log_tail(p.log_path, 80)))
        if not failed and getattr(self, "workdir", None):
            shutil.rmtree(self.workdir, ignore_errors=True)
        return result

    def assertMysqlError(self, code, fn, *args, **kw):
        """Calls fn and asserts it raises a PyMySQL error with MySQL error code; returns it."""
        with self.assertRaises(pymysql.err.MySQLError) as cm:
            fn(*args, **kw)
        got = cm.exception.args[0] if cm.exception.args else None
        self.assertEqual(got, code, "expected MySQL error %d, got %r" % (code, cm.exception))
        return cm.exception

    def cli_value(self, sql, **kw):
        """Runs the mariadb CLI and returns its output, failing the test on a non-zero exit."""
        p = mariadb_cli(sql, **kw)
        self.assertEqual(p.returncode, 0, "mariadb -e %r failed: %s" % (sql, p.stderr))
        return p.stdout.strip()


def main():
    unittest.main(verbosity=2)
