"""systemd's side of NOTIFY_SOCKET: a unix datagram socket bound by the test, the real credproxy
started with NOTIFY_SOCKET (and WATCHDOG_USEC) in its environment, a real MariaDB upstream.

READY=1 must come only once the listeners accept (a client connecting the moment it arrives
gets an answer) and never from a process that fails to start; WATCHDOG=1 comes every
WATCHDOG_USEC/2 and not at all when WATCHDOG_PID names another process; STOPPING=1 follows
SIGTERM; RELOADING=1 (with MONOTONIC_USEC) then READY=1 again around a SIGHUP reload; an
abstract socket name (@name) works. A stuck worker stopping the pings is checked in
tests/unit/test_sd_notify.c.

The example unit (conf/examples/credproxy.service) is checked to be Type=notify with
ExecReload and WatchdogSec and its hardening, and passes `systemd-analyze verify`.
"""

import configparser
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from harness import ROOT, ProxyTestCase, connect, main, scalar


class NotifySocket:
    """A bound SOCK_DGRAM unix socket playing systemd: collects (monotonic time, fields)."""

    def __init__(self, address):
        self.name = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages = []

    def receive(self, timeout):
        """Collects every datagram arriving within timeout seconds; returns the new ones."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            got.append((time.monotonic(), fields))
        self.messages += got
        return got

    def wait_for(self, key, timeout):
        """Waits for a message carrying key; returns (time, fields) or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return None
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.messages.append((time.monotonic(), fields))
            if key in fields:
                return time.monotonic(), fields
        return None

    def close(self):
        self.sock.close()


class SdNotify(ProxyTestCase):
    def notify_socket(self, abstract=False):
        if abstract:
            name = "@credproxy-test/%d/%d" % (os.getpid(), time.monotonic_ns())
        else:
            name = str(self.workdir / "notify.sock")
        s = NotifySocket(name)
        self.addCleanup(s.close)
        return s

    def launch(self, env, *args, raw_secret=None):
        """Starts credproxy with env added, without waiting for its listener (the test does)."""
        p = self.start_proxy(*args, start=False)
        if raw_secret is not None:
            p.write_secret(raw_secret)
        full = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            full.pop(k, None)
        full.update(env)
        with open(p.log_path, "ab") as log:
            p.proc = subprocess.Popen(p.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, cwd=p.workdir, env=full)
        return p

    def test_ready_once_listening_then_stopping_on_sigterm(self):
        ns = self.notify_socket()
        p = self.launch({"NOTIFY_SOCKET": ns.name})
        ready = ns.wait_for("READY", 20)
        self.assertIsNotNone(ready, "no READY=1 within 20 s")
        # The moment READY=1 arrives, the listener must already accept and answer.
        conn = connect(p.port, connect_timeout=5)
        self.assertEqual(scalar(conn, "SELECT 7 * 6"), 42)
        self.assertEqual(ready[1]["READY"], "1")
        self.assertTrue(ready[1].get("STATUS", "").startswith("ready"), ready[1])
        conn.close()
        # Nothing but STATUS-only messages before READY, and no watchdog without WATCHDOG_USEC.
        ns.receive(1.2)
        self.assertFalse([m for _, m in ns.messages if "WATCHDOG" in m])
        os.kill(p.proc.pid, signal.SIGTERM)
        stopping = ns.wait_for("STOPPING", 15)
        self.assertIsNotNone(stopping, "no STOPPING=1 after SIGTERM")
        self.assertEqual(stopping[1]["STOPPING"], "1")
        self.assertEqual(p.proc.wait(15), 0)
        keys = [k for _, m in ns.messages for k in m if k != "STATUS"]
        self.assertEqual(keys[0], "READY", keys)  # READY first, STOPPING only after it

    def test_reloading_then_ready_around_a_sighup_reload(self):
        ns = self.notify_socket()
        p = self.launch({"NOTIFY_SOCKET": ns.name})
        self.assertIsNotNone(ns.wait_for("READY", 20), "no READY=1 within 20 s")
        os.kill(p.proc.pid, signal.SIGHUP)
        reloading = ns.wait_for("RELOADING", 10)
        self.assertIsNotNone(reloading, "no RELOADING=1 after SIGHUP")
        self.assertEqual(reloading[1]["RELOADING"], "1")
        usec = int(reloading[1]["MONOTONIC_USEC"])
        self.assertLess(abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)), 10)
        ready = ns.wait_for("READY", 10)
        self.assertIsNotNone(ready, "no READY=1 after the reload")
        self.assertGreater(ready[0], reloading[0])
        self.assertEqual(scalar(connect(p.port), "SELECT 1"), 1)

    def test_abstract_socket_name(self):
        ns = self.notify_socket(abstract=True)
        p = self.launch({"NOTIFY_SOCKET": ns.name})
        self.assertIsNotNone(ns.wait_for("READY", 20), "no READY=1 on %s" % ns.name)
        self.assertEqual(scalar(connect(p.port), "SELECT 1"), 1)

    def test_no_ready_when_start_up_fails(self):
        ns = self.notify_socket()
        p = self.launch({"NOTIFY_SOCKET": ns.name}, raw_secret='{"username": "x"')  # not JSON
        self.assertNotEqual(p.proc.wait(20), 0)
        p.proc = None  # exited by itself; nothing for the harness to stop
        ns.receive(0.3)
        self.assertFalse([m for _, m in ns.messages if "READY" in m], ns.messages)

    def test_watchdog_pings_every_half_period(self):
        ns = self.notify_socket()
        p = self.launch({"NOTIFY_SOCKET": ns.name, "WATCHDOG_USEC": "1000000"}, "--workers", "2")
        self.assertIsNotNone(ns.wait_for("READY", 20))
        conn = connect(p.port)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:  # queries all along: the loops are busy, not stuck
            self.assertEqual(scalar(conn, "SELECT 1"), 1)
            ns.receive(0.05)
        pings = [t for t, m in ns.messages if m.get("WATCHDOG") == "1" and t >= t0]
        self.assertGreaterEqual(len(pings), 5, "WATCHDOG=1 every 0.5 s expected over 3 s")
        self.assertLessEqual(len(pings), 8)
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        self.assertLess(max(gaps), 0.9, gaps)
        self.assertTrue(p.wait_log("systemd watchdog: pinging every 500 ms"))

    def test_watchdog_pid_of_another_process_is_ignored(self):
        ns = self.notify_socket()
        self.launch({"NOTIFY_SOCKET": ns.name, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
        self.assertIsNotNone(ns.wait_for("READY", 20))
        ns.receive(1.0)
        self.assertFalse([m for _, m in ns.messages if "WATCHDOG" in m])

    def test_without_notify_socket_nothing_changes(self):
        p = self.start_proxy()  # the harness' own start: no NOTIFY_SOCKET in its environment
        self.assertEqual(scalar(connect(p.port), "SELECT 1"), 1)
        self.assertNotIn("NOTIFY_SOCKET", p.log())


class ExampleUnit(unittest.TestCase):
    """The unit file alone: needs neither the fixture nor a build."""

    UNIT = ROOT / "conf" / "examples" / "credproxy.service"

    def service(self):
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.optionxform = str
        cp.read(self.UNIT)
        return cp["Service"]

    def test_type_notify_reload_watchdog_and_hardening(self):
        s = self.service()
        self.assertEqual(s["Type"], "notify")
        self.assertEqual(s["ExecReload"], "/bin/kill -HUP $MAINPID")
        self.assertRegex(s["WatchdogSec"], r"^\d+s?$")
        for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                           ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("LimitCORE", "0"),
                           ("DynamicUser", "yes")):
            self.assertEqual(s.get(key), value, key)

    def test_systemd_analyze_verify(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed")
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        unit = Path(tmp.name) / "credproxy.service"
        # verify wants ExecStart's binary to exist; the unit names its installed path.
        unit.write_text(re.sub(r"(?m)^ExecStart=\S+", "ExecStart=/bin/true",
                               self.UNIT.read_text()))
        p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("credproxy.service:", p.stderr)


if __name__ == "__main__":
    main()
