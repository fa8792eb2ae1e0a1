#!/usr/bin/python3
"""Real clients end to end: the Connector/C protocol walk (client_test.c) and sysbench."""

import re
import subprocess
import time

import harness
from harness import ProxyTestCase, connect


def run_client_test(args, env, timeout=300):
    p = subprocess.run([harness.client_test_program()] + list(args), capture_output=True,
                       text=True, timeout=timeout, env=harness.client_env(env),
                       stdin=subprocess.DEVNULL)
    return p, p.stdout + p.stderr


class ClientProgramDirect(ProxyTestCase):
    """The program against MariaDB itself, so a failure through the proxy means the proxy."""

    needs_proxy = False

    def test_direct_tcp_and_socket(self):
        secret = self.fixture.secret()
        env = {"CLIENT_TEST_USER": secret["username"], "CLIENT_TEST_PASSWORD": secret["password"],
               "CLIENT_TEST_DB": secret["dbname"], "CLIENT_TEST_CHANGE_USER": secret["username"],
               "CLIENT_TEST_EXPECT_USER": secret["username"]}
        for args in (["127.0.0.1", str(self.fixture.port)], ["--socket", self.fixture.socket]):
            with self.subTest(args=args):
                p, out = run_client_test(args, env)
                self.assertEqual(p.returncode, 0, out)
                self.assertNotIn("FAIL", out)
                harness.assert_no_secret(out, [secret["password"]], "client_test output")


class ClientProgram(ProxyTestCase):
    def wait_upstream_known(self, proxy):
        """Waits until credproxy greets with the upstream's version (and so its capabilities).

        Clients greeted before credproxy has met the upstream get a stand-in version and
        MySQL capabilities, without MariaDB's bulk operations that client_test uses.
        """
        direct = self.fixture.direct(self.fixture.secret())
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
                self.fail("credproxy still greets as %r, not the upstream's %r" % (got, want))
            time.sleep(0.1)

    def check(self, proxy, args, user):
        p, out = run_client_test(args, {"CLIENT_TEST_EXPECT_USER": user})
        if p.returncode != 0 or "FAIL" in out:
            self.fail("client_test %s failed (exit %d):\n%s" % (" ".join(args), p.returncode, out))
        self.assertIn("big_blob_20MiB: OK", out)
        self.assertTrue(proxy.alive())

    def test_through_tcp_and_socket(self):
        proxy = self.start_proxy(socket=True)
        self.wait_upstream_known(proxy)
        user = self.fixture.secret()["username"]
        self.check(proxy, ["127.0.0.1", str(proxy.port)], user)
        self.check(proxy, ["--socket", str(proxy.socket)], user)

    def test_through_tls_upstream(self):
        proxy = self.start_proxy("--upstream-tls", "verify-identity", "--upstream-ca",
                                 str(self.fixture.tls / "ca.pem"), secret="secret-tls.json")
        self.wait_upstream_known(proxy)
        self.check(proxy, ["127.0.0.1", str(proxy.port)],
                   self.fixture.secret("secret-tls.json")["username"])


class Sysbench(ProxyTestCase):
    def sysbench(self, port, *args, timeout=120):
        argv = ["sysbench", "oltp_read_write", "--db-driver=mysql", "--mysql-host=127.0.0.1",
                "--mysql-port=%d" % port, "--mysql-user=x", "--mysql-password=",
                "--mysql-db=app", "--tables=2", "--table-size=1000", "--mysql-ssl=off"]
        p = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, env=harness.client_env())
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, "sysbench %s failed:\n%s" % (args[-1], out))
        self.assertNotIn("FATAL", out)
        return out

    @staticmethod
    def stat(out, name):
        m = re.search(r"^\s*%s:\s+(\d+)" % re.escape(name), out, re.M)
        if not m:
            raise AssertionError("no '%s:' line in the sysbench output:\n%s" % (name, out))
        return int(m.group(1))

    def test_oltp_read_write(self):
        proxy = self.start_proxy()
        self.sysbench(proxy.port, "cleanup")
        self.addCleanup(self.sysbench, proxy.port, "cleanup")
        self.sysbench(proxy.port, "--threads=2", "prepare")
        for mode, seconds in (("auto", 10), ("disable", 5)):  # prepared statements, then text
            with self.subTest(db_ps_mode=mode):
                out = self.sysbench(proxy.port, "--threads=4", "--time=%d" % seconds,
                                    "--db-ps-mode=%s" % mode, "run")
                transactions = self.stat(out, "transactions")
                ignored = self.stat(out, "ignored errors")  # deadlocks sysbench retries
                print("sysbench db-ps-mode=%s: %d transactions, %d ignored errors (deadlocks)"
                      % (mode, transactions, ignored))
                self.assertGreater(transactions, 0)
                self.assertEqual(self.stat(out, "reconnects"), 0)
                self.assertLess(ignored, max(10, transactions // 50), "too many errors:\n" + out)
        self.assertTrue(proxy.alive())


if __name__ == "__main__":
    harness.main()
