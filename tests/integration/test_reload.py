"""Reload on SIGHUP: credproxy re-reads its configuration file and users file and applies what
can change live, with open clients unharmed; a broken file changes nothing; settings that need
a restart are named in the log.

Each proxy here runs from a config file (--config only), so a reload sees everything the test
changes. The load test runs client threads (PyMySQL) that connect, query and commit all along
while 20 reloads change pool and log settings, and counts every error they see.
"""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pymysql

import harness
from harness import ROOT, Proxy, ProxyTestCase, connect, free_port, main, scalar
from test_auth_modes import native_hash
from test_ephemeral_tls import NO_VERIFY, colon_sha256, served_cert, tls_peer


class ConfProxy(Proxy):
    """A credproxy started with --config only; the test rewrites the file and sends SIGHUP."""

    def __init__(self, workdir, secret, settings, routes=None):
        super().__init__(workdir, [], secret)
        self.conf = self.workdir / "credproxy.conf"
        self.write_conf(settings, routes)

    def argv(self):
        return [harness.binary(), "--config", str(self.conf)]

    def write_conf(self, settings, routes=None, raw=None):
        """Top-level settings (listen and secret_file filled in unless routes are given), then
        [route NAME] sections from routes {name: {key: value}}; raw replaces it all."""
        if raw is None:
            lines = ["# written by test_reload.py"]
            if routes is None:
                lines += ["listen = 127.0.0.1:%d" % self.port,
                          "secret_file = %s" % self.secret_file]
            lines += ["%s = %s" % kv for kv in settings.items()]
            for name, rs in (routes or {}).items():
                lines.append("[route %s]" % name)
                lines += ["%s = %s" % kv for kv in rs.items()]
            raw = "\n".join(lines) + "\n"
        tmp = self.conf.with_name(".credproxy.conf.tmp")
        tmp.write_text(raw)
        os.rename(tmp, self.conf)

    def reload(self, expect_ok=True, timeout=15.0):
        """SIGHUP; waits for the reload's last log line and returns the log lines it wrote."""
        start = len(self.log_path.read_bytes())
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[start:].decode("utf-8", "replace")
            ok, failed = "configuration reloaded" in text, "reload failed" in text
            if ok or failed:
                if ok != expect_ok:
                    raise AssertionError("reload %s, expected it to %s:\n%s"
                                         % ("worked" if ok else "failed",
                                            "work" if expect_ok else "fail", text))
                return text
            time.sleep(0.02)
        raise AssertionError("no end of reload in the log within %.0fs:\n%s"
                             % (timeout, harness.log_tail(self.log_path)))

    def log_since(self, offset):
        return self.log_path.read_bytes()[offset:].decode("utf-8", "replace")


def upstream_conns(fixture, user):
    """Connections of user on the fixture's server (credproxy's pooled ones)."""
    rows = fixture.root_sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                            "WHERE USER = '%s'" % user)
    return int(rows[0][0])


class ReloadCase(ProxyTestCase):
    def start_conf_proxy(self, settings, routes=None):
        workdir = Path(self.workdir) / ("p%d" % len(self.proxies))
        workdir.mkdir()
        p = ConfProxy(workdir, self.fixture.secret(), settings, routes)
        self.proxies.append(p)
        self.addCleanup(p.stop)
        return p

    def wait_for(self, what, fn, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail("timed out waiting for %s" % what)
            time.sleep(0.1)


class Load:
    """Client threads: each connects, runs a query and a short transaction, and closes, in a
    loop; a long-lived connection per thread queries between. Every exception is kept."""

    def __init__(self, port, threads=4):
        self.port = port
        self.errors = []
        self.done = [0] * threads
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def run(self, i):
        try:
            keep = connect(self.port)
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            self.errors.append("thread %d first connect: %r" % (i, e))
            return
        n = 0
        while not self.stop.is_set():
            try:
                c = connect(self.port, autocommit=False)
                with c.cursor() as cur:
                    cur.execute("SELECT %s", (n,))
                    if cur.fetchone()[0] != n:
                        raise AssertionError("wrong row")
                    cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA")
                    cur.fetchone()
                c.commit()
                c.close()
                if scalar(keep, "SELECT %s + 1", (n,)) != n + 1:
                    raise AssertionError("wrong row on the long-lived connection")
                n += 1
                self.done[i] = n
            except Exception as e:  # noqa: BLE001
                self.errors.append("thread %d iteration %d: %r" % (i, n, e))
                time.sleep(0.05)
        keep.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(harness.CLIENT_TIMEOUT)


class UnderLoad(ReloadCase):
    def test_twenty_reloads_under_load_no_client_error(self):
        base = {"workers": 2, "log_level": "info", "pool_min_idle": 0}
        p = self.start_conf_proxy(dict(base, pool_size=16)).start()
        load = Load(p.port).start()
        try:
            time.sleep(0.5)
            for i in range(20):
                p.write_conf(dict(base, pool_size=8 + 4 * (i % 3),
                                  log_level=("debug", "info")[i % 2],
                                  pool_idle_timeout="%ds" % (30 + i),
                                  connect_timeout="%ds" % (10 + i),
                                  client_idle_timeout="%ds" % (600 + i)))
                text = p.reload()
                self.assertIn("pool_size", text)
                time.sleep(0.15)
            time.sleep(0.5)
        finally:
            load.finish()
        self.assertEqual(load.errors, [], "clients saw errors across 20 reloads")
        self.assertGreater(min(load.done), 5, "a client thread made no progress: %r" % load.done)
        self.assertTrue(p.alive())
        log = p.log()
        self.assertEqual(log.count("configuration reloaded"), 20)
        self.assertNotIn("restart credproxy", log)


class Broken(ReloadCase):
    def test_broken_file_changes_nothing(self):
        p = self.start_conf_proxy({"log_level": "info", "pool_size": 4}).start()
        conn = connect(p.port)
        self.assertEqual(scalar(conn, "SELECT 1"), 1)
        # Line 4 is log_level = debug (it would apply), line 5 is broken.
        p.write_conf(None, raw="# broken\nlisten = 127.0.0.1:%d\nsecret_file = %s\n"
                     "log_level = debug\npool_size = lots\n" % (p.port, p.secret_file))
        text = p.reload(expect_ok=False)
        self.assertIn("%s:5" % p.conf, text, "the error names no file:line")
        self.assertIn("pool_size", text, "the error names no key")
        self.assertIn("the running configuration stays", text)
        self.assertTrue(p.alive())
        # The old settings are in force: still info (a new client logs no debug line).
        offset = len(p.log_path.read_bytes())
        self.assertEqual(scalar(connect(p.port), "SELECT 2"), 2)
        self.assertEqual(scalar(conn, "SELECT 3"), 3)
        time.sleep(0.3)
        self.assertNotIn("accepted on route", p.log_since(offset))
        # And a good file afterwards applies.
        p.write_conf({"log_level": "debug", "pool_size": 4})
        p.reload()
        offset = len(p.log_path.read_bytes())
        self.assertEqual(scalar(connect(p.port), "SELECT 5"), 5)
        self.assertTrue(self.wait_for("a debug line", lambda: "accepted on route"
                                      in p.log_since(offset)))


class Changes(ReloadCase):
    def test_log_level(self):
        p = self.start_conf_proxy({"log_level": "info"}).start()
        offset = len(p.log_path.read_bytes())
        self.assertEqual(scalar(connect(p.port), "SELECT 1"), 1)
        time.sleep(0.3)
        self.assertNotIn("accepted on route", p.log_since(offset))
        p.write_conf({"log_level": "debug"})
        self.assertIn("log_level", p.reload())
        offset = len(p.log_path.read_bytes())
        self.assertEqual(scalar(connect(p.port), "SELECT 1"), 1)
        self.assertTrue(self.wait_for("a debug line", lambda: "accepted on route"
                                      in p.log_since(offset)))

    def test_pool_size_lowered(self):
        user = self.fixture.secret()["username"]
        before = upstream_conns(self.fixture, user)
        settings = {"workers": 1, "pool_min_idle": 0, "pool_size": 4, "pool_wait_timeout": "20s",
                    "pool_idle_timeout": "1h"}
        p = self.start_conf_proxy(settings).start()

        def sleepers(n, seconds):
            """n clients at once, each connecting, sleeping on the server and leaving; a client
            holds its upstream connection while connected, so pool_size bounds how many run."""
            errors = []

            def one():
                try:
                    c = connect(p.port)
                    scalar(c, "SELECT SLEEP(%s)" % seconds)
                    c.close()
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))

            threads = [threading.Thread(target=one) for _ in range(n)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            self.assertEqual(errors, [])
            return time.monotonic() - t0

        # Four at once with pool_size 4: they run side by side, and four stay pooled.
        self.assertLess(sleepers(4, 1.0), 3.0)  # one after another would take 4 s
        self.wait_for("4 pooled connections", lambda: upstream_conns(self.fixture, user)
                      - before == 4)
        p.write_conf(dict(settings, pool_size=1))
        self.assertIn("pool_size", p.reload())
        # The idle ones over the new size close, and four clients now take turns on one.
        self.wait_for("1 pooled connection", lambda: upstream_conns(self.fixture, user)
                      - before <= 1)
        self.assertGreaterEqual(sleepers(4, 0.5), 1.9)
        self.assertLessEqual(upstream_conns(self.fixture, user) - before, 1)

    def test_users_file(self):
        users = self.workdir / "users"
        users.write_text("alice:%s\n" % native_hash("old-pw"))
        os.chmod(users, 0o600)
        p = self.start_conf_proxy({"client_auth": "password", "users_file": str(users)}).start()
        p.passwords.update({"old-pw", "new-pw"})
        open_client = connect(p.port, user="alice", password="old-pw")
        self.assertEqual(scalar(open_client, "SELECT 1"), 1)
        users.write_text("alice:%s\nbob:%s\n" % (native_hash("new-pw"), native_hash("new-pw")))
        p.reload()
        self.assertEqual(scalar(connect(p.port, user="alice", password="new-pw"), "SELECT 2"), 2)
        self.assertEqual(scalar(connect(p.port, user="bob", password="new-pw"), "SELECT 2"), 2)
        self.assertMysqlError(harness.ER_ACCESS_DENIED, connect, p.port, user="alice",
                              password="old-pw")
        self.assertEqual(scalar(open_client, "SELECT 3"), 3, "an open client was cut")
        # A users file that cannot be read fails the whole reload: the users stay as they were.
        p.write_conf({"client_auth": "password", "users_file": str(users) + ".missing",
})
        text = p.reload(expect_ok=False)
        self.assertIn("users.missing", text)
        self.assertEqual(scalar(connect(p.port, user="alice", password="new-pw"), "SELECT 4"), 4)
        self.assertMysqlError(harness.ER_ACCESS_DENIED, connect, p.port, user="alice",
                              password="old-pw")

    def test_restart_only_settings_are_named(self):
        p = self.start_conf_proxy({"workers": 2, "handshake_timeout": "10s"}).start()
        conn = connect(p.port)
        other = free_port()
        p.write_conf({"workers": 1, "handshake_timeout": "5s", "client_auth": "password",
                      "users_file": str(p.workdir / "not-read"),
                      "secret_poll_interval": "2s"})
        # client_auth needs a restart, so the users file it names is not read: the reload works.
        text = p.reload()
        self.assertIn("setting workers changed; restart credproxy to apply it", text)
        self.assertIn("setting client_auth changed; restart credproxy to apply it", text)
        self.assertIn("handshake_timeout", text.split("applied:")[-1])
        self.assertIn("secret_poll_interval", text.split("applied:")[-1])
        # Still trust mode (the running value) and still serving.
        self.assertEqual(scalar(connect(p.port), "SELECT 1"), 1)
        self.assertEqual(scalar(conn, "SELECT 2"), 2)
        # A route's listen is restart-only too: the running listener stays.
        p.write_conf({"workers": 1, "handshake_timeout": "5s", "secret_poll_interval": "2s"},
                     raw="listen = 127.0.0.1:%d\nsecret_file = %s\n" % (other, p.secret_file))
        text = p.reload()
        self.assertIn("route default: setting listen changed; restart credproxy", text)
        self.assertEqual(scalar(connect(p.port), "SELECT 3"), 3)
        self.assertEqual(scalar(conn, "SELECT 4"), 4)
        self.assertRaises(pymysql.err.OperationalError, connect, other, connect_timeout=2)


class FrontendCertificate(ReloadCase):
    """A renewed certificate at the same paths is served after a SIGHUP; connected TLS clients
    keep working; a broken pair changes nothing; no tls_cert falls back to the ephemeral one."""

    def install(self, cert, key):
        for src, dst in ((cert, self.cert), (key, self.key)):
            tmp = dst.with_name(dst.name + ".tmp")
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o600)
            os.rename(tmp, dst)  # as a renewal tool does: the new file at once, never half

    def served(self, p):
        return served_cert(p.port)

    def test_renewed_certificate_is_served_after_sighup(self):
        tls = self.fixture.tls
        pem = {n: ssl.PEM_cert_to_DER_cert((tls / ("%s-cert.pem" % n)).read_text())
               for n in ("proxy", "server")}
        self.cert = Path(self.workdir) / "frontend-cert.pem"
        self.key = Path(self.workdir) / "frontend-key.pem"
        self.install(tls / "proxy-cert.pem", tls / "proxy-key.pem")
        settings = {"tls_cert": str(self.cert), "tls_key": str(self.key), "workers": 2}
        p = self.start_conf_proxy(settings).start()
        self.assertEqual(self.served(p), pem["proxy"])
        held = connect(p.port, ssl=NO_VERIFY)  # a TLS client across every reload below
        self.assertEqual(tls_peer(held), pem["proxy"])

        # Renewal: new files, same paths, same configuration.
        self.install(tls / "server-cert.pem", tls / "server-key.pem")
        text = p.reload()
        self.assertIn("TLS certificate %s, SHA-256 fingerprint %s (was %s)"
                      % (self.cert, colon_sha256(pem["server"]), colon_sha256(pem["proxy"])), text)
        self.assertIn("default.tls_cert", text.split("applied:")[-1])
        for _ in range(4):  # both workers
            self.assertEqual(self.served(p), pem["server"])
        self.assertEqual(scalar(held, "SELECT 2"), 2)

        # Nothing new on disk: nothing changes.
        text = p.reload()
        self.assertIn("no setting that applies live changed", text)
        self.assertEqual(self.served(p), pem["server"])

        # A key that does not match the certificate (a renewal caught half-way): refused.
        self.install(tls / "proxy-cert.pem", tls / "server-key.pem")
        text = p.reload(expect_ok=False)
        self.assertIn("%s: private key does not match the certificate" % self.key, text)
        self.assertEqual(self.served(p), pem["server"])
        self.assertEqual(scalar(held, "SELECT 3"), 3)

        # Back to a good pair at new paths (the keys themselves changed).
        self.install(tls / "proxy-cert.pem", tls / "proxy-key.pem")
        moved = {"tls_cert": str(self.cert.with_name("moved-cert.pem")),
                 "tls_key": str(self.key.with_name("moved-key.pem"))}
        shutil.copyfile(self.cert, moved["tls_cert"])
        shutil.copyfile(self.key, moved["tls_key"])
        os.chmod(moved["tls_key"], 0o600)
        p.write_conf(dict(settings, **moved))
        text = p.reload()
        self.assertIn("TLS certificate %s, SHA-256 fingerprint %s (was %s)"
                      % (moved["tls_cert"], colon_sha256(pem["proxy"]),
                         colon_sha256(pem["server"])), text)
        self.assertEqual(self.served(p), pem["proxy"])

        # No tls_cert any more: the ephemeral certificate, made now.
        p.write_conf({"workers": 2})
        text = p.reload()
        found = re.search(r"no tls_cert any more: new TLS clients get the ephemeral certificate, "
                          r"SHA-256 fingerprint ([0-9A-F:]{95}) \(was (\S+)\)", text)
        self.assertTrue(found, text)
        self.assertEqual(found.group(2), colon_sha256(pem["proxy"]))
        self.assertEqual(colon_sha256(self.served(p)), found.group(1))
        self.assertEqual(scalar(held, "SELECT 4"), 4)
        held.close()


def status_routes(admin_port):
    """{name: route} of the admin endpoint's /status.json."""
    with urllib.request.urlopen("http://127.0.0.1:%d/status.json" % admin_port, timeout=10) as r:
        return {x["name"]: x for x in json.loads(r.read().decode())["routes"]}


def refused(port=None, socket_path=None):
    """True when a connection to credproxy is refused at once (nothing listens)."""
    try:
        c = connect(port, socket_path=socket_path, connect_timeout=3)
    except pymysql.err.OperationalError:
        return True
    c.close()
    return False


class Routes(ReloadCase):
    """[route NAME] sections added and removed by a reload, matched by name."""

    def routes_proxy(self, **settings):
        """A proxy with one route, stable, on p.port; returns (proxy, base settings, routes)."""
        settings = dict({"workers": 2, "log_level": "info", "pool_min_idle": 0}, **settings)
        p = self.start_conf_proxy(settings)
        routes = {"stable": {"listen": "127.0.0.1:%d" % p.port, "secret_file": p.secret_file}}
        p.write_conf(settings, routes)
        p.start()
        return p, settings, routes

    def extra_route(self, p, port):
        """Settings of a route named extra on port and a unix socket, with its own secret file."""
        secret = p.workdir / "extra-secret.json"
        harness.write_json_atomic(secret, self.fixture.secret())
        return {"listen": "127.0.0.1:%d" % port, "socket": str(p.workdir / "extra.sock"),
                "secret_file": str(secret)}

    def test_add_route(self):
        admin = free_port()
        p, settings, routes = self.routes_proxy(admin_listen="127.0.0.1:%d" % admin)
        stable = connect(p.port)
        self.assertEqual(scalar(stable, "SELECT 1"), 1)
        self.assertEqual(set(status_routes(admin)), {"stable"})
        port = free_port()
        extra = self.extra_route(p, port)
        p.write_conf(settings, dict(routes, extra=extra))
        text = p.reload()
        self.assertIn("route extra added", text)
        self.assertIn("route extra: listening on 127.0.0.1:%d" % port, text)
        self.assertIn("+route extra", text.split("applied:")[-1])
        self.assertNotIn("restart credproxy", text)
        # Its TCP listener and its unix socket relay queries, on every worker's socket. Its
        # very first client is greeted as the server, not as the configured default: the
        # route learns the server with a login of its own before its listeners open.
        server = scalar(stable, "SELECT VERSION()")
        for _ in range(6):
            c = connect(port)
            self.assertEqual(c.get_server_info().split("-", 1)[-1], server)
            self.assertEqual(scalar(c, "SELECT 40 + 2"), 42)
            c.close()
        c = connect(socket_path=extra["socket"])
        self.assertEqual(scalar(c, "SELECT 7"), 7)
        self.assertEqual(oct(os.stat(extra["socket"]).st_mode & 0o777), "0o666")
        c.close()
        # Its secret was read (its user is the secret's), and the admin endpoint lists it.
        shown = status_routes(admin)
        self.assertEqual(set(shown), {"stable", "extra"})
        self.assertTrue(shown["extra"]["listening"])
        self.assertEqual(shown["extra"]["upstream"]["user"], self.fixture.secret()["username"])
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin, timeout=10) as r:
            self.assertIn('route="extra"', r.read().decode())
        # The stable route and its open client are untouched.
        self.assertEqual(scalar(stable, "SELECT 2"), 2)
        self.assertEqual(scalar(connect(p.port), "SELECT 3"), 3)
        # No temporary socket file is left beside the path.
        self.assertEqual([f.name for f in p.workdir.iterdir() if f.name.endswith(".new")], [])

    def test_remove_route(self):
        admin = free_port()
        p, settings, routes = self.routes_proxy(admin_listen="127.0.0.1:%d" % admin)
        port = free_port()
        extra = self.extra_route(p, port)
        p.write_conf(settings, dict(routes, extra=extra))
        p.reload()
        before = connect(port)  # connected to the route before it is removed
        self.assertEqual(scalar(before, "SELECT 1"), 1)
        before_unix = connect(socket_path=extra["socket"])
        self.assertEqual(scalar(before_unix, "SELECT 1"), 1)
        stable = connect(p.port)
        p.write_conf(settings, routes)
        text = p.reload()
        self.assertIn("route extra removed", text)
        self.assertIn("2 open clients keep working", text)
        self.assertIn("-route extra", text.split("applied:")[-1])
        # Its listeners refuse new clients at once, on every worker; its socket file is gone.
        self.wait_for("the listeners closed", lambda: refused(port), timeout=2)
        for _ in range(6):
            self.assertTrue(refused(port), "a worker still accepts on the removed route")
        self.assertFalse(os.path.exists(extra["socket"]), "the removed route's socket file stays")
        self.assertNotIn("extra", status_routes(admin))
        # Its open clients keep working, with transactions, until they leave.
        for n in range(5):
            self.assertEqual(scalar(before, "SELECT %s", (n,)), n)
            self.assertEqual(scalar(before_unix, "SELECT %s", (n,)), n)
        before.begin()
        scalar(before, "SELECT COUNT(*) FROM information_schema.SCHEMATA")
        before.commit()
        # The other route is unaffected.
        self.assertEqual(scalar(stable, "SELECT 5"), 5)
        self.assertEqual(scalar(connect(p.port), "SELECT 6"), 6)
        before.close()
        before_unix.close()
        # Its last client gone, it stops reading its secret: a secret deleted or broken with
        # the route is not read again, and nothing is logged about it.
        self.wait_for("the removed route's secret to stop", lambda: "route extra: its last client "
                      "left: its secret is no longer read" in p.log(), timeout=10)
        offset = len(p.log_path.read_bytes())
        good = Path(extra["secret_file"]).read_text()
        harness.write_json_atomic(Path(extra["secret_file"]), {"username": 5})
        time.sleep(2.5)  # the file was polled every second
        self.assertNotIn("extra-secret.json", p.log_since(offset))
        Path(extra["secret_file"]).write_text(good)
        # Added back under the same name, on the same port and path: served again.
        p.write_conf(settings, dict(routes, extra=extra))
        self.assertIn("route extra added", p.reload())
        self.assertEqual(scalar(connect(port), "SELECT 8"), 8)
        self.assertEqual(scalar(connect(socket_path=extra["socket"]), "SELECT 9"), 9)
        self.assertEqual(set(status_routes(admin)), {"stable", "extra"})
        self.assertTrue(p.alive())

    def test_add_route_port_taken_changes_nothing(self):
        p, settings, routes = self.routes_proxy()
        stable = connect(p.port)
        taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        extra = self.extra_route(p, busy)
        second = dict(self.extra_route(p, free_port()), socket=str(p.workdir / "second.sock"))
        # Two new routes and a live setting: the first opens fine, the second cannot.
        p.write_conf(dict(settings, log_level="debug"),
                     dict(routes, a_first=second, extra=extra))
        text = p.reload(expect_ok=False)
        self.assertIn("127.0.0.1:%d" % busy, text)
        self.assertIn("Address already in use", text)
        self.assertIn("nothing was changed", text)
        self.assertNotIn("route a_first added", text)
        # Nothing changed: a_first's listeners were closed again, its socket file is gone,
        # the log level stays info, the stable route serves.
        self.assertTrue(refused(int(second["listen"].split(":")[1])))
        self.assertFalse(os.path.exists(second["socket"]))
        self.assertEqual([f.name for f in p.workdir.iterdir() if f.name.endswith(".new")], [])
        offset = len(p.log_path.read_bytes())
        self.assertEqual(scalar(connect(p.port), "SELECT 1"), 1)
        self.assertEqual(scalar(stable, "SELECT 2"), 2)
        time.sleep(0.3)
        self.assertNotIn("accepted on route", p.log_since(offset))
        # A new route whose secret cannot be read fails the reload as a whole too.
        gone = dict(second, secret_file=str(p.workdir / "no-such-secret.json"))
        p.write_conf(settings, dict(routes, a_first=gone))
        text = p.reload(expect_ok=False)
        self.assertIn("no-such-secret.json", text)
        self.assertTrue(refused(int(second["listen"].split(":")[1])))
        # Once the port is free, the same file applies.
        taken.close()
        p.write_conf(settings, dict(routes, a_first=second, extra=extra))
        text = p.reload()
        self.assertIn("route a_first added", text)
        self.assertIn("route extra added", text)
        self.assertEqual(scalar(connect(busy), "SELECT 3"), 3)
        self.assertEqual(scalar(connect(socket_path=second["socket"]), "SELECT 4"), 4)

    def test_twenty_reloads_add_and_remove_under_load(self):
        p, settings, routes = self.routes_proxy()
        port = free_port()
        extra = self.extra_route(p, port)
        load = Load(p.port).start()
        served = 0
        try:
            time.sleep(0.5)
            for i in range(20):
                adding = i % 2 == 0
                p.write_conf(settings, dict(routes, extra=extra) if adding else routes)
                text = p.reload()
                self.assertIn("route extra %s" % ("added" if adding else "removed"), text)
                if adding:
                    c = connect(port)
                    self.assertEqual(scalar(c, "SELECT %s", (i,)), i)
                    c.close()
                    served += 1
                else:
                    self.assertTrue(refused(port))
                time.sleep(0.1)
            time.sleep(0.5)
        finally:
            load.finish()
        self.assertEqual(load.errors, [], "the stable route's clients saw errors")
        self.assertGreater(min(load.done), 5, "a client thread made no progress: %r" % load.done)
        self.assertEqual(served, 10)
        self.assertTrue(p.alive())
        log = p.log()
        self.assertEqual(log.count("configuration reloaded"), 20)
        self.assertNotIn("reload failed", log)


class SecondServer(ReloadCase):
    """upstream_port moved to a second MariaDB (tests/mariadb.sh) takes new connections there."""

    def setUp(self):
        super().setUp()
        self.b_dir = self.fixture.dir / "runs" / ("reload-second.%d" % os.getpid())
        self.b_port = free_port()
        self.addCleanup(shutil.rmtree, self.b_dir, ignore_errors=True)
        subprocess.run(["bash", str(ROOT / "tests" / "mariadb.sh"), "start", str(self.b_dir),
                        str(self.b_port)], check=True, capture_output=True, timeout=180)
        self.addCleanup(subprocess.run, ["bash", str(ROOT / "tests" / "mariadb.sh"), "stop",
                                         str(self.b_dir)], capture_output=True, timeout=120)
        pw = self.fixture.secret()["password"].replace("\\", "\\\\").replace("'", "\\'")
        p = subprocess.run(["mariadb", "--no-defaults", "--socket=%s" % (self.b_dir / "mysqld.sock"),
                            "--user=root"], input="ALTER USER 'app'@'127.0.0.1' IDENTIFIED BY "
                           "'%s';" % pw, capture_output=True, text=True, timeout=60,
                           env=harness.client_env())
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_upstream_port_moves_new_connections(self):
        a = self.fixture.port
        settings = {"upstream_host": "127.0.0.1", "upstream_port": a, "workers": 2}
        p = self.start_conf_proxy(settings).start()
        open_client = connect(p.port)
        self.assertEqual(scalar(open_client, "SELECT @@port"), a)
        # A few pooled connections to A, idle when the reload comes.
        for _ in range(3):
            self.assertEqual(scalar(connect(p.port), "SELECT @@port"), a)
        p.write_conf(dict(settings, upstream_port=self.b_port))
        text = p.reload()
        self.assertIn("upstream_port", text)
        for _ in range(6):
            c = connect(p.port)
            self.assertEqual(scalar(c, "SELECT @@port"), self.b_port)
            c.close()
        # The client that was open keeps its server and works.
        self.assertEqual(scalar(open_client, "SELECT @@port"), a)
        open_client.close()


if __name__ == "__main__":
    main()
