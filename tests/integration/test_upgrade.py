"""Upgrade without a dropped client: a second credproxy started with --upgrade on the same TCP
port (SO_REUSEPORT) and unix socket (bound beside it, renamed over it) takes the new clients
while the first drains after SIGTERM. A client loop running all along, over TCP and the unix
socket, short connections and long-lived ones, sees zero errors. A second credproxy started by
mistake, without --upgrade, fails with "Address already in use"."""

import os
import select
import signal
import socket
import sys
import threading
import time

from harness import Proxy, ProxyTestCase, connect, free_port, main, run_proxy_once, scalar


def closed_by_server(conn):
    """What a pool checks before reusing a connection (Go's database/sql driver does it on
    every reuse): has the server closed it while it sat idle? Never blocks."""
    sock = conn._sock
    r, _, _ = select.select([sock], [], [], 0)
    if not r:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


class Load:
    """Clients that run all along: short ones (connect, query, close) and long-lived ones."""

    def __init__(self, port, socket_path, n_short=4, n_long=4):
        self.port, self.socket_path = port, socket_path
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors = []
        self.ops = 0
        self.reconnects = 0
        self.threads = [threading.Thread(target=self.short, args=(i,)) for i in range(n_short)]
        self.threads += [threading.Thread(target=self.long, args=(i,)) for i in range(n_long)]

    def endpoint(self, i):
        return {"socket_path": self.socket_path} if i % 2 else {"port": self.port}

    def count(self, error=None, reconnect=False):
        with self.lock:
            if error:
                self.errors.append(error)
            elif reconnect:
                self.reconnects += 1
            else:
                self.ops += 1

    def short(self, i):
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                conn = connect(**self.endpoint(i + n))
                got = scalar(conn, "SELECT %s", (n,))
                conn.close()
                if got != n:
                    raise AssertionError("got %r for %d" % (got, n))
                self.count()
            except Exception as e:  # noqa: BLE001 - every error is the test's finding
                self.count(error="short %d: %r" % (i, e))
                time.sleep(0.05)

    def long(self, i):
        conn = None
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                if conn is not None and closed_by_server(conn):
                    conn = None
                    self.count(reconnect=True)
                if conn is None:
                    conn = connect(**self.endpoint(i))
                with conn.cursor() as cur:
                    cur.execute("BEGIN")
                    cur.execute("SELECT %s", (n,))
                    got = cur.fetchone()[0]
                    cur.execute("COMMIT")
                if got != n:
                    raise AssertionError("got %r for %d" % (got, n))
                self.count()
            except Exception as e:  # noqa: BLE001
                self.count(error="long %d: %r" % (i, e))
                conn = None
            time.sleep(0.01)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(20)


class Upgrade(ProxyTestCase):
    def start_same(self, old, *args):
        """A second credproxy on old's port and unix socket (its own workdir and secret copy)."""
        workdir = self.workdir / ("second%d" % len(self.proxies))
        workdir.mkdir()
        p = Proxy(workdir, list(args), self.fixture.secret(), listen=True, socket_path=old.socket)
        p.port = old.port
        self.proxies.append(p)
        self.addCleanup(p.stop)
        return p

    def accepted(self, proxy):
        return proxy.log().count("accepted on route")

    def test_binary_swap_under_load(self):
        old = self.start_proxy("--workers", "2", "--shutdown-timeout", "10s", socket=True)
        with Load(old.port, old.socket) as load:
            time.sleep(1.0)
            new = self.start_same(old, "--workers", "2", "--upgrade").start()
            # start() returns as soon as the endpoints answer, which the old one does: wait
            # for the new one's own word (as an operator waits for READY=1 or /readyz).
            self.assertTrue(new.wait_log("starting -> ready", 20), "the new one never got ready")
            self.assertIn("--upgrade: sharing the listeners", new.log())
            time.sleep(1.0)  # both serve now
            t0 = time.monotonic()
            old.proc.send_signal(signal.SIGTERM)
            old.proc.wait(15)
            drained_in = time.monotonic() - t0
            self.assertEqual(old.proc.returncode, 0)
            served_before = self.accepted(new)
            time.sleep(1.0)  # the new one alone
            self.assertGreater(self.accepted(new), served_before,
                               "the new credproxy took no client after the old one left")
        sys.stderr.write("\nswap: %d queries, %d errors, %d long-lived reconnects; old drained in "
                         "%.2f s\n" % (load.ops, len(load.errors), load.reconnects, drained_in))
        self.assertEqual(load.errors, [], "clients saw errors during the swap")
        self.assertGreater(load.ops, 100)
        # The long-lived connections were all on the old process; each was closed at an idle
        # moment and opened again (on the new one) without an error.
        self.assertGreaterEqual(load.reconnects, 4)
        self.assertLess(drained_in, 10.0)
        self.assertTrue(os.path.exists(old.socket), "the old process removed the new socket")
        self.assertEqual(scalar(connect(socket_path=old.socket), "SELECT 7"), 7)
        self.assertEqual(scalar(connect(old.port), "SELECT 8"), 8)
        self.assertIn("drain done", old.log())
        self.assertIn("0 cut at shutdown_timeout", old.log())

    def test_mistaken_second_start_fails(self):
        """Without --upgrade a second credproxy on a served TCP port or unix socket fails with
        "Address already in use" and a non-zero exit; the first keeps serving both."""
        first = self.start_proxy(socket=True)
        secret = str(first.secret_file)
        other = self.workdir / "other.sock"
        for what, args in (
            ("tcp", ["--listen", "127.0.0.1:%d" % first.port, "--socket", str(other)]),
            ("unix", ["--listen", "127.0.0.1:%d" % free_port(), "--socket", str(first.socket)]),
        ):
            with self.subTest(what):
                p = run_proxy_once(self.workdir, ["--secret-file", secret] + args)
                self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
                self.assertIn("Address already in use", p.stdout + p.stderr)
                self.assertFalse(os.path.exists(other), "the failed start left a socket")
                self.assertTrue(first.alive())
                self.assertEqual(scalar(connect(first.port), "SELECT 1"), 1)
                self.assertEqual(scalar(connect(socket_path=first.socket), "SELECT 2"), 2)
        leftovers = [n for n in os.listdir(os.path.dirname(first.socket)) if n.endswith(".new")]
        self.assertEqual(leftovers, [], "a failed start left its temporary socket")


if __name__ == "__main__":
    main()
