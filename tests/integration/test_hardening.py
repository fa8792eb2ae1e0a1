#!/usr/bin/python3
"""Runtime hardening: close-on-exec on every descriptor, no core dumps, a log that never
blocks the workers and cannot be forged by a client."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws"))

import pymysql  # noqa: E402

import harness  # noqa: E402
from harness import ProxyTestCase, connect, scalar  # noqa: E402
from aws_fixture import AwsTestCase  # noqa: E402

O_CLOEXEC = 0o2000000
NOBODY = 65534


def fd_flags(pid):
    """{fd: (flags from fdinfo, link target)} for every open descriptor of pid."""
    out = {}
    for name in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, name))
            info = Path("/proc/%d/fdinfo/%s" % (pid, name)).read_text()
        except OSError:
            continue  # closed meanwhile
        flags = int(re.search(r"^flags:\s+([0-7]+)", info, re.M).group(1), 8)
        out[int(name)] = (flags, target)
    return out


def hold_clients(port, n):
    """n open client connections, each having run a query (so each holds an upstream socket)."""
    conns = []
    for _ in range(n):
        c = connect(port)
        scalar(c, "SELECT 1")
        conns.append(c)
    return conns


class CloseOnExec(ProxyTestCase):
    def test_every_descriptor_of_the_daemon_is_close_on_exec(self):
        proxy = self.start_proxy("--workers", "2", socket=True)
        conns = hold_clients(proxy.port, 6)
        conns.append(connect(socket_path=proxy.socket))
        try:
            fds = fd_flags(proxy.proc.pid)
            sockets = [fd for fd, (_, t) in fds.items() if t.startswith("socket:")]
            # listeners (2 workers + unix), 7 clients, >= 7 upstream connections
            self.assertGreaterEqual(len(sockets), 17, fds)
            leaky = {fd: (oct(f), t) for fd, (f, t) in fds.items()
                     if fd > 2 and not f & O_CLOEXEC}
            self.assertEqual(leaky, {}, "descriptors without close-on-exec")
            # stdio is inherited on purpose, and is not close-on-exec: the check can fail.
            self.assertFalse(fds[2][0] & O_CLOEXEC)
        finally:
            for c in conns:
                c.close()


class CredentialProcessFds(AwsTestCase):
    def test_credential_process_inherits_only_stdio(self):
        """The helper runs again (refresh) while clients are connected; it must see only 0-2."""
        c = self.keyring.issue(3600)
        self.secret_values.add(c["SecretAccessKey"])
        record = self.workdir / "fds.jsonl"
        # Credentials said to expire in 40 s are refreshed about every 5 s.
        script = self.workdir / "helper.py"
        script.write_text(
            "import datetime, json, os\n"
            "fds = {}\n"
            "for n in os.listdir('/proc/self/fd'):\n"
            "    try:\n"
            "        fds[n] = os.readlink('/proc/self/fd/' + n)\n"
            "    except OSError:\n"
            "        pass\n"
            "with open(%r, 'a') as f:\n"
            "    f.write(json.dumps(fds) + '\\n')\n"
            "exp = datetime.datetime.utcnow() + datetime.timedelta(seconds=40)\n"
            "print(json.dumps(dict(Version=1, AccessKeyId=%r, SecretAccessKey=%r,\n"
            "                      SessionToken=%r, Expiration=exp.strftime('%%Y-%%m-%%dT%%H:%%M:%%SZ'))))\n"
            % (str(record), c["AccessKeyId"], c["SecretAccessKey"], c["Token"]))
        os.chmod(script, 0o700)
        (self.home / ".aws").mkdir(parents=True, exist_ok=True)
        (self.home / ".aws" / "config").write_text(
            "[default]\ncredential_process = /usr/bin/python3 %s\n" % script)
        p = self.aws_proxy("--workers", "2", env=self.clean_env())
        conns = hold_clients(p.port, 5)
        try:
            self.wait_for(lambda: record.exists() and len(record.read_text().splitlines()) >= 2,
                          timeout=30, what="a second run of credential_process")
            runs = [json.loads(line) for line in record.read_text().splitlines()]
            fds = fd_flags(p.proc.pid)
            self.assertGreater(sum(1 for t in fds.values() if t[1].startswith("socket:")), 10)
            # With the AWS source, curl's descriptors too (its own sockets, its wakeup pair).
            leaky = {fd: (oct(f), t) for fd, (f, t) in fds.items() if fd > 2 and not f & O_CLOEXEC}
            self.assertEqual(leaky, {}, "descriptors without close-on-exec")
            for run in runs[1:]:
                sockets = {fd: t for fd, t in run.items() if t.startswith("socket:")}
                self.assertEqual(sockets, {}, "credential_process inherited sockets")
                # 0-2 and the descriptor listdir itself used (closed by the time of readlink)
                extra = {fd: t for fd, t in run.items()
                         if int(fd) > 2 and not t.startswith("/proc/")}
                self.assertEqual(extra, {}, "credential_process inherited descriptors")
                self.assertTrue(run["1"].startswith("pipe:"), run)
        finally:
            for conn in conns:
                conn.close()


class CoreDumps(ProxyTestCase):
    """As root, /proc/PID is readable anyway; run credproxy as nobody: the kernel makes a
    non-dumpable process's /proc/PID files root's, a dumpable one's stay its owner's."""

    def start_as_nobody(self, *args):
        d = Path(tempfile.mkdtemp(prefix="nobody.", dir="/tmp"))
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o755)
        secret = d / "secret.json"
        secret.write_text(json.dumps(self.fixture.secret()))
        os.chown(secret, NOBODY, NOBODY)
        os.chmod(secret, 0o600)
        port = harness.free_port()
        log = open(d / "log", "wb")
        proc = subprocess.Popen(
            ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
             harness.binary(), "--secret-file", str(secret), "--listen", "127.0.0.1:%d" % port]
            + list(args), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def stop():
            proc.terminate()
            proc.wait(10)
        self.addCleanup(stop)
        deadline = time.monotonic() + 10
        while "ready" not in (d / "log").read_text():
            self.assertIsNone(proc.poll(), (d / "log").read_text())
            self.assertLess(time.monotonic(), deadline, (d / "log").read_text())
            time.sleep(0.05)
        return proc

    def test_not_dumpable_by_default(self):
        proc = self.start_as_nobody()
        uid = re.search(r"^Uid:\s+(\d+)", Path("/proc/%d/status" % proc.pid).read_text(), re.M)
        self.assertEqual(int(uid.group(1)), NOBODY)
        self.assertEqual(os.stat("/proc/%d/fd" % proc.pid).st_uid, 0)
        self.assertEqual(os.stat("/proc/%d/environ" % proc.pid).st_uid, 0)

    def test_allow_core_dumps_leaves_it_dumpable(self):
        proc = self.start_as_nobody("--allow-core-dumps", "true")
        self.assertEqual(os.stat("/proc/%d/fd" % proc.pid).st_uid, NOBODY)
        self.assertEqual(os.stat("/proc/%d/environ" % proc.pid).st_uid, NOBODY)


class Logging(ProxyTestCase):
    def test_stalled_stderr_does_not_stop_clients(self):
        """stderr is a pipe nobody reads: 200 clients still log in and query in bounded time."""
        r, w = os.pipe()
        import fcntl
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
        secret = self.workdir / "secret.json"
        harness.write_json_atomic(secret, self.fixture.secret())
        port = harness.free_port()
        proc = subprocess.Popen(
            [harness.binary(), "--secret-file", str(secret), "--listen", "127.0.0.1:%d" % port,
             "--log-level", "debug", "--workers", "2"],
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
        errors = []

        def client():
            try:
                for _ in range(3):
                    c = connect(port)
                    if scalar(c, "SELECT 41 + 1") != 42:
                        errors.append("wrong answer")
                    c.close()
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        t0 = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - t0
        self.assertFalse(any(t.is_alive() for t in threads), "clients still hanging")
        self.assertEqual(errors, [])
        self.assertLess(elapsed, 45)
        # Now read: the log goes on, and says how many lines it dropped.
        os.set_blocking(r, False)
        data = b""
        deadline = time.monotonic() + 10
        while b"log lines dropped" not in data and time.monotonic() < deadline:
            try:
                chunk = os.read(r, 65536)
                data += chunk
            except BlockingIOError:
                time.sleep(0.02)
        self.assertRegex(data.decode("utf-8", "replace"),
                         r"WARN \d+ log lines dropped: stderr was not keeping up")
        proc.terminate()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until EOF: the exit closes the last writer
            try:
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                data += chunk
            except BlockingIOError:
                time.sleep(0.02)
        self.assertEqual(proc.wait(10), 0)
        self.assertTrue(data.endswith(b"INFO credproxy stopped\n"), data[-500:])

    def test_user_name_cannot_forge_a_log_line(self):
        users = self.workdir / "users"
        users.write_text("alice:*0000000000000000000000000000000000000000\n")
        os.chmod(users, 0o600)
        proxy = self.start_proxy("--client-auth", "password", "--users-file", str(users),
                                 "--log-level", "info")
        for _ in range(3):
            self.assertMysqlError(harness.ER_ACCESS_DENIED, connect, proxy.port,
                                  user="x\nERROR forged", password="pw")
        self.assertTrue(proxy.alive())
        log = proxy.log()
        self.assertIn("forged", log)  # the attempt is logged...
        for line in log.splitlines():  # ...but never as a line of its own
            self.assertNotRegex(line, r"^ERROR|^\S+ ERROR forged")

    def test_failed_logins_are_rate_limited_in_the_log(self):
        users = self.workdir / "users"
        users.write_text("alice:*0000000000000000000000000000000000000000\n")
        os.chmod(users, 0o600)
        proxy = self.start_proxy("--client-auth", "password", "--users-file", str(users),
                                 "--log-level", "info", "--workers", "1")

        def next_second():  # the limiter's windows are CLOCK_MONOTONIC seconds, shared
            now = time.clock_gettime(time.CLOCK_MONOTONIC)
            time.sleep(int(now) + 1 - now + 0.01)

        # 70 refusals in one window and 50 in the next: each window logs at most 20 and
        # accounts for the rest in its own summary.
        for batch in (70, 50):
            next_second()
            for _ in range(batch):
                self.assertMysqlError(harness.ER_ACCESS_DENIED, connect, proxy.port,
                                      user="alice", password="wrong")
        self.assertTrue(proxy.wait_log("similar lines in one second", timeout=5))

        def counts():
            log = proxy.log()
            refused = len(re.findall(r"error 1045", log))
            suppressed = sum(int(n) for n in re.findall(
                r"suppressed (\d+) similar lines? in one second \(like: C-%llu %s: error %u",
                log))
            return log, refused, suppressed

        # A window's summary is written once the window is over (the log thread looks every
        # second): wait for the second window's.
        deadline = time.monotonic() + 5
        log, refused, suppressed = counts()
        while refused + suppressed < 120 and time.monotonic() < deadline:
            time.sleep(0.1)
            log, refused, suppressed = counts()
        self.assertLessEqual(refused, 80)  # 20 a window; a slow batch may span two
        self.assertEqual(refused + suppressed, 120, log[-3000:])


class UsersFileMode(ProxyTestCase):
    def test_group_or_world_accessible_users_file_is_refused(self):
        users = self.workdir / "users"
        users.write_text("alice:*0000000000000000000000000000000000000000\n")
        for mode in (0o640, 0o604, 0o620):
            os.chmod(users, mode)
            p = self.start_proxy("--client-auth", "password", "--users-file", str(users),
                                 start=False)
            out = subprocess.run(p.argv(), capture_output=True, text=True, timeout=15)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("%s: readable or writable by group or others (mode %03o); chmod 600 it"
                          % (users, mode), out.stderr)
        os.chmod(users, 0o600)
        self.start_proxy("--client-auth", "password", "--users-file", str(users))


if __name__ == "__main__":
    harness.main()
