"""The HTTP admin endpoint (admin_listen): /metrics, /healthz, /readyz, /status, /status.json.

Scraped with a real HTTP client (urllib), the metrics checked by Prometheus' own promtool, the
status page rendered by headless Chromium, against the real binary and a real MariaDB.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws"))

import harness  # noqa: E402
from aws_fixture import SECRET_KEY, AwsTestCase  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def http(url, method="GET", timeout=10):
    """(status, headers, body text) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8")


def parse_metrics(text):
    """{(name, frozenset of label pairs): value} of a text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(samples, name, **labels):
    want = set(labels.items())
    got = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert len(got) == 1, "%s%r: %d samples" % (name, labels, len(got))
    return got[0]


def chromium_argv():
    """Headless Chromium that can reach nothing but loopback (no background traffic)."""
    return ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--no-pings",
            "--proxy-server=http://127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]


class AdminMixin:
    def admin_proxy(self, *args, **kw):
        port = harness.free_port()
        p = self.start_proxy("--admin-listen", "127.0.0.1:%d" % port, *args, **kw)
        p.admin = "http://127.0.0.1:%d" % port
        self.wait_admin(p)
        return p

    def wait_admin(self, p, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return http(p.admin + "/healthz", timeout=2)
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("admin endpoint did not answer:\n" + p.log())
                time.sleep(0.05)

    def scrape(self, p):
        status, headers, body = http(p.admin + "/metrics")
        self.assertEqual(status, 200, body)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        return body, parse_metrics(body)

    def promtool(self, text):
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, "promtool check metrics:\n%s%s" % (r.stdout, r.stderr))

    def wait_until(self, cond, timeout=10, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = cond()
            if got:
                return got
            time.sleep(0.1)
        raise AssertionError("timed out waiting for " + what)

    def all_outputs(self, p):
        return "\n".join(http(p.admin + path)[2]
                         for path in ("/metrics", "/healthz", "/readyz", "/status",
                                      "/status.json"))


class AdminEndpoint(AdminMixin, harness.ProxyTestCase):

    def test_metrics_pass_promtool_and_count_traffic(self):
        p = self.admin_proxy("--workers", "2")
        body, before = self.scrape(p)
        self.promtool(body)
        n = 25
        conn = harness.connect(port=p.port)
        for i in range(n):
            self.assertEqual(harness.scalar(conn, "SELECT %d" % i), i)
        conn.close()
        body, after = self.scrape(p)
        self.promtool(body)
        r = {"route": "default"}

        def delta(name, **labels):
            return metric(after, name, **r, **labels) - metric(before, name, **r, **labels)

        self.assertGreaterEqual(delta("credproxy_commands_total"), n)
        self.assertGreaterEqual(delta("credproxy_client_connections_accepted_total"), 1)
        self.assertGreater(delta("credproxy_relayed_bytes_total", direction="in"), n * 9)
        self.assertGreater(delta("credproxy_relayed_bytes_total", direction="out"), n * 20)
        self.assertGreaterEqual(metric(after, "credproxy_upstream_logins_total", result="ok",
                                       **r), 1)
        self.assertGreaterEqual(metric(after, "credproxy_upstream_login_versions_total",
                                       stage="AWSCURRENT", **r), 1)
        self.assertEqual(metric(after, "credproxy_secret_info", **r, source="file",
                                stage="file"), 1)
        self.assertGreaterEqual(metric(after, "credproxy_secret_reads_total", **r,
                                       result="ok"), 1)
        self.assertLess(metric(after, "credproxy_secret_last_good_read_age_seconds", **r), 10)
        self.assertGreater(metric(after, "process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(metric(after, "process_open_fds"), 3)
        self.assertLess(abs(metric(after, "process_start_time_seconds") - time.time()), 120)
        self.assertEqual(metric(after, "credproxy_phase", phase="ready"), 1)
        # The connection went back to the pool: the gauges (sampled each second) show it idle.
        self.wait_until(lambda: metric(self.scrape(p)[1], "credproxy_upstream_connections",
                                       state="idle", **r) >= 1, what="an idle connection")

    def test_refusals_are_counted_by_reason(self):
        users = self.workdir / "users"
        rows = self.fixture.root_sql("SELECT PASSWORD('localpw')")
        users.write_text("alice:%s\n" % rows[0][0])
        os.chmod(users, 0o600)
        p = self.admin_proxy("--client-auth", "password", "--users-file", str(users),
                             "--max-client-connections", "1", "--handshake-timeout", "500ms")
        p.passwords.add("localpw")
        _, m0 = self.scrape(p)
        self.assertMysqlError(1045, harness.connect, port=p.port, user="alice",
                              password="wrong")
        # A login packet out of sequence is a bad packet.
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            harness.recv_packet(s)
            s.sendall(b"\x01\x00\x00\x07\x00")
            harness.recv_until_closed(s)
        # A client that never logs in runs into handshake_timeout.
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            harness.recv_packet(s)
            harness.recv_until_closed(s)
        # A second client while one is connected is over max_client_connections.
        held = harness.connect(port=p.port, user="alice", password="localpw")
        self.assertMysqlError(1040, harness.connect, port=p.port, user="alice",
                              password="localpw")
        held.close()
        _, m1 = self.scrape(p)
        for reason in ("auth", "bad_packet", "handshake_timeout", "limit"):
            name = "credproxy_client_connections_refused_total"
            self.assertEqual(metric(m1, name, reason=reason) - metric(m0, name, reason=reason),
                             1, reason)

    def test_healthz_and_readyz(self):
        p = self.admin_proxy("--workers", "2")
        self.assertEqual(http(p.admin + "/healthz")[:1], (200,))
        status, _, body = http(p.admin + "/readyz")
        self.assertEqual((status, body), (200, "ready\n"))
        _, m = self.scrape(p)
        for w in ("0", "1"):
            self.assertLess(metric(m, "credproxy_worker_heartbeat_age_seconds", worker=w), 3)

    def test_readyz_waits_for_a_secret_that_logs_in(self):
        bad = dict(self.fixture.secret(), password="not-" + secrets.token_hex(8))
        p = self.admin_proxy("--connect-timeout", "1s", secret=bad)
        status, _, body = http(p.admin + "/readyz")
        self.assertEqual(status, 503, body)
        self.assertRegex(body, r"^route default: upstream not reached yet")
        self.assertEqual(body.count("\n"), 1, "one line: %r" % body)
        # The probe's refusal is the reason once it is known.
        self.wait_until(lambda: "Access denied" in http(p.admin + "/readyz")[2], timeout=10,
                        what="the probe's error in /readyz")
        p.write_secret(self.fixture.secret())
        self.wait_until(lambda: http(p.admin + "/readyz")[0] == 200, timeout=20,
                        what="/readyz 200 after the secret was fixed")

    def test_readyz_fails_while_the_upstream_is_unreachable(self):
        p = self.admin_proxy("--upstream-port", str(harness.free_port()), "--connect-timeout",
                             "1s")
        status, _, body = http(p.admin + "/readyz")
        self.assertEqual(status, 503, body)
        self.assertIn("route default: upstream not reached", body)
        self.assertEqual(http(p.admin + "/healthz")[0], 200)

    def test_paths_and_methods(self):
        p = self.admin_proxy()
        self.assertEqual(http(p.admin + "/nope")[0], 404)
        self.assertEqual(http(p.admin + "/metrics/x")[0], 404)
        for method in ("POST", "PUT", "DELETE"):
            status, headers, _ = http(p.admin + "/metrics", method=method)
            self.assertEqual(status, 405, method)
            self.assertEqual(headers["Allow"], "GET, HEAD")
        status, headers, body = http(p.admin + "/status.json")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/json")
        doc = json.loads(body)
        self.assertEqual(doc["routes"][0]["name"], "default")
        self.assertEqual(doc["routes"][0]["pool"]["pool_size"], 100)
        self.assertEqual(doc["routes"][0]["secret"]["source"], "file")
        self.assertEqual(doc["process"]["phase"], "ready")

    def test_status_shows_the_ephemeral_certificate_fingerprint(self):
        p = self.admin_proxy()
        logged = re.search(r"ephemeral self-signed certificate.*SHA-256 fingerprint "
                           r"([0-9A-F:]{95})", p.log())
        self.assertTrue(logged, p.log())
        tls = json.loads(http(p.admin + "/status.json")[2])["routes"][0]["client_tls"]
        self.assertEqual(tls, {"fingerprint_sha256": logged.group(1), "ephemeral": True})
        self.assertIn(logged.group(1), http(p.admin + "/status")[2])

    def test_hostile_http_clients_hurt_no_one(self):
        """Malformed, oversized, cut and idle requests: each gets an error or is closed, and
        the endpoint and the proxy keep answering (run under ASan in the sanitizer stage)."""
        p = self.admin_proxy()
        host, port = p.admin[len("http://"):].split(":")

        def exchange(data, read=True):
            s = socket.create_connection((host, int(port)), timeout=5)
            try:
                s.sendall(data)
                if not read:
                    return b""
                got = b""
                while True:
                    try:
                        chunk = s.recv(65536)
                    except (ConnectionResetError, socket.timeout):
                        break
                    if not chunk:
                        break
                    got += chunk
                return got
            finally:
                s.close()

        self.assertRegex(exchange(b"GARBAGE\x00\xff\r\n\r\n"), rb"^(HTTP/1\.[01] 400|$)")
        big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n"
        self.assertNotIn(b" 200 ", exchange(big)[:20])
        body = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
        self.assertNotIn(b" 200 ", exchange(body + b"x" * 100000)[:20])
        exchange(b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Le", read=False)
        exchange(b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % (b"%00%ff<" * 2000))
        idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(50)]
        try:
            self.assertEqual(http(p.admin + "/healthz")[0], 200)
            body, _ = self.scrape(p)
            self.promtool(body)
            self.assertEqual(harness.scalar(harness.connect(port=p.port), "SELECT 1"), 1)
        finally:
            for s in idle:
                s.close()
        self.assertIsNone(p.proc.poll(), "the proxy died:\n" + p.log())

    def test_status_escapes_every_string(self):
        # A secret file whose path is markup: <script>alert(1)</script>
        d = self.workdir / "<script>alert(1)<" / "script>"
        d.mkdir(parents=True)
        path = d / "secret.json"
        harness.write_json_atomic(path, self.fixture.secret())
        p = self.admin_proxy("--secret-file", str(path))
        status, _, page = http(p.admin + "/status")
        self.assertEqual(status, 200)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;/secret.json", page)
        self.assertNotIn("<script", page)
        self.assertNotIn("alert(1)</", page)
        doc = json.loads(http(p.admin + "/status.json")[2])
        self.assertEqual(doc["routes"][0]["secret"]["id"], str(path))
        body, m = self.scrape(p)
        self.promtool(body)
        self.assertEqual(metric(m, "credproxy_secret_info", id=str(path)), 1)

    def test_no_password_in_any_output(self):
        p = self.admin_proxy()
        harness.scalar(harness.connect(port=p.port), "SELECT 1")
        harness.assert_no_secret(self.all_outputs(p), p.passwords | {SECRET_KEY}, "admin output")

    def test_status_page_in_chromium(self):
        if not shutil.which("chromium"):
            self.fail("chromium is not installed (tests/run-all.sh --deps-only installs it)")
        p = self.admin_proxy("--workers", "2", "--pool-size", "7")
        conns = [harness.connect(port=p.port) for _ in range(3)]
        for c in conns:
            harness.scalar(c, "SELECT 1")
        # Sampled once a second: wait until the page shows the three lent connections.
        self.wait_until(lambda: json.loads(http(p.admin + "/status.json")[2])
                        ["routes"][0]["pool"]["sv_active"] == 3, what="3 active connections")
        profile = self.workdir / "chromium"
        shot = self.workdir / "status.png"
        argv = chromium_argv() + ["--user-data-dir=%s" % profile]
        r = subprocess.run(argv + ["--screenshot=%s" % shot, "--window-size=1200,900",
                                   p.admin + "/status"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(shot.stat().st_size, 10000)
        self.assertEqual(shot.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        r = subprocess.run(argv + ["--dump-dom", p.admin + "/status"], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        dom = r.stdout
        text = re.sub(r"<[^>]+>", " ", dom)
        self.assertIn("credproxy", text)
        for heading in ("Routes", "Pools", "Secrets", "Recent rotations and reconnects"):
            self.assertIn(heading, text)
        # The pools row: route, cl_active 3, cl_waiting 0, cl_idle 0, cl_login 0, sv_active 3.
        row = re.search(r"<tr><td>default</td>((?:<td>[^<]*</td>){9})", dom)
        self.assertIsNotNone(row, dom)
        cells = re.findall(r"<td>([^<]*)</td>", row.group(1))
        self.assertEqual(cells[:5], ["3", "0", "0", "0", "3"], cells)
        self.assertEqual(cells[8], "7", cells)  # pool_size
        for c in conns:
            c.close()
        out = os.environ.get("CREDPROXY_STATUS_PNG")
        if out:
            shutil.copy(shot, out)


class AdminConfig(AdminMixin, harness.ProxyTestCase):

    def test_non_loopback_admin_listen_is_refused(self):
        secret = self.fixture.secret_path()
        r = harness.run_proxy_once(self.workdir, ["--secret-file", str(secret), "--admin-listen",
                                                  "0.0.0.0:9187"])
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("--admin-listen: '0.0.0.0:9187' is not a loopback address", r.stderr)
        conf = self.workdir / "credproxy.conf"
        conf.write_text("secret_file = %s\n\n# metrics for the world\nadmin_listen = "
                        "192.0.2.1:9187\n" % secret)
        r = harness.run_proxy_once(self.workdir, ["--config", str(conf), "--check-config"])
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("%s:4: key 'admin_listen': '192.0.2.1:9187' is not a loopback address"
                      % conf, r.stderr)
        # Said on purpose, it is accepted (checked only: nothing binds a public address here).
        with conf.open("a") as f:
            f.write("admin_listen_public = true\n")
        r = harness.run_proxy_once(self.workdir, ["--config", str(conf), "--check-config"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = harness.run_proxy_once(self.workdir, ["--secret-file", str(secret), "--admin-listen",
                                                  "localhost", "--check-config"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--admin-listen: 'localhost' is not HOST:PORT", r.stderr)

    def test_off_by_default(self):
        p = self.start_proxy()
        self.assertNotIn("admin endpoint", p.log())


class AdminAws(AdminMixin, AwsTestCase):
    """A Secrets Manager route: stage and version as labels; no secret key or password shown."""

    def admin_aws_proxy(self, *args):
        port = harness.free_port()
        p = self.aws_proxy("--admin-listen", "127.0.0.1:%d" % port, *args)
        p.admin = "http://127.0.0.1:%d" % port
        self.wait_admin(p)
        return p

    def test_secret_metrics_and_no_secret_shown(self):
        p = self.admin_aws_proxy("--secret-refresh", "300ms")
        self.assert_serving(p)
        self.wait_until(lambda: metric(self.scrape(p)[1], "credproxy_secret_reads_total",
                                       result="unchanged") >= 2, what="2 unchanged reads")
        body, m = self.scrape(p)
        self.promtool(body)
        self.assertEqual(metric(m, "credproxy_secret_info", source="aws", id="prod/app/db",
                                stage="AWSCURRENT", version=self.secret_vid), 1)
        self.assertEqual(metric(m, "credproxy_secret_reads_total", result="ok"), 1)
        self.assertEqual(metric(m, "credproxy_secret_reads_total", result="error"), 0)
        self.assertEqual(metric(m, "credproxy_secret_rotations_total"), 0)
        # A new AWSCURRENT is a rotation, and shows as the version in use.
        vid = self.sm.put("prod/app/db", self.db_secret)
        self.wait_until(lambda: metric(self.scrape(p)[1], "credproxy_secret_rotations_total")
                        == 1, what="a rotation")
        self.assertEqual(metric(self.scrape(p)[1], "credproxy_secret_info", version=vid), 1)
        doc = json.loads(http(p.admin + "/status.json")[2])
        self.assertEqual(doc["routes"][0]["secret"]["stage"], "AWSCURRENT")
        self.assertIn(vid, [v["version"] for v in doc["routes"][0]["secret"]["recent_versions"]])
        harness.assert_no_secret(self.all_outputs(p), self.secret_values, "admin output")

    def test_read_errors_are_counted_and_shown(self):
        p = self.admin_aws_proxy("--secret-refresh", "300ms")
        self.sm.stop()
        self.wait_until(lambda: metric(self.scrape(p)[1], "credproxy_secret_reads_total",
                                       result="error") >= 1, what="a failed read")
        doc = json.loads(http(p.admin + "/status.json")[2])
        self.assertNotEqual(doc["routes"][0]["secret"]["last_error"], "")
        # Still serving with the last good credentials, and still ready.
        self.assert_serving(p)
        self.assertEqual(http(p.admin + "/readyz")[0], 200)


if __name__ == "__main__":
    harness.main()
