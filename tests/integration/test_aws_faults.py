"""Secrets Manager misbehaving after start-up: throttling, 500s, a hanging endpoint, malformed
JSON, a non-RDS secret and SecretBinary. Each leaves credproxy serving with the last good
credentials and logs one clear message per failure state (not one per attempt), and queries
keep flowing while a request hangs.
"""

import json
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws"))

import harness  # noqa: E402
from aws_fixture import SECRET_NAME, AwsTestCase  # noqa: E402

KEEPING = "keeping the credentials of version"


class Faults(AwsTestCase):

    def proxy(self, *args):
        return self.aws_proxy("--secret-refresh", "300ms", "--aws-timeout", "1s", *args)

    def describes(self):
        return len(self.sm.calls("DescribeSecret"))

    def wait_describes(self, n, timeout=20):
        start = self.describes()
        self.wait_for(lambda: self.describes() >= start + n, timeout, "%d DescribeSecret" % n)

    def assert_recovers(self, p):
        self.sm.faults.clear()
        self.assertTrue(p.wait_log("Secrets Manager read works again", 15), p.log())
        self.assert_serving(p)

    def test_sighup_while_starting_is_applied_once_ready(self):
        """A SIGHUP that arrives while credproxy reads its secret at start-up is neither fatal
        nor lost: the reload runs once credproxy is ready (systemd's ExecReload may be that
        quick; before, it was ignored)."""
        self.sm.fault("hang", 1, op="DescribeSecret")  # the start-up read waits
        p = self.aws_proxy("--aws-timeout", "10s", wait=False)
        self.wait_for(lambda: self.sm.calls("DescribeSecret"), 10, "the start-up read")
        time.sleep(0.2)
        p.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        self.assertIsNone(p.proc.poll(), "a SIGHUP during start-up ended credproxy")
        self.assertNotIn("received SIGHUP", p.log())
        self.sm.release_hang()
        p.wait_ready()
        self.assertTrue(p.wait_log("configuration reloaded", 10), p.log())
        self.assertIn("received SIGHUP: reloading", p.log())
        self.assert_serving(p)

    def test_throttling(self):
        p = self.proxy()
        self.sm.fault("throttle", 12)
        self.assertTrue(p.wait_log("ThrottlingException", 15), p.log())
        self.wait_describes(4)
        self.assert_serving(p)
        line = [ln for ln in p.log().splitlines() if KEEPING in ln]
        self.assertEqual(len(line), 1, line)  # once per state, not per attempt or per read
        self.assertIn("secret '%s': DescribeSecret: ThrottlingException: Rate exceeded"
                      % SECRET_NAME, line[0])
        self.assertIn("retrying in", p.log())  # backoff, at debug level
        self.assert_recovers(p)

    def test_server_errors(self):
        p = self.proxy()
        self.sm.fault("500", 12)
        self.assertTrue(p.wait_log("InternalServiceError", 15), p.log())
        self.wait_describes(4)
        self.assert_serving(p)
        self.assertEqual(p.count(KEEPING), 1)
        self.assertIn("(HTTP 500) (after 3 attempts)", p.log())
        self.assert_recovers(p)

    def test_hanging_endpoint_times_out_and_queries_flow(self):
        p = self.proxy()
        conn = harness.connect(port=p.port)
        self.sm.fault("hang", 6, op="DescribeSecret")
        self.wait_for(lambda: "DescribeSecret" in [c[0] for c in self.sm.calls()[-1:]], 5,
                      "a hanging DescribeSecret")
        # While the request hangs: new logins and queries on an open connection are served
        # without waiting for it.
        for _ in range(10):
            t0 = time.monotonic()
            self.assert_serving(p)
            self.assertEqual(harness.scalar(conn, "SELECT 7"), 7)
            self.assertLess(time.monotonic() - t0, 3.0)  # the hang lasts 6 s: not waited for
        self.assertTrue(p.wait_log("no answer from", 15), p.log())
        self.assertTrue(p.wait_log(KEEPING, 15), p.log())
        self.sm.release_hang()
        conn.close()
        self.assert_recovers(p)

    def test_malformed_json(self):
        p = self.proxy()
        self.sm.fault("malformed", 3, op="DescribeSecret")
        self.assertTrue(p.wait_log("is not a JSON object", 15), p.log())
        self.assert_serving(p)
        self.assertEqual(p.count(KEEPING), 1)
        self.assert_recovers(p)

    def test_non_rds_secret_keeps_the_last_good(self):
        p = self.proxy()
        good = self.secret_vid
        bad = self.sm.put(SECRET_NAME, {"username": "u", "host": "h",
                                        "pasword": self.db_secret["password"]})
        self.assertTrue(p.wait_log("version %s (AWSCURRENT) is not an RDS secret" % bad, 15),
                        p.log())
        self.wait_describes(3)
        self.assert_serving(p)
        self.assertEqual(p.count("is not an RDS secret"), 1)
        self.assertIn("'password'", p.log())
        self.assertIn("%s %s" % (KEEPING, good), p.log())
        fixed = self.sm.put(SECRET_NAME, self.db_secret)
        self.assertTrue(p.wait_log("loaded new credentials (version %s" % fixed, 15), p.log())
        self.assertIn("works again", p.log())

    def test_secret_binary_after_start(self):
        p = self.proxy()
        self.sm.put(SECRET_NAME, json.dumps(self.db_secret).encode(), binary=True)
        self.assertTrue(p.wait_log("SecretBinary", 15), p.log())
        self.assert_serving(p)

    def test_access_denied_after_start(self):
        p = self.proxy()
        self.sm.fault("error", 30, extra="AccessDeniedException")
        self.assertTrue(p.wait_log("AccessDeniedException", 15), p.log())
        self.wait_describes(3)
        self.assertEqual(p.count(KEEPING), 1)  # not retried, logged once
        self.assert_serving(p)
        self.assert_recovers(p)

    def test_changing_failures_are_each_logged(self):
        p = self.proxy()
        self.sm.fault("throttle", 3)
        self.assertTrue(p.wait_log("ThrottlingException: Rate exceeded (HTTP 400) (after 3", 15),
                        p.log())
        self.sm.faults.clear()
        self.sm.fault("error", 30, extra="DecryptionFailure")
        self.assertTrue(p.wait_log("DecryptionFailure", 15), p.log())
        self.wait_describes(2)
        self.assertEqual(p.count(KEEPING), 2)
        self.assert_recovers(p)

    def test_no_secret_in_any_log_line(self):
        """Every test checks its proxies' logs (harness.Proxy.check_log) for the database
        password and the AWS secret key; this one drives every path that logs, at debug."""
        p = self.proxy()
        for kind in ("throttle", "500", "malformed"):
            self.sm.fault(kind, 3)
        self.wait_describes(6)
        self.sm.faults.clear()
        self.sm.put(SECRET_NAME, {"username": "x", "pw": self.db_secret["password"]})
        self.wait_describes(2)
        log = p.log()
        self.assertNotIn(self.db_secret["password"], log)
        for secret in self.secret_values:
            self.assertNotIn(secret, log)


if __name__ == "__main__":
    harness.main()
