#!/usr/bin/python3
"""The accept path: running out of descriptors, max_client_connections, and listen names.

Out of descriptors (EMFILE), credproxy must neither spin nor flood its log, and clients waiting
in the backlog must be told 1040 rather than left hanging. max_client_connections refuses one
client too many with 1040, as MySQL does at max_connections. listen = localhost must serve
every address the name resolves to (Debian's stock hosts file gives ::1 first).
"""

import os
import resource
import secrets
import shutil
import socket
import subprocess
import threading
import time

import pymysql

import harness
from harness import Proxy, ProxyTestCase, connect, recv_packet, scalar, unique_name
from rotation_lambda import sql_string

ER_CON_COUNT_ERROR = 1040
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The stock Debian 12 /etc/hosts lines for the loopback names.
DEBIAN_HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"


def cpu_seconds(pid):
    """User + system CPU time of a process so far, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def first_packet(sock, timeout):
    """The first packet credproxy sends on a raw connection: (seq, payload), or None."""
    sock.settimeout(timeout)
    try:
        return recv_packet(sock)
    except (socket.timeout, OSError):
        return None


def assert_too_many(test, pkt):
    """pkt is the greeting-less ERR 1040 (08004) "Too many connections" with sequence id 0."""
    test.assertIsNotNone(pkt)
    seq, payload = pkt
    test.assertEqual(seq, 0)
    test.assertEqual(payload[0], 0xFF, "expected an ERR packet, got %r" % payload[:16])
    test.assertEqual(int.from_bytes(payload[1:3], "little"), ER_CON_COUNT_ERROR)
    test.assertEqual(payload[3:9], b"#08004")
    test.assertEqual(payload[9:], b"Too many connections")


def quiet_close(c):
    try:
        c.close()
    except (pymysql.err.Error, OSError):
        pass


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class OutOfDescriptors(ProxyTestCase):
    """ulimit -n 256 and 300 idle clients: no busy loop, no log flood, nobody left hanging."""

    N_IDLE = 300

    def test_emfile_pauses_accepting_and_refuses_waiting_clients(self):
        proxy = self.start_proxy("--workers", "2")
        resource.prlimit(proxy.proc.pid, resource.RLIMIT_NOFILE, (256, 256))
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(self.N_IDLE):
            s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            socks.append(s)
        time.sleep(0.5)  # let the first burst of accepts and errors happen
        cpu0, t0 = cpu_seconds(proxy.proc.pid), time.monotonic()
        time.sleep(3.0)
        cpu = cpu_seconds(proxy.proc.pid) - cpu0
        elapsed = time.monotonic() - t0
        self.assertLess(cpu, 0.5, "credproxy used %.2f s of CPU in %.1f s with every descriptor "
                        "taken: it spins on accept" % (cpu, elapsed))
        # Every client was either greeted or told 1040; none still waits in the backlog.
        greeted, refused, silent = 0, 0, 0
        for s in socks:
            pkt = first_packet(s, 2.0 if silent == 0 else 0.2)
            if pkt is None:
                silent += 1
            elif pkt[1][:1] == b"\x0a":
                greeted += 1
            else:
                assert_too_many(self, pkt)
                refused += 1
        self.assertEqual(silent, 0, "%d clients got neither a greeting nor 1040 (greeted %d, "
                         "refused %d)" % (silent, greeted, refused))
        self.assertGreater(refused, 0, "300 clients fit in 256 descriptors?")
        self.assertGreater(greeted, 100)
        accept_lines = [line for line in proxy.log().splitlines()
                        if "accept" in line and "accepted on route" not in line]
        self.assertLessEqual(len(accept_lines), 6, "accept errors flood the log:\n%s"
                             % "\n".join(accept_lines[:10]))
        self.assertTrue(any("accept paused: Too many open files" in line
                            for line in accept_lines), "\n".join(accept_lines))
        # Once the idle clients leave, a real client logs in and runs a query.
        for s in socks:
            s.close()
        socks.clear()
        deadline = time.monotonic() + 10
        while True:
            try:
                c = connect(proxy.port, connect_timeout=3)
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.addCleanup(quiet_close, c)
        self.assertEqual(scalar(c, "SELECT 1"), 1)
        self.assertTrue(proxy.wait_log("accepting again: accept errors for", timeout=5), "episode never ended")


class MaxClientConnections(ProxyTestCase):
    def test_one_client_too_many_gets_1040_then_a_freed_slot_is_reused(self):
        proxy = self.start_proxy("--workers", "2", "--max-client-connections", "5")
        # wait_ready's probe connection may still be counted: let it be closed first.
        time.sleep(0.3)
        clients = [connect(proxy.port) for _ in range(5)]
        for c in clients:
            self.addCleanup(quiet_close, c)
            self.assertEqual(scalar(c, "SELECT 1"), 1)
        # A real driver sees the error as the server's.
        err = self.assertMysqlError(ER_CON_COUNT_ERROR, connect, proxy.port)
        self.assertIn("Too many connections", str(err))
        # On the wire: ERR in place of the greeting, sequence id 0, SQLSTATE 08004, then close.
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            assert_too_many(self, first_packet(s, 5))
            self.assertEqual(s.recv(16), b"")
        # One leaves: the next one is let in (its session ends asynchronously, so retry briefly).
        clients.pop().close()
        deadline = time.monotonic() + 5
        while True:
            try:
                c = connect(proxy.port)
                break
            except pymysql.err.OperationalError as e:
                if e.args[0] != ER_CON_COUNT_ERROR or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.addCleanup(quiet_close, c)
        self.assertEqual(scalar(c, "SELECT 2"), 2)
        self.assertIn("max_client_connections (5) reached", proxy.log())

    def test_setting_is_validated_and_listed(self):
        p = harness.run_proxy_once(self.workdir, ["--help"])
        self.assertIn("--max-client-connections", p.stdout)
        self.assertIn("CREDPROXY_MAX_CLIENT_CONNECTIONS", p.stdout)
        p = harness.run_proxy_once(self.workdir, [
            "--secret-file", str(self.fixture.secret_path()), "--max-client-connections", "-1",
            "--check-config"])
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("max-client-connections", p.stderr)


class ListenName(ProxyTestCase):
    """listen = localhost binds every address of the name, not only the first."""

    def wait_listening(self, proxy, family, host, port, timeout=harness.START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            self.assertTrue(proxy.alive(), "credproxy exited:\n%s"
                            % harness.log_tail(proxy.log_path))
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(1)
                    s.connect((host, port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def login(self, host, port):
        c = pymysql.connect(host=host, port=port, user="anyone", password="", connect_timeout=5)
        try:
            return scalar(c, "SELECT 1")
        finally:
            c.close()

    def check_every_address(self, proxy, port, addrs):
        for family, host in addrs:
            self.wait_listening(proxy, family, host, port)
            self.assertEqual(self.login(host, port), 1, "no login on %s" % host)

    def test_localhost_as_this_machine_resolves_it(self):
        port = harness.free_port()
        proxy = self.start_proxy("--listen", "localhost:%d" % port, listen=False)
        addrs = {(ai[0], ai[4][0]) for ai in socket.getaddrinfo(
            "localhost", port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)}
        self.check_every_address(proxy, port, sorted(addrs))

    def start_with_hosts(self, hosts_text, *args):
        """credproxy in its own mount namespace, with hosts_text bind-mounted on /etc/hosts."""
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare to give credproxy its own /etc/hosts")
        hosts = self.workdir / "hosts"
        hosts.write_text(hosts_text)
        probe = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts',
                                str(hosts)], capture_output=True, timeout=10)
        if probe.returncode != 0:
            self.skipTest("cannot bind-mount a hosts file: %s" % probe.stderr.decode().strip())
        proxy = self.start_proxy(*args, listen=False, start=False)
        argv = proxy.argv
        proxy.argv = lambda: (["unshare", "-m", "sh", "-c",
                               'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts)] + argv())
        return proxy

    def test_localhost_with_debians_hosts_file_serves_ipv4_and_ipv6(self):
        if not ipv6_loopback():
            self.skipTest("no IPv6 loopback on this machine")
        port = harness.free_port()
        proxy = self.start_with_hosts(DEBIAN_HOSTS, "--workers", "2",
                                      "--listen", "localhost:%d" % port).start()
        self.check_every_address(proxy, port, [(socket.AF_INET, "127.0.0.1"),
                                               (socket.AF_INET6, "::1")])
        self.assertIn("127.0.0.1:%d" % port, proxy.log())
        self.assertIn("[::1]:%d" % port, proxy.log())

    def test_trust_refuses_a_name_that_resolves_beyond_loopback(self):
        # 192.0.2.1 (TEST-NET-1) is never contacted: only resolved, then refused before bind.
        port = harness.free_port()
        proxy = self.start_with_hosts("127.0.0.1 localhost\n192.0.2.1 localhost\n",
                                      "--listen", "localhost:%d" % port)
        log = open(proxy.log_path, "ab")
        proxy.proc = subprocess.Popen(proxy.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, cwd=proxy.workdir)
        log.close()
        try:
            rc = proxy.proc.wait(harness.START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail("credproxy started with client_auth=trust on a name that resolves to "
                      "192.0.2.1:\n%s" % proxy.log())
        self.assertEqual(rc, 1, proxy.log())
        self.assertIn("192.0.2.1", proxy.log())
        self.assertIn("not loopback", proxy.log())
        proxy.proc = None  # nothing left to stop


class PoolShare(ProxyTestCase):
    """pool_size is the route's total: pool_size=1 over 2 workers opens at most 1 connection."""

    def setUp(self):
        super().setUp()
        self.user = unique_name("share")
        pw = "share-" + secrets.token_hex(12)
        self.fixture.root_sql("CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY %s;"
                              "GRANT ALL ON app.* TO '%s'@'127.0.0.1';"
                              % (self.user, sql_string(pw), self.user))
        self.addCleanup(self.fixture.root_sql, "DROP USER IF EXISTS '%s'@'127.0.0.1'" % self.user)
        self.secret = dict(self.fixture.secret(), username=self.user, password=pw)

    def upstream_count(self):
        rows = self.fixture.root_sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                     "WHERE USER = '%s'" % self.user)
        return int(rows[0][0])

    def busiest(self, proxy, rounds=2, clients=16):
        """Runs rounds of concurrent clients (each one SELECT SLEEP(0.2)); returns the most
        upstream connections seen at once. 16 clients a round reach every listening worker
        (SO_REUSEPORT spreads them by address), more than any share of the pool."""
        errors, most = [], [0]
        stop = threading.Event()

        def client():
            try:
                c = connect(proxy.port, autocommit=True)
                try:
                    scalar(c, "SELECT SLEEP(0.2)")
                finally:
                    c.close()
            except Exception as e:  # reported below
                errors.append(e)

        def watch():
            while not stop.is_set():
                most[0] = max(most[0], self.upstream_count())
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        for _ in range(rounds):
            threads = [threading.Thread(target=client) for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        # Pooled connections stay open (pool_idle_timeout 5m): the count now is what was opened.
        most[0] = max(most[0], self.upstream_count())
        stop.set()
        watcher.join(10)
        self.assertEqual(errors, [])
        return most[0]

    def test_pool_size_1_over_2_workers_opens_one_connection(self):
        proxy = self.start_proxy("--workers", "2", "--pool-size", "1", secret=self.secret)
        most = self.busiest(proxy)
        self.assertLessEqual(most, 1, "pool_size=1 opened %d upstream connections" % most)
        self.assertEqual(most, 1, "the watcher never saw the connection")

    def test_pool_size_3_over_2_workers_opens_three_connections(self):
        proxy = self.start_proxy("--workers", "2", "--pool-size", "3", secret=self.secret)
        most = self.busiest(proxy)
        self.assertLessEqual(most, 3, "pool_size=3 opened %d upstream connections" % most)
        self.assertGreaterEqual(most, 2, "the clients never needed more than one connection")


if __name__ == "__main__":
    harness.main()
