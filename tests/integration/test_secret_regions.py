"""secret_regions: a replicated secret read from a replica region while the primary fails.

Two Secrets Manager stand-ins (tests/aws/standins.py) are two regions of one replicated secret:
the same name and VersionIds, each ARN with its own region. Each stand-in refuses a request
signed for another region, so a read that works in the replica proves credproxy signed for the
replica's region. The primary fails in each way that says nothing about the secret (stopped:
connections refused; HTTP 500; ThrottlingException beyond the retries): the replica serves,
clients keep working, the move is logged once, and credproxy goes back to the primary when it
answers again. A replica that is behind is never used to go back to older credentials; a
rotation that reached the replica while the primary is down is picked up from it.
"""

import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws"))

import harness  # noqa: E402
import standins  # noqa: E402
from aws_fixture import REGION, SECRET_NAME, AwsTestCase  # noqa: E402

REPLICA = "eu-central-1"
MOVED = "reading secret '%s' from replica region %s: primary %s failed: " % (
    SECRET_NAME, REPLICA, REGION)
BACK = "secret '%s': primary region %s answers again" % (SECRET_NAME, REGION)
KEEPING = "keeping the credentials of version"


class SecretRegions(AwsTestCase):

    def setUp(self):
        super().setUp()
        self.replica = self.start_standin(standins.SecretsManager, region=REPLICA)
        self.addCleanup(self.replica.release_hang)
        self.replica.replicate_from(self.sm, SECRET_NAME)

    def proxy(self, *args, **kw):
        """credproxy with both regions: the primary through secrets_endpoint, the replica
        through secrets_endpoints; a 1 s refresh and 1 s request limit keep each case short."""
        return self.aws_proxy(
            "--secret-regions", "%s, %s" % (REGION, REPLICA),
            "--secrets-endpoints", "%s=%s" % (REPLICA, self.replica.url),
            "--secret-refresh", "1s", "--aws-timeout", "1s", *args, region=None, **kw)

    def describes(self, sm):
        return len(sm.calls("DescribeSecret"))

    def wait_describes(self, sm, n, timeout=20):
        start = self.describes(sm)
        self.wait_for(lambda: self.describes(sm) >= start + n, timeout,
                      "%d DescribeSecret in %s" % (n, sm.region))

    def assert_signed_for_own_region(self, sm):
        """Every request the stand-in saw was accepted: signed with the key, for its region."""
        calls = sm.calls()
        self.assertTrue(calls)
        rejected = [c for c in calls if c[1] is None]
        self.assertEqual(rejected, [], "requests refused by %s" % sm.region)

    def assert_clients_work(self, p, conn, user=None):
        self.assertEqual(harness.scalar(conn, "SELECT 41 + 1"), 42)
        self.assert_serving(p, user)

    def fail_over_and_back(self, p, fail, recover, why, answers=True):
        """fail() breaks the primary; the replica must serve until recover() mends it."""
        conn = harness.connect(port=p.port)
        self.addCleanup(conn.close)
        self.assertEqual(self.describes(self.replica), 0)  # a healthy primary: replica unused
        fail()
        self.assertTrue(p.wait_log(MOVED, 20), p.log())
        line = [ln for ln in p.log().splitlines() if MOVED in ln]
        self.assertIn(why, line[0])
        self.assert_clients_work(p, conn)
        # More reads from the replica; the move is still logged once, and nothing is kept
        # as a failure (the replica's reads succeed). Each read still asks the primary first,
        # but once, not with retries that would add to its trouble.
        primary0, replica0 = self.describes(self.sm), self.describes(self.replica)
        self.wait_describes(self.replica, 3)
        asked = self.describes(self.sm) - primary0
        self.assertGreaterEqual(asked, 2 if answers else 0)  # a stopped one counts nothing
        self.assertLessEqual(asked, self.describes(self.replica) - replica0 + 1)
        self.assert_clients_work(p, conn)
        self.assertEqual(p.count(MOVED), 1)
        self.assertEqual(p.count(KEEPING), 0)
        self.assert_signed_for_own_region(self.replica)
        recover()
        self.assertTrue(p.wait_log(BACK, 20), p.log())
        seen = self.describes(self.replica)
        self.wait_describes(self.sm, 2)
        self.assertEqual(self.describes(self.replica), seen)  # back on the primary only
        self.assertEqual(p.count(BACK), 1)
        self.assertEqual(p.count(MOVED), 1)
        self.assert_clients_work(p, conn)
        return line[0]

    def test_primary_stopped(self):
        p = self.proxy()
        port = self.sm.port
        box = {}

        def restart():
            sm = standins.SecretsManager(self.keyring, region=REGION, port=port).start()
            self.addCleanup(sm.stop)
            sm.replicate_from(self.replica, SECRET_NAME)
            box["sm"] = self.sm = sm

        line = self.fail_over_and_back(p, self.sm.stop, restart, "DescribeSecret: cannot reach",
                                       answers=False)
        self.assertIn("127.0.0.1:%d" % port, line)
        self.assert_signed_for_own_region(box["sm"])

    def test_primary_server_errors(self):
        p = self.proxy()
        line = self.fail_over_and_back(p, lambda: self.sm.fault("500", 10000),
                                       self.sm.faults.clear, "InternalServiceError")
        self.assertIn("(HTTP 500) (after 3 attempts)", line)

    def test_primary_throttles_beyond_the_retries(self):
        p = self.proxy()
        before = self.describes(self.sm)
        line = self.fail_over_and_back(p, lambda: self.sm.fault("throttle", 10000),
                                       self.sm.faults.clear, "ThrottlingException: Rate exceeded")
        self.assertIn("(HTTP 400) (after 3 attempts)", line)
        # The first failing read retried the primary (3 requests, with backoff).
        self.assertGreaterEqual(len(self.sm.calls("DescribeSecret")[before:]), 3)
        self.assertIn("retrying in", p.log())

    def test_primary_down_at_start(self):
        self.sm.stop()
        p = self.proxy()
        self.assert_serving(p)
        self.assertEqual(p.count(MOVED), 1, p.log())
        self.assertIn("loaded credentials (version %s" % self.secret_vid, p.log())

    def test_answer_from_the_primary_is_not_overruled(self):
        """AccessDenied is an answer about the secret, not an outage: no replica read."""
        p = self.proxy()
        self.sm.fault("error", 10000, extra="AccessDeniedException")
        self.assertTrue(p.wait_log(KEEPING, 15), p.log())
        self.wait_describes(self.sm, 2)
        self.assertEqual(self.describes(self.replica), 0)
        self.assertNotIn(MOVED, p.log())
        self.assert_serving(p)
        self.sm.faults.clear()

    # -- versions ---------------------------------------------------------------------------

    def rotating_user(self):
        """A database user of its own whose secret both regions hold as version 1."""
        first = self.make_db_user("regions_rot", "v1-" + secrets.token_hex(8))
        v1 = self.sm.put(SECRET_NAME, first)
        self.replica.replicate_from(self.sm, SECRET_NAME)
        return first, v1

    def rotate_db(self, secret):
        new = dict(secret, password="v2-" + secrets.token_hex(8))
        self.secret_values.add(new["password"])
        for p in self.proxies:
            p.passwords.add(new["password"])
        self.fixture.root_sql("ALTER USER 'regions_rot'@'127.0.0.1' IDENTIFIED BY '%s';"
                              "ALTER USER 'regions_rot'@'localhost' IDENTIFIED BY '%s';"
                              % (new["password"], new["password"]))
        return new

    def test_replica_behind_is_never_used_to_go_back(self):
        first, v1 = self.rotating_user()
        p = self.proxy()
        self.assert_serving(p, "regions_rot")
        new = self.rotate_db(first)
        v2 = self.sm.put(SECRET_NAME, new)  # the replica does not get it: it stays behind
        self.assertTrue(p.wait_log("loaded new credentials (version %s" % v2, 15), p.log())
        self.sm.fault("500", 10000)
        behind = "its AWSCURRENT is version %s, older than version %s" % (v1, v2)
        self.assertTrue(p.wait_log(behind, 20), p.log())
        self.wait_describes(self.replica, 3)
        log = p.log()
        self.assertEqual(log.count(behind), 1, log)  # one failure state, logged once
        self.assertNotIn("credentials (version %s" % v1, log.split(v2, 1)[1])
        self.assertNotIn(MOVED, log)
        self.assert_serving(p, "regions_rot")  # still the new password, which alone works

    def test_replica_mid_rotation_is_behind(self):
        """The replica has the version in use only as AWSPENDING: its AWSCURRENT is older."""
        first, v1 = self.rotating_user()
        new = self.rotate_db(first)
        v2 = self.sm.put(SECRET_NAME, new, stages=("AWSPENDING",))
        self.replica.replicate_from(self.sm, SECRET_NAME)  # the replica sees the rotation start
        self.sm.set_stage(SECRET_NAME, "AWSCURRENT", v2)  # ... and not its end
        self.sm.remove_stage(SECRET_NAME, "AWSPENDING")
        self.sm.remove_stage(SECRET_NAME, "AWSPREVIOUS")  # only the replica's stages tell
        p = self.proxy()
        self.assert_serving(p, "regions_rot")
        self.assertIn("loaded credentials (version %s" % v2, p.log())
        self.sm.fault("500", 10000)
        self.assertTrue(p.wait_log("its AWSCURRENT is version %s, older than version %s"
                                   % (v1, v2), 20), p.log())
        self.wait_describes(self.replica, 2)
        self.assertNotIn("credentials (version %s" % v1, p.log())
        self.assert_serving(p, "regions_rot")

    def test_rotation_seen_through_the_replica_while_the_primary_is_down(self):
        first, v1 = self.rotating_user()
        p = self.proxy()
        conn = harness.connect(port=p.port)
        self.addCleanup(conn.close)
        self.sm.fault("500", 10000)
        self.assertTrue(p.wait_log(MOVED, 20), p.log())
        # The rotation happens in the primary region and replicates; credproxy can read only
        # the replica.
        new = self.rotate_db(first)
        v2 = self.sm.put(SECRET_NAME, new)
        self.replica.replicate_from(self.sm, SECRET_NAME)
        self.assertTrue(p.wait_log("loaded new credentials (version %s" % v2, 15), p.log())
        self.assert_clients_work(p, conn, "regions_rot")
        gets = len(self.sm.calls("GetSecretValue"))
        self.sm.faults.clear()
        self.assertTrue(p.wait_log(BACK, 20), p.log())
        self.wait_describes(self.sm, 2)
        # The primary shows the version already loaded: nothing fetched again, nothing reloaded.
        self.assertEqual(len(self.sm.calls("GetSecretValue")), gets)
        self.assertEqual(p.count("loaded new credentials (version %s" % v2), 1)
        self.assert_serving(p, "regions_rot")


class SecretRegionsConfig(AwsTestCase):

    def test_config_file_errors_name_file_line_and_key(self):
        conf = self.workdir / "regions.conf"
        conf.write_text("secret_id = %s\nregion = %s\nsecret_regions = %s, %s\n"
                        % (SECRET_NAME, REPLICA, REGION, REPLICA))
        log = self.expect_start_failure("--config", str(conf), region=None, endpoint=False)
        self.assertIn("%s:2: key 'region': '%s' is not the first (primary) region of "
                      "secret_regions" % (conf, REPLICA), log)

    def test_replica_arn_is_asked_in_its_own_region(self):
        """With an ARN as secret_id, each region is asked for the ARN naming that region."""
        replica = self.start_standin(standins.SecretsManager, region=REPLICA)
        replica.replicate_from(self.sm, SECRET_NAME)
        arn = self.sm.secrets[SECRET_NAME]["arn"]
        self.sm.stop()
        p = self.aws_proxy("--secret-regions", "%s,%s" % (REGION, REPLICA),
                           "--secrets-endpoints", "%s=%s" % (REPLICA, replica.url),
                           "--aws-timeout", "1s", secret_id=arn, region=None)
        self.assert_serving(p)
        asked = replica.calls("DescribeSecret")[0][2]["SecretId"]
        self.assertEqual(asked, replica.secrets[SECRET_NAME]["arn"])
        self.assertEqual(asked.split(":")[3], REPLICA)


if __name__ == "__main__":
    harness.main()
